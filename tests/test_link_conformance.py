"""The link through a real pty, against every Mega target (PROTOCOL.md, "What each side does")."""

from __future__ import annotations

import queue
import time

import pytest
from mega_targets import (
    CCoreTarget,
    FirmwareMegaTarget,
    PythonMegaTarget,
    RawHost,
    build_firmware,
)

from station.link import messages as m
from station.link.framing import Frame, FrameReader
from station.link.session import HandshakeError, LinkError, LinkState, MegaEvent, MegaSession

GATE_OFFSET_MS = 300
DECISION_LEAD_MS = 50
PULSE_MS = 80
CONFIG = m.Configure(
    mode=m.TimingMode.MILLISECONDS,
    gate_offset=GATE_OFFSET_MS,
    decision_lead=DECISION_LEAD_MS,
    servo_rest_us=1000,
    servo_reject_us=2000,
    reject_pulse_ms=PULSE_MS,
    heartbeat_timeout_ms=500,
    calibration_crc=0x5EED1234,
)

TARGETS = {
    "python-sim": PythonMegaTarget,
    "c-core": CCoreTarget,
    "firmware-simavr": FirmwareMegaTarget,
}


@pytest.fixture(scope="session")
def firmware_built():
    """Build the sketch and the simavr harness once; the reason if they cannot run here."""
    return build_firmware()


@pytest.fixture(params=sorted(TARGETS))
def mega(request, tmp_path, firmware_built):
    if request.param == "firmware-simavr" and firmware_built:
        pytest.skip(firmware_built)
    target = TARGETS[request.param](tmp_path)
    yield target
    target.close()


@pytest.fixture
def session(mega):
    link = MegaSession(mega.port, CONFIG, host_timeout_s=1.0)
    link.start()
    assert link.events.get(timeout=1).up  # the session announces its own start
    yield link
    link.close()


def unwrap(notice):
    """A Mega event's message (events carry their link epoch); link notices as they are."""
    return notice.message if isinstance(notice, MegaEvent) else notice


def next_event(link: MegaSession, kind: type, timeout: float = 3.0):
    """The next event of `kind`, skipping others (heartbeat-free: only reliable events queue)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            event = unwrap(link.events.get(timeout=max(0.01, end - time.monotonic())))
        except queue.Empty:
            break
        if isinstance(event, kind):
            return event
    raise AssertionError(f"no {kind.__name__} within {timeout} s")


def test_handshake_reports_firmware_and_the_calibration_sent(session):
    identify = session.identify
    assert identify.firmware == b"REJECTST"
    assert identify.protocol == m.PROTOCOL_VERSION
    assert identify.reset_cause == m.ResetCause.EXTERNAL, "opening the port resets the Mega (DTR)"
    assert session.status().fault == m.Fault.NONE
    hello_again = session.command(m.Hello(m.PROTOCOL_VERSION))
    assert hello_again.calibration_crc == CONFIG.calibration_crc
    assert hello_again.configured == 1


def test_reject_verdict_fires_once_at_the_gate(mega, session):
    part_id = mega.photo_eye()
    part = next_event(session, m.Part)
    assert part.part_id == part_id
    assert session.send_verdict(part_id, reject=True) == m.Error.OK
    gate = next_event(session, m.Gate)
    assert (gate.part_id, gate.action, gate.reason) == (
        part_id,
        m.GateAction.FIRED,
        m.GateReason.VERDICT,
    )
    wait_for_mega_time(session, gate.mcu_time_ms + PULSE_MS + 30)
    time.sleep(0.05)
    (pulse,) = mega.pulses()
    # On time to 2 ms, less any lateness of the simulation's own thread on a busy machine
    # (python-sim reports it; the firmware's clock is simulated and never late).
    assert 0 <= gate.mcu_time_ms - (part.mcu_time_ms + GATE_OFFSET_MS) <= 2 + pulse.late_ms
    assert abs(pulse.width_us - 2000) <= 10
    # The return to rest waits for a pulse already on the wire (up to 2.5 ms) to end.
    assert PULSE_MS - 1 <= pulse.end_ms - pulse.start_ms <= PULSE_MS + 3
    assert mega.servo_at_rest()


def test_pass_verdict_never_moves_the_servo(mega, session):
    part_id = mega.photo_eye()
    next_event(session, m.Part)
    assert session.send_verdict(part_id, reject=False) == m.Error.OK
    gate = next_event(session, m.Gate)
    assert (gate.action, gate.reason) == (m.GateAction.PASSED, m.GateReason.VERDICT)
    wait_for_mega_time(session, gate.mcu_time_ms + PULSE_MS + 30)
    time.sleep(0.05)
    assert mega.pulses() == []


def test_repeated_verdicts_fire_once(mega, session):
    part_id = mega.photo_eye()
    next_event(session, m.Part)
    for _ in range(3):  # new seq each time: idempotent by part ID
        assert session.send_verdict(part_id, reject=True) == m.Error.OK
    gate = next_event(session, m.Gate)
    wait_for_mega_time(session, gate.mcu_time_ms + PULSE_MS + 30)
    time.sleep(0.05)
    assert len(mega.pulses()) == 1
    assert session.status().fired == 1


def test_retransmitted_frame_acts_once(mega):
    """The same seq twice is a retransmission: acknowledged twice, acted on once."""
    host = RawHost(mega.port)
    try:
        assert isinstance(host.request(m.Hello(1)), m.Identify)
        assert host.request(CONFIG).error == m.Error.OK
        part_id = mega.photo_eye()
        seq = host.send(m.Verdict(part_id, 1))
        host.send(m.Verdict(part_id, 0), seq=seq)  # same seq: must be ignored, even changed
        host.pump(0.5)
        acks = [
            f.message
            for f in host.received
            if isinstance(f.message, m.Ack) and f.message.acked_seq == seq
        ]
        assert len(acks) == 2 and all(a.error == m.Error.OK for a in acks)
        gates = [f.message for f in host.received if isinstance(f.message, m.Gate)]
        assert [(g.part_id, g.action) for g in gates] == [(part_id, m.GateAction.FIRED)]
    finally:
        host.close()


def wait_for_mega_time(link: MegaSession, mcu_ms: int) -> None:
    """Block until the Mega's own clock reaches `mcu_ms` (a simulated Mega may run slow)."""
    while link.status().uptime_ms < mcu_ms:
        time.sleep(0.005)


