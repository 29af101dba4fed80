"""Write firmware/arduino_mega/protocol_vectors.json: frames with meanings, bad frames with errors.

Run once when the protocol changes, review the diff, commit. Both the Python
tests and the firmware's C tests read the committed file; nothing
regenerates it at test time, so a codec change that alters the bytes fails.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from cobs import cobs

from station.link import messages as m
from station.link.framing import crc16, encode_frame

OUT = Path(__file__).resolve().parent.parent / "firmware" / "arduino_mega" / "protocol_vectors.json"

VALID = [
    ("hello", 1, m.Hello(1)),
    ("configure ms mode", 2, m.Configure(1, 1500, 100, 1000, 2000, 150, 1000, 0xDEADBEEF)),
    ("configure encoder mode", 3, m.Configure(0, 12000, 400, 1100, 1900, 200, 750, 0x01020304)),
    ("verdict reject", 4, m.Verdict(42, 1)),
    ("verdict pass, id with zero bytes", 5, m.Verdict(0x01000000, 0)),
    ("vision reject", 6, m.VisionReject(0x80000007, 250)),
    ("test fire", 7, m.TestFire(3, 0)),
    ("get status", 8, m.GetStatus()),
    ("reset fault", 9, m.ResetFault()),
    ("host heartbeat", 0, m.HostHeartbeat(123456)),
    ("ack event", 0, m.AckEvent(17)),
    ("ack ok", 0, m.Ack(4, 0)),
    ("ack late", 0, m.Ack(5, m.Error.LATE)),
    ("identify", 0, m.Identify(1, b"REJECTST", 1, 0, 0, 1, 0xDEADBEEF, 1, 1)),
    ("status", 0, m.Status(8, 60000, 1234, 10, 4, 6, 1, 2, 3, 0)),
    ("part", 1, m.Part(1, 5000, 70000)),
    ("gate fired no verdict", 2, m.Gate(1, 1, m.GateReason.NO_VERDICT, 71500)),
    ("gate passed", 255, m.Gate(2, 0, m.GateReason.VERDICT, 72000)),
    ("fault heartbeat lost", 3, m.FaultEvent(m.Fault.HEARTBEAT_LOST, 1001)),
    ("mega heartbeat", 0, m.MegaHeartbeat(250, 0, 2)),
]


def _meaning(seq: int, msg: m.Message) -> dict:
    fields = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in asdict(msg).items()}
    return {"seq": seq, "type": msg.TYPE, "message": type(msg).__name__, "fields": fields}


def _frame_from_body(body: bytes) -> bytes:
    return cobs.encode(body) + b"\x00"


def _body(seq: int, type_code: int, payload: bytes) -> bytes:
    body = bytes((seq, type_code)) + payload
    return body + crc16(body).to_bytes(2, "big")


def corrupt_vectors() -> list[dict]:
    good = encode_frame(4, m.Verdict(42, 1))
    flipped = bytearray(good)
    flipped[3] ^= 0x10
    return [
        {"name": "bit flip in payload", "hex": bytes(flipped).hex(), "error": "crc"},
        {
            "name": "crc bytes swapped",
            "hex": _frame_from_body(
                _body(4, 3, (42).to_bytes(4, "little") + b"\x01")[:-2]
                + _body(4, 3, (42).to_bytes(4, "little") + b"\x01")[-2:][::-1]
            ).hex(),
            "error": "crc",
        },
        {
            "name": "truncated frame (valid COBS prefix, so the CRC fails)",
            "hex": good[:5].hex() + "00",
            "error": "crc",
        },
        {
            "name": "body shorter than seq+type+crc",
            "hex": _frame_from_body(b"\x01\x02\x03").hex(),
            "error": "short",
        },
        {
            "name": "unknown type 0x7e",
            "hex": _frame_from_body(_body(9, 0x7E, b"")).hex(),
            "error": "unknown_type",
            "seq": 9,
        },
        {
            "name": "verdict payload one byte short",
            "hex": _frame_from_body(_body(10, 3, (42).to_bytes(4, "little"))).hex(),
            "error": "bad_length",
            "seq": 10,
        },
        {
            "name": "oversized: 40 bytes before the delimiter",
            "hex": ("01" * 40) + "00",
            "error": "oversized",
        },
        {"name": "COBS code pointing past the end", "hex": "0a01020300", "error": "cobs"},
    ]


def main() -> None:
    vectors = {
        "protocol": m.PROTOCOL_VERSION,
        "crc": "CRC-16/CCITT-FALSE over seq, type, payload; big-endian after the payload",
        "framing": "COBS, 0x00 delimiter; hex includes the delimiter",
        "valid": [
            {"name": name, "hex": encode_frame(seq, msg).hex(), **_meaning(seq, msg)}
            for name, seq, msg in VALID
        ],
        "corrupt": corrupt_vectors(),
    }
    OUT.write_text(json.dumps(vectors, indent=2) + "\n")
    print(f"wrote {OUT}: {len(vectors['valid'])} valid, {len(vectors['corrupt'])} corrupt")


if __name__ == "__main__":
    main()
