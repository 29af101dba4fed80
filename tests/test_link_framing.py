"""Framing and messages against the shared vectors (firmware/arduino_mega/protocol_vectors.json)."""

import json
from dataclasses import asdict

import pytest
from conftest import REPO

from station.link import messages as m
from station.link.framing import FrameError, FrameReader, crc16, decode_frame, encode_frame

VECTORS = json.loads((REPO / "firmware/arduino_mega/protocol_vectors.json").read_text())


def _fields(msg: m.Message) -> dict:
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in asdict(msg).items()}


def test_crc_is_ccitt_false():
    assert crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vector_decodes_to_its_meaning_and_back(vector):
    wire = bytes.fromhex(vector["hex"])
    assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
    frame = decode_frame(wire[:-1])
    assert frame.seq == vector["seq"]
    assert frame.message.TYPE == vector["type"]
    assert type(frame.message).__name__ == vector["message"]
    assert _fields(frame.message) == vector["fields"]
    assert encode_frame(frame.seq, frame.message) == wire


@pytest.mark.parametrize("vector", VECTORS["corrupt"], ids=lambda v: v["name"])
def test_corrupt_vector_gives_its_error(vector):
    wire = bytes.fromhex(vector["hex"])
    with pytest.raises(FrameError) as info:
        decode_frame(wire[:-1])
    assert info.value.kind == vector["error"]
    assert info.value.seq == vector.get("seq")


def test_every_message_type_has_a_vector():
    assert {v["type"] for v in VECTORS["valid"]} == set(m.REGISTRY)


def test_frames_fit_the_megas_receive_buffer():
    for cls in m.REGISTRY.values():
        biggest = cls(*([0] * len(cls.STRUCT.unpack(bytes(cls.STRUCT.size)))))
        if cls is m.Identify:
            biggest = m.Identify(255, b"\xff" * 8, 255, 255, 255, 255, 2**32 - 1, 255, 255)
        assert len(encode_frame(255, biggest)) <= 38 < 64


def test_reader_resynchronises_after_garbage_and_split_reads():
    good = [bytes.fromhex(v["hex"]) for v in VECTORS["valid"][:5]]
    stream = b"\x13\x37garbage\x00" + good[0] + b"\xff" * 50 + b"\x00" + b"".join(good[1:])
    reader = FrameReader()
    out = []
    for i in range(0, len(stream), 3):  # bytes arrive in dribs and drabs
        out += reader.feed(stream[i : i + 3])
    frames = [o for o in out if not isinstance(o, FrameError)]
    errors = [o.kind for o in out if isinstance(o, FrameError)]
    assert [f.message.TYPE for f in frames] == [v["type"] for v in VECTORS["valid"][:5]]
    assert errors == ["cobs", "oversized"]
