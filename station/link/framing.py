"""Frames on the wire: COBS(seq type payload crc16) 0x00 (PROTOCOL.md, "Frame").

`FrameReader` turns an arbitrary byte stream into decoded messages and
counted errors; garbage costs at most the frame it is in.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from cobs import cobs

from station.link.messages import MAX_PAYLOAD, REGISTRY, Message

MAX_BODY = 2 + MAX_PAYLOAD + 2
MAX_WIRE = MAX_BODY + 2  # one COBS overhead byte + the 0x00 delimiter


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    return binascii.crc_hqx(data, 0xFFFF)


class FrameError(ValueError):
    """A frame that must not act. `kind` is one of the names in PROTOCOL.md."""

    def __init__(self, kind: str, detail: str, seq: int | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.seq = seq
        """Set when the frame's CRC was good, so its seq can be trusted for a NAK."""


@dataclass(frozen=True)
class Frame:
    seq: int
    message: Message


def encode_frame(seq: int, msg: Message) -> bytes:
    body = bytes((seq, msg.TYPE)) + msg.payload()
    body += crc16(body).to_bytes(2, "big")
    return cobs.encode(body) + b"\x00"


def decode_frame(encoded: bytes) -> Frame:
    """Decode one frame without its 0x00 delimiter, or raise FrameError."""
    if len(encoded) > MAX_WIRE - 1:
        raise FrameError(
            "oversized", f"{len(encoded)} bytes before the delimiter, at most {MAX_WIRE - 1}"
        )
    try:
        body = cobs.decode(encoded)
    except cobs.DecodeError as exc:
        raise FrameError("cobs", f"bad COBS stuffing ({exc}) in {encoded.hex()}") from None
    if len(body) < 4:
        raise FrameError("short", f"{len(body)}-byte body {body.hex()}, at least 4 needed")
    crc = int.from_bytes(body[-2:], "big")
    if crc16(body[:-2]) != crc:
        raise FrameError(
            "crc", f"CRC {crc:04x} != computed {crc16(body[:-2]):04x} in body {body.hex()}"
        )
    seq, type_code, payload = body[0], body[1], body[2:-2]
    cls = REGISTRY.get(type_code)
    if cls is None:
        raise FrameError("unknown_type", f"type 0x{type_code:02x}", seq)
    if len(payload) != cls.STRUCT.size:
        raise FrameError(
            "bad_length",
            f"{cls.__name__} payload of {len(payload)} bytes, expected {cls.STRUCT.size}",
            seq,
        )
    return Frame(seq, cls(*cls.STRUCT.unpack(payload)))


class FrameReader:
    """Splits a byte stream on 0x00 and decodes each frame; errors are returned, not raised."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        start = 0
        while start < len(data):
            end = data.find(0, start)
            chunk = data[start:] if end < 0 else data[start:end]
            start = len(data) if end < 0 else end + 1
            if not self._discarding:
                room = MAX_WIRE - 1 - len(self._buffer)
                if len(chunk) > room:
                    out.append(FrameError("oversized", f"no delimiter within {MAX_WIRE} bytes"))
                    self._buffer.clear()
                    self._discarding = True
                else:
                    self._buffer += chunk
            if end < 0:
                break
            # a delimiter: the frame (if any) ends here; a discarded one is over
            if self._discarding:
                self._discarding = False
            elif self._buffer:
                out.append(self._decode(bytes(self._buffer)))
            self._buffer.clear()
        return out

    @staticmethod
    def _decode(encoded: bytes) -> Frame | FrameError:
        try:
            return decode_frame(encoded)
        except FrameError as exc:
            return exc
