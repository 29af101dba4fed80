"""The firmware's C core and its Python twin, driven with the same random inputs, step by step.

Each step is one input to both cores: time passing (then a tick), a beam
break, encoder counts, a host command (new or retransmitted sequence
number), a garbled or truncated frame, an event acknowledgement. After every
step both must have sent the same bytes, put the servo at the same width and
hold the same state (fault, FIFO depth, counters, queued events, test fires,
next part ID). Hypothesis searches and shrinks; a plain seeded loop runs
10^4 sequences per CI run. A failure names the sequence and the step.

The C core is station_core.c built for this machine (tests/c_core.py): a
missing gcc is a failure here, not a skip (tools/setup installs it).
Times stay below 2^31 ms: the Python twin does not model the 49.7-day wrap
of millis(), which the C core handles with signed differences.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from c_core import CMegaCore, state_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from station.link import messages as m
from station.link.framing import Frame, FrameReader, encode_frame
from station.sim.mega_core import MegaCore


@dataclass(frozen=True)
class Step:
    kind: str
    """tick, eye, eye_lost, encoder, send, resend, ack_head, ack_seq, raw"""
    value: object = None


def _configure(rng_or_draw) -> m.Configure:
    r = rng_or_draw
    mode = r.choice(
        [m.TimingMode.MILLISECONDS, m.TimingMode.MILLISECONDS, m.TimingMode.ENCODER_COUNTS]
    )
    offset = r.choice([r.randint(20, 1500), r.randint(0, 70_000)])
    return m.Configure(
        mode=mode,
        gate_offset=offset,
        decision_lead=r.choice([r.randint(0, max(0, offset - 1)), r.randint(0, 65535)]) & 0xFFFF,
        servo_rest_us=r.choice([1000, r.randint(0, 3000)]),
        servo_reject_us=r.choice([2000, r.randint(0, 3000)]),
        reject_pulse_ms=r.choice([r.randint(20, 300), r.randint(0, 1200)]),
        heartbeat_timeout_ms=r.choice([r.randint(100, 2000), r.randint(0, 12000)]),
        calibration_crc=r.getrandbits(32),
    )


def _command(r: random.Random) -> m.Message:
    kind = r.randrange(9)
    if kind == 0:
        return m.Hello(m.PROTOCOL_VERSION)
    if kind == 1:
        return _configure(r)
    if kind in (2, 3):
        return m.Verdict(r.randint(0, 24), r.choice([0, 1, 1, 2]))
    if kind == 4:
        return m.VisionReject(r.randint(0, 30), r.randint(0, 1500))
    if kind == 5:
        return m.TestFire(r.randint(0, 11), r.choice([0, 0, 400, 1500, 2600]))
    if kind == 6:
        return m.GetStatus()
    if kind == 7:
        return m.ResetFault()
    return m.HostHeartbeat(r.getrandbits(32))


def _raw(r: random.Random) -> bytes:
    """Bytes a noisy cable delivers: a damaged valid frame, noise, an unknown type, a bad length."""
    frame = bytearray(encode_frame(r.randint(1, 255), _command(r)))
    kind = r.randrange(5)
    if kind == 0:
        i = r.randrange(len(frame) - 1)
        frame[i] = (frame[i] ^ (1 << r.randrange(8))) or 1
        return bytes(frame)
    if kind == 1:
        return bytes(frame[: r.randrange(1, len(frame))])  # cut short; the next frame ends it
    if kind == 2:
        return bytes(r.getrandbits(8) for _ in range(r.randint(1, 50)))
    if kind == 3:
        return _frame_bytes(r.randint(1, 255), r.choice([0x0A, 0x42, 0x7F, 0x84]), b"\x01\x02")
    good = m.Verdict(1, 1)
    return _frame_bytes(r.randint(1, 255), good.TYPE, good.payload()[: r.randrange(5)])


def _frame_bytes(seq: int, type_code: int, payload: bytes) -> bytes:
    """A well-formed frame (COBS, CRC) of any type and payload, valid or not for the protocol."""
    from cobs import cobs

    from station.link.framing import crc16

    body = bytes([seq, type_code]) + payload
    return cobs.encode(body + crc16(body).to_bytes(2, "big")) + b"\x00"


def random_step(r: random.Random) -> Step:
    kind = r.choices(
        ["tick", "eye", "eye_lost", "encoder", "send", "resend", "ack_head", "ack_seq", "raw"],
        weights=[30, 8, 1, 4, 25, 5, 15, 2, 6],
    )[0]
    if kind == "tick":
        return Step(kind, r.choice([1, r.randint(0, 30), r.randint(0, 400), r.randint(0, 3000)]))
    if kind == "encoder":
        return Step(kind, r.randint(0, 600))
    if kind == "eye_lost":
        return Step(kind, r.randint(1, 255))
    if kind == "send":
        return Step(kind, _command(r))
    if kind == "ack_seq":
        return Step(kind, r.randint(0, 255))
    if kind == "raw":
        return Step(kind, _raw(r))
    return Step(kind)


class Twins:
    """The two cores side by side, and a host's view of what they sent."""

    def __init__(self, start_ms: int):
        self.now = start_ms
        self.python = MegaCore(start_ms)
        self.c = CMegaCore(start_ms)
        self.seq = 0
        self.last_sent = b""
        self.unacked: list[int] = []  # reliable event seqs, oldest first
        self.reader = FrameReader()
        self.compare("boot")

    def apply(self, step: Step) -> None:
        if step.kind == "tick":
            self.now += step.value
            for core in (self.python, self.c):
                core.tick(self.now)
        elif step.kind == "eye":
            assert self.python.photo_eye(self.now) == self.c.photo_eye(self.now), "part IDs differ"
        elif step.kind == "eye_lost":
            for core in (self.python, self.c):
                core.photo_eye_lost(step.value, self.now)
        elif step.kind == "encoder":
            self.python.encoder += step.value
            self.c.encoder += step.value
        elif step.kind == "send":
            self.seq = self.seq % 255 + 1
            self.last_sent = encode_frame(self.seq, step.value)
            self._feed(self.last_sent)
        elif step.kind == "resend":
            self._feed(self.last_sent)
        elif step.kind == "ack_head" and self.unacked:
            self._feed(encode_frame(0, m.AckEvent(self.unacked[0])))
        elif step.kind == "ack_seq":
            self._feed(encode_frame(0, m.AckEvent(step.value)))
        elif step.kind == "raw":
            self._feed(step.value)
        self.compare(step)

    def _feed(self, data: bytes) -> None:
        for core in (self.python, self.c):
            core.receive(data, self.now)

    def compare(self, step) -> None:
        out_py, out_c = self.python.take_output(), self.c.take_output()
        assert out_py == out_c, (
            f"after {step}: sent bytes differ\n py {out_py.hex()}\n  c {out_c.hex()}"
        )
        assert self.python.servo_us == self.c.servo_us, f"after {step}: servo width differs"
        assert state_of(self.python) == self.c.state(), f"after {step}: state differs"
        for item in self.reader.feed(out_py):
            if isinstance(item, Frame) and item.message.RELIABLE and not item.message.FROM_HOST:
                if item.seq in self.unacked:
                    self.unacked.remove(item.seq)  # a retransmission: keep its place once
                self.unacked.append(item.seq)
        # What the Mega forgets on its own (ACKed, dropped on overflow) leaves the host's view
        self.unacked = self.unacked[-max(1, self.python.queued_events) :]