def test_a_corrupted_command_is_retransmitted_and_acted_on_once(mega, session):
    """Line noise flips a bit in the first VERDICT: the Mega drops it (bad CRC), the host
    hears no ACK, sends the same frame again, and the part fires once."""
    part_id = mega.photo_eye()
    next_event(session, m.Part)
    hits = []

    def flip_first_verdict(data: bytes) -> bytes:
        frames = FrameReader().feed(data)
        if hits or not any(
            isinstance(f, Frame) and isinstance(f.message, m.Verdict) for f in frames
        ):
            return data
        hits.append(data)  # flip the low bit of every byte that stays non-zero
        return bytes(b if b in (0, 1) else b ^ 1 for b in data)

    mega.usb.line_noise = flip_first_verdict
    before = session.stats.retransmits
    assert session.send_verdict(part_id, reject=True) == m.Error.OK
    mega.usb.line_noise = None
    # At least one copy went again; on a busy machine the ACK of the first copy can take
    # longer than the 10 ms retransmit interval, and further copies are answered, not acted on.
    assert hits and session.stats.retransmits >= before + 1
    gate = next_event(session, m.Gate)
    assert (gate.part_id, gate.action) == (part_id, m.GateAction.FIRED)
    assert session.status().frame_errors >= 1
    wait_for_mega_time(session, gate.mcu_time_ms + PULSE_MS + 30)
    assert len(mega.pulses()) == 1, "the part fired once"


def test_late_verdict_gets_late_and_the_part_is_rejected(mega, session):
    part_id = mega.photo_eye()
    part = next_event(session, m.Part)
    wait_for_mega_time(session, part.mcu_time_ms + GATE_OFFSET_MS - DECISION_LEAD_MS + 5)
    assert session.send_verdict(part_id, reject=False) == m.Error.LATE
    gate = next_event(session, m.Gate)
    assert (gate.action, gate.reason) == (m.GateAction.FIRED, m.GateReason.NO_VERDICT)
    wait_for_mega_time(session, gate.mcu_time_ms + PULSE_MS + 30)
    time.sleep(0.05)
    assert len(mega.pulses()) == 1


def test_unknown_part_is_refused(session):
    assert session.send_verdict(999, reject=True) == m.Error.UNKNOWN_PART


