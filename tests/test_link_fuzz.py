"""Fuzzing both decoders: never a crash, never an actuation from a corrupted frame.

The host's FrameReader and the simulated Mega (MegaCore.receive) get random
bytes, truncated frames, bit flips, and reordered/duplicated frames.
`FUZZ_EXAMPLES` sets how many cases each property runs (CI default 300).
"""

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from station.link import messages as m
from station.link.framing import Frame, FrameError, FrameReader, encode_frame
from station.sim.mega_core import MegaCore

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CONFIG = m.Configure(1, 200, 20, 1000, 2000, 50, 10_000, 7)


def configured_mega(pending_parts: int = 2) -> MegaCore:
    """A Mega after a good handshake, with parts waiting for verdicts."""
    core = MegaCore(0)
    core.receive(encode_frame(1, m.Hello(1)) + encode_frame(2, CONFIG), 0)
    assert core.configured
    for _ in range(pending_parts):
        core.photo_eye(1)
    core.take_output()
    return core


def run_until_gate(core: MegaCore) -> None:
    for t in range(2, 400):
        core.tick(t)


@fuzz
@given(st.binary(max_size=400))
def test_host_reader_survives_random_bytes(data):
    for item in FrameReader().feed(data):
        assert isinstance(item, (Frame, FrameError))


@fuzz
@given(st.binary(max_size=400))
def test_mega_never_acts_on_random_bytes(data):
    core = MegaCore(0)
    core.receive(data, 0)
    core.receive(b"\x00", 0)
    for t in range(0, 300, 10):
        core.tick(t)
    assert core.servo_log == [], "random bytes moved the servo"
    assert not core.test_fires_left


@fuzz
@given(st.integers(0, 10 * 8 - 1), st.integers(1, 3))
def test_bit_flips_in_a_pass_verdict_never_change_the_outcome(bit, flips):
    """A pass verdict with flipped bits must be dropped (then the part is fail-safe rejected)
    or arrive intact; it must never turn into a verdict for another part."""
    core = configured_mega()
    wire = bytearray(encode_frame(3, m.Verdict(1, 0)))
    rng = random.Random(bit * 7 + flips)
    for k in range(flips):
        position = (bit + k * rng.randrange(1, 17)) % ((len(wire) - 1) * 8)
        wire[position // 8] ^= 1 << (position % 8)
    core.receive(bytes(wire), 1)
    run_until_gate(core)
    fired = {g.part_id for g in _gates(core) if g.action == m.GateAction.FIRED}
    assert 2 in fired, "part 2 had no verdict and must be fail-safe rejected"
    assert core.counters.parts == 2 and core.counters.fired + core.counters.passed == 2


@fuzz
@given(st.integers(1, 37))
def test_truncated_test_fire_never_fires(cut):
    core = configured_mega(0)
    wire = encode_frame(3, m.TestFire(3, 0))
    core.receive(wire[: min(cut, len(wire) - 2)] + b"\x00", 1)  # at least one byte short
    run_until_gate(core)
    assert core.servo_log == []


@fuzz
@given(
    st.lists(st.sampled_from(["verdict1", "verdict2", "dup", "status"]), min_size=1, max_size=12),
    st.randoms(),
)
def test_reordered_and_duplicated_frames_fire_each_part_at_most_once(script, rnd):
    core = configured_mega()
    frames = {
        "verdict1": encode_frame(3, m.Verdict(1, 1)),
        "verdict2": encode_frame(4, m.Verdict(2, 1)),
        "status": encode_frame(5, m.GetStatus()),
    }
    sent = []
    for step in script:
        wire = rnd.choice(sent) if step == "dup" and sent else frames.get(step, frames["status"])
        sent.append(wire)
        core.receive(wire, 1)
    run_until_gate(core)
    gates = _gates(core)
    assert sorted(g.part_id for g in gates) == [1, 2], "each part gated exactly once"
    assert len(core.servo_log) <= 2


@fuzz
@given(st.integers(39, 300))
def test_oversized_frames_are_dropped(size):
    core = configured_mega(0)
    reader_errors = [
        i for i in FrameReader().feed(b"\x01" * size + b"\x00") if isinstance(i, FrameError)
    ]
    assert [e.kind for e in reader_errors] == ["oversized"]
    core.receive(b"\x05" * size + b"\x00", 1)
    assert core.counters.frame_errors == 1
    run_until_gate(core)
    assert core.servo_log == []


def _gates(core: MegaCore) -> list[m.Gate]:
    """Every GATE event the Mega queued (sent or waiting), decoded back from the wire."""
    out = []
    for event in core._events:
        for item in FrameReader().feed(event.wire):
            if isinstance(item, Frame) and isinstance(item.message, m.Gate):
                out.append(item.message)
    return out