def run_twins(steps: list[Step], start_ms: int = 1000) -> None:
    twins = Twins(start_ms)
    for i, step in enumerate(steps):
        try:
            twins.apply(step)
        except AssertionError as exc:
            raise AssertionError(f"step {i} of {len(steps)}: {exc}") from None


SEQUENCES = 10_000
STEPS = 40


def test_ten_thousand_random_sequences_agree_step_by_step():
    """Seeded, so a failure is reproduced by its sequence number alone."""
    for n in range(SEQUENCES):
        r = random.Random(n)
        steps = [Step("send", m.Hello(m.PROTOCOL_VERSION))] if r.random() < 0.8 else []
        steps += [random_step(r) for _ in range(STEPS)]
        try:
            run_twins(steps, start_ms=r.randint(0, 2**31 - 10**6))
        except AssertionError as exc:
            pytest.fail(f"sequence {n} (random.Random({n})): {exc}\nsteps: {steps}")


@st.composite
def steps(draw) -> Step:
    return random_step(random.Random(draw(st.integers(0, 2**32 - 1))))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(steps(), max_size=60),
    st.booleans(),
)
def test_hypothesis_finds_no_difference(sequence, hello_first):
    prefix = [Step("send", m.Hello(m.PROTOCOL_VERSION))] if hello_first else []
    run_twins(prefix + sequence)