def test_heartbeat_loss_rejects_every_pending_and_new_part(mega):
    """Parts still between eye and gate when the host goes quiet are all rejected."""
    slow_gate = m.Configure(
        **{
            **CONFIG.__dict__,
            "gate_offset": 1200,
            "decision_lead": 100,
            "heartbeat_timeout_ms": 200,
        }
    )
    host = RawHost(mega.port)
    try:
        host.request(m.Hello(1))
        host.request(slow_gate)
        host.request(m.ResetFault())
        first, second = mega.photo_eye(), mega.photo_eye()
        host.send(m.Verdict(first, 0))  # a pass verdict must not survive link loss
        host.pump(0.05)
        time.sleep(0.4)  # silence past heartbeat_timeout_ms
        third = mega.photo_eye()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and not any(
            isinstance(f.message, m.Gate) and f.message.part_id == third for f in host.received
        ):
            host.pump(0.1)
        events = [f.message for f in host.received if f.message.RELIABLE]
        faults = [e for e in events if isinstance(e, m.FaultEvent)]
        assert faults and faults[0].code == m.Fault.HEARTBEAT_LOST
        # detail: how long the Mega had heard nothing when it acted (ms).
        assert (
            slow_gate.heartbeat_timeout_ms < faults[0].detail <= slow_gate.heartbeat_timeout_ms + 10
        )
        gates = {e.part_id: e for e in events if isinstance(e, m.Gate)}
        assert set(gates) == {first, second, third}
        for gate in gates.values():
            assert (gate.action, gate.reason) == (m.GateAction.FIRED, m.GateReason.LINK_LOST)
        assert host.request(m.GetStatus()).fault == m.Fault.HEARTBEAT_LOST
        assert host.request(m.ResetFault()).error == m.Error.OK
        assert host.request(m.GetStatus()).fault == m.Fault.NONE
    finally:
        host.close()


def test_a_part_with_no_room_in_the_fifo_is_rejected_at_once(mega):
    """17 parts between eye and gate: the 17th cannot be tracked, so the gate fires for it
    at once, FIFO_OVERFLOW latches, and every part still gets exactly one GATE."""
    long_gate = m.Configure(**{**CONFIG.__dict__, "gate_offset": 3000, "decision_lead": 100})
    link = MegaSession(mega.port, long_gate, host_timeout_s=2.0)
    link.start()
    try:
        parts = [mega.photo_eye() for _ in range(17)]
        events: list = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(isinstance(e, m.Gate) for e in events) < 17:
            try:
                event = unwrap(link.events.get(timeout=0.1))
            except queue.Empty:
                continue
            events.append(event)
            if isinstance(event, m.Part) and event.part_id < 17:
                link.send_verdict(event.part_id, reject=False)
        gates = {e.part_id: e for e in events if isinstance(e, m.Gate)}
        assert sorted(gates) == parts
        assert (gates[17].action, gates[17].reason) == (m.GateAction.FIRED, m.GateReason.FIFO_FULL)
        assert all(gates[p].reason == m.GateReason.VERDICT for p in parts[:16])
        assert [e.code for e in events if isinstance(e, m.FaultEvent)] == [m.Fault.FIFO_OVERFLOW]
    finally:
        link.close()


def test_host_survives_the_port_vanishing(mega, session):
    mega.unplug()
    down = next_event(session, LinkState)
    assert not down.up
    with pytest.raises(LinkError):
        session.send_verdict(1, reject=False)
    time.sleep(0.5)
    mega.plug()
    up = next_event(session, LinkState, timeout=5)
    assert up.up and session.connected.is_set()
    part_id = mega.photo_eye()
    next_event(session, m.Part)
    assert session.send_verdict(part_id, reject=True) == m.Error.OK
    assert next_event(session, m.Gate).action == m.GateAction.FIRED
    assert session.stats.reconnects == 1


def test_host_notices_a_mega_reboot_and_handshakes_again(mega, session):
    mega.reset()
    down = next_event(session, LinkState, timeout=3)
    assert not down.up and "reboot" in down.reason
    seen = []
    while not (seen and isinstance(seen[-1], LinkState)):
        seen.append(unwrap(session.events.get(timeout=5)))
    assert seen[-1].up and seen[-1].identify.reset_cause == m.ResetCause.WATCHDOG
    assert [e.code for e in seen if isinstance(e, m.FaultEvent)] == [m.Fault.WATCHDOG_RESET]
    part_id = mega.photo_eye()
    next_event(session, m.Part)
    assert session.send_verdict(part_id, reject=False) == m.Error.OK