def test_a_difference_is_caught(monkeypatch):
    """The comparison is not vacuous: a twin that answers one byte differently is named."""
    original = MegaCore.take_output

    def tampered(self):
        out = original(self)
        return out[:-2] + b"\x55\x00" if len(out) > 2 else out

    monkeypatch.setattr(MegaCore, "take_output", tampered)
    with pytest.raises(AssertionError, match="sent bytes differ"):
        run_twins([Step("send", m.Hello(m.PROTOCOL_VERSION)), Step("tick", 300)])


def _replies(out: bytes) -> list[m.Message]:
    return [f.message for f in FrameReader().feed(out) if isinstance(f, Frame)]


@pytest.mark.parametrize("make_core", [MegaCore, CMegaCore], ids=["python", "c"])
def test_an_error_ack_does_not_replace_the_cached_reply(make_core):
    """A command, then a frame of bad length, then the command again (its ACK was lost):
    the retransmission gets the command's own ACK, not the error under another seq."""
    core = make_core(0)
    core.receive(encode_frame(1, m.Hello(m.PROTOCOL_VERSION)), 1)
    core.receive(encode_frame(2, m.ResetFault()), 2)
    core.take_output()
    core.receive(_frame_bytes(3, m.Verdict.TYPE, b"\x01"), 3)
    assert _replies(core.take_output()) == [m.Ack(3, m.Error.BAD_LENGTH)]
    core.receive(encode_frame(2, m.ResetFault()), 4)
    assert _replies(core.take_output()) == [m.Ack(2, m.Error.OK)]


@pytest.mark.parametrize("make_core", [MegaCore, CMegaCore], ids=["python", "c"])
def test_a_new_test_fire_replaces_the_pulses_left(make_core):
    """PROTOCOL.md, TEST_FIRE: one rule on both sides, the newest command wins: of 3
    asked, 1 is given at once; a TEST_FIRE of 2 then replaces the 2 left (appending
    would give 5 in all)."""
    core = make_core(0)
    core.receive(encode_frame(1, m.Hello(m.PROTOCOL_VERSION)), 0)
    core.receive(encode_frame(2, _configure_for_test()), 0)
    core.receive(encode_frame(3, m.TestFire(3, 0)), 0)
    fires = 0
    for now in range(0, 5000):
        if now == 1:
            core.receive(encode_frame(4, m.TestFire(2, 0)), now)
        before = core.servo_us
        core.tick(now)
        fires += before == 1000 and core.servo_us == 2000
        core.take_output()
    assert fires == 3


def _configure_for_test() -> m.Configure:
    return m.Configure(m.TimingMode.MILLISECONDS, 300, 50, 1000, 2000, 80, 10_000, 0)


@pytest.mark.parametrize("make_core", [MegaCore, CMegaCore], ids=["python", "c"])
def test_beam_breaks_the_board_could_not_latch_are_reported(make_core):
    """A full trigger ring on the board used to drop a part silently; now the core
    latches PHOTO_EYE_OVERFLOW with the count, for the host to alarm."""
    core = make_core(0)
    core.receive(encode_frame(1, m.Hello(m.PROTOCOL_VERSION)), 0)
    core.take_output()
    core.photo_eye_lost(3, 5)
    core.tick(5)
    sent = _replies(core.take_output())
    assert m.FaultEvent(m.Fault.PHOTO_EYE_OVERFLOW, 3) in sent