def test_test_fire_pulses_the_configured_number_of_times(mega, session):
    assert session.command(m.TestFire(2, 0)).error == m.Error.OK
    gates = [next_event(session, m.Gate) for _ in range(2)]
    assert all(g.reason == m.GateReason.TEST and g.action == m.GateAction.FIRED for g in gates)
    wait_for_mega_time(session, gates[-1].mcu_time_ms + PULSE_MS + 30)
    time.sleep(0.05)
    assert len(mega.pulses()) == 2


def test_vision_reject_fires_after_the_delay(mega, session):
    sent = time.monotonic()
    assert session.command(m.VisionReject(0x80000001, 120)).error == m.Error.OK
    gate = next_event(session, m.Gate)
    assert gate.reason == m.GateReason.VISION and gate.part_id == 0x80000001
    assert time.monotonic() - sent >= 0.1


def test_a_part_due_first_fires_first_whatever_order_it_came_in(mega, session):
    """After a reboot the host re-arms forgotten parts with VISION_REJECT while new parts
    already queue from the photo-eye: each must fire at its own time, not wait behind a
    part that arrived earlier but is due later."""
    part_id = mega.photo_eye()
    part = next_event(session, m.Part)
    assert session.send_verdict(part_id, reject=True) == m.Error.OK
    assert session.command(m.VisionReject(7, 60)).error == m.Error.OK
    first, second = next_event(session, m.Gate), next_event(session, m.Gate)
    assert (first.part_id, first.reason) == (0x80000007, m.GateReason.VISION)
    assert first.mcu_time_ms < part.mcu_time_ms + GATE_OFFSET_MS - 100
    assert second.part_id == part_id
    late = mega.pulses()[-1].late_ms  # a simulation thread's own lateness (see above)
    assert 0 <= second.mcu_time_ms - (part.mcu_time_ms + GATE_OFFSET_MS) <= 2 + late


def test_unsafe_calibration_is_refused_by_the_mega(mega):
    unsafe = m.Configure(**{**CONFIG.__dict__, "reject_pulse_ms": 5000})
    link = MegaSession(mega.port, unsafe)
    with pytest.raises(HandshakeError, match="refused the calibration \\(BAD_VALUE\\)"):
        link.start()
    link.close()


def test_a_device_that_is_not_a_mega_is_named():
    link = MegaSession("loop://", CONFIG, boot_timeout_s=0.5)
    with pytest.raises(LinkError, match="loop://: no answer to Hello"):
        link.start()
    link.close()


def test_stepped_clock_fires_exactly_at_the_gate(tmp_path):
    """python-sim only: with time stepped by the test, the gate fires at trigger + offset
    to the millisecond and the pulse lasts exactly reject_pulse_ms."""
    from station.sim.mega_pty import SimClock, SimulatedMega

    with SimulatedMega(clock=SimClock(stepped=True)) as mega:
        link = MegaSession(mega.port, CONFIG, host_timeout_s=5.0)
        link.start()
        try:
            mega.step(10)
            part_id = mega.photo_eye()  # at t = 10 ms
            mega.step(1)
            next_event(link, m.Part)
            assert link.send_verdict(part_id, reject=True) == m.Error.OK
            mega.step(GATE_OFFSET_MS - 2)
            assert mega.core.servo_log == [], "fired early"
            mega.step(1 + PULSE_MS + 5)
            (pulse,) = mega.core.servo_log
            assert (pulse.start_ms, pulse.end_ms) == (
                10 + GATE_OFFSET_MS,
                10 + GATE_OFFSET_MS + PULSE_MS,
            )
        finally:
            link.close()


def test_a_port_in_use_is_refused_with_its_name(mega, session):
    """A second station process must not share the Mega: the port is locked."""
    from station.link.transport import PortError

    second = MegaSession(mega.port, CONFIG)
    with pytest.raises(PortError, match=f"{mega.port}: cannot open .*lock"):
        second.start()
    second.close()


def test_a_missing_port_is_refused_with_its_name(tmp_path):
    from station.link.transport import PortError

    link = MegaSession(str(tmp_path / "ttyACM9"), CONFIG)
    with pytest.raises(PortError, match="ttyACM9: cannot open"):
        link.start()
    link.close()
