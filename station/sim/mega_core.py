"""The Mega's state machine in Python: part FIFO, gate timing, fail-safe, event queue.

Pure logic with no I/O and no clock of its own: every input carries the
time in milliseconds, so a test can step time exactly and the firmware
(firmware/arduino_mega/) can be held to the same behaviour by the same tests.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from station.link import limits
from station.link import messages as m
from station.link.framing import Frame, FrameError, FrameReader, encode_frame
from station.link.limits import (
    EVENT_QUEUE_SIZE,
    FIFO_SIZE,
    FIRMWARE_VERSION,
    HEARTBEAT_PERIOD_MS,
    VISION_ID_BIT,
)
from station.link.limits import MEGA_RETRANSMIT_MS as RETRANSMIT_MS


@dataclass(frozen=True)
class GateConfig:
    """What CONFIGURE sets; the defaults are what a fresh Mega runs with (safe, slow)."""

    mode: int = m.TimingMode.MILLISECONDS
    gate_offset: int = 1500
    decision_lead: int = 100
    servo_rest_us: int = 1000
    servo_reject_us: int = 2000
    reject_pulse_ms: int = 150
    heartbeat_timeout_ms: int = 1000
    calibration_crc: int = 0

    def problem(self) -> str | None:
        """Why this configuration is unsafe, or None (PROTOCOL.md, "Safe limits")."""
        for name in ("servo_rest_us", "servo_reject_us"):
            if getattr(self, name) not in limits.SERVO_US:
                return f"{name} outside {limits.SERVO_US}"
        if self.reject_pulse_ms not in limits.REJECT_PULSE_MS:
            return f"reject_pulse_ms outside {limits.REJECT_PULSE_MS}"
        if self.heartbeat_timeout_ms not in limits.HEARTBEAT_TIMEOUT_MS:
            return f"heartbeat_timeout_ms outside {limits.HEARTBEAT_TIMEOUT_MS}"
        if (
            self.mode == m.TimingMode.ENCODER_COUNTS
            and self.gate_offset not in limits.GATE_OFFSET_COUNTS
        ):
            return f"gate_offset outside {limits.GATE_OFFSET_COUNTS} counts"
        if self.mode == m.TimingMode.MILLISECONDS and self.gate_offset not in limits.GATE_OFFSET_MS:
            return f"gate_offset outside {limits.GATE_OFFSET_MS} ms"
        if self.mode not in (m.TimingMode.ENCODER_COUNTS, m.TimingMode.MILLISECONDS):
            return f"mode {self.mode} unknown"
        if self.decision_lead >= self.gate_offset:
            return "decision_lead not below gate_offset"
        return None


@dataclass
class PendingPart:
    part_id: int
    mode: int
    decide_at: int
    fire_at: int
    verdict: int | None = None
    decided: bool = False
    fire: bool = False
    reason: int = m.GateReason.VERDICT


@dataclass
class ServoPulse:
    start_ms: int
    end_ms: int
    width_us: int
    late_ms: int = 0
    """How long after the part's due time the pulse started (a late tick of the clock)."""


@dataclass
class Counters:
    parts: int = 0
    fired: int = 0
    passed: int = 0
    failsafe: int = 0
    frame_errors: int = 0


@dataclass
class _QueuedEvent:
    seq: int
    wire: bytes
    sent_at: int | None = None
    tries: int = 0


class MegaCore:
    """One boot of the Mega. A reset is a new instance (RAM is lost; `eeprom` survives)."""

    def __init__(
        self,
        now_ms: int,
        reset_cause: int = m.ResetCause.POWER_ON,
        eeprom: GateConfig | None = None,
    ):
        self.config = eeprom or GateConfig()
        self.configured = eeprom is not None
        self.reset_cause = reset_cause
        self.fault = m.Fault.NONE
        self.pending_fault_report = (
            m.Fault.WATCHDOG_RESET if reset_cause == m.ResetCause.WATCHDOG else m.Fault.NONE
        )
        self.counters = Counters()
        self.fifo: deque[PendingPart] = deque()
        self.next_part_id = 1
        self.encoder = 0
        self._encoder_at_tick = (
            0  # STATUS reports the count the last tick saw, as the firmware does
        )
        self.boot_ms = now_ms
        self.servo_us = self.config.servo_rest_us
        self.servo_until: int | None = None
        self.servo_log: list[ServoPulse] = []
        # TEST_FIRE: pulses still to give, their width, when the next may start. A new
        # TEST_FIRE replaces what is left of the last one (PROTOCOL.md, TEST_FIRE).
        self.test_fires_left = 0
        self._test_fire_width = 0
        self._next_test_fire_at = 0
        self._reader = FrameReader()
        self._out = bytearray()
        self._host_present = False
        self._last_heard = now_ms
        # The first heartbeat goes out on the first tick, right after the announcement:
        # a host that missed the announcement sees millis() go back at once.
        self._last_heartbeat_out = now_ms - HEARTBEAT_PERIOD_MS
        self._last_host_seq = 0
        self._last_reply = b""
        self._event_seq = 0
        self._events: deque[_QueuedEvent] = deque()
        self.events_dropped = 0
        self._send(0, self._identify(0))  # boot announcement: tells a connected host we reset

    # --- inputs ------------------------------------------------------------

    def receive(self, data: bytes, now_ms: int) -> None:
        for item in self._reader.feed(data):
            if isinstance(item, FrameError):
                self.counters.frame_errors += 1
                if item.seq is not None and item.kind in ("unknown_type", "bad_length"):
                    error = (
                        m.Error.UNKNOWN_TYPE if item.kind == "unknown_type" else m.Error.BAD_LENGTH
                    )
                    self._send(0, m.Ack(item.seq, error))
                continue
            self._last_heard = now_ms
            self._handle(item, now_ms)

    def photo_eye(self, now_ms: int) -> int:
        """A part broke the beam: latch its position, queue it, report it. Returns its ID."""
        part_id = self.next_part_id
        self.next_part_id += 1
        self.counters.parts += 1
        cfg = self.config
        trigger = self._position(now_ms, cfg.mode)
        part = PendingPart(
            part_id,
            cfg.mode,
            trigger + cfg.gate_offset - cfg.decision_lead,
            trigger + cfg.gate_offset,
        )
        if self.fault == m.Fault.HEARTBEAT_LOST:
            self._decide(part, fire=True, reason=m.GateReason.LINK_LOST)
        fifo_full = len(self.fifo) >= FIFO_SIZE
        if not fifo_full:
            self.fifo.append(part)
        self._queue_event(m.Part(part_id, self.encoder & 0xFFFFFFFF, self.millis(now_ms)), now_ms)
        if fifo_full:
            # No room to track it to the gate: the gate opens now for a pulse, the
            # alarm latches, and the part is reported as fail-safe.
            self._latch_fault(m.Fault.FIFO_OVERFLOW, part_id)
            self._start_pulse(now_ms, self.config.servo_reject_us)
            self.counters.fired += 1
            self.counters.failsafe += 1
            self._queue_event(
                m.Gate(part_id, m.GateAction.FIRED, m.GateReason.FIFO_FULL, self.millis(now_ms)),
                now_ms,
            )
        return part_id

    def photo_eye_lost(self, count: int, now_ms: int) -> None:
        """Beam breaks the board could not latch (its trigger ring was full, which its size
        makes impossible while the watchdog runs): no part ID, no gate action; the Mega
        can only say so, loudly."""
        self._latch_fault(m.Fault.PHOTO_EYE_OVERFLOW, count)

    def tick(self, now_ms: int) -> None:
        self._encoder_at_tick = self.encoder
        self._check_heartbeat(now_ms)
        self._run_gate(now_ms)
        self._run_servo(now_ms)
        self._run_events(now_ms)
        if now_ms - self._last_heartbeat_out >= HEARTBEAT_PERIOD_MS:
            self._last_heartbeat_out = now_ms
            self._send(0, m.MegaHeartbeat(self.millis(now_ms), self.fault, len(self.fifo)))

    def next_due_ms(self, now_ms: int) -> int:
        """The next millisecond at which `tick` can change something: a heartbeat out, the
        host's heartbeat deadline, a decision, a fire, the servo's return, a test fire, an
        event (re)transmission. A stepped clock ticks there, never sooner than a millisecond
        after its last tick. Millisecond timing only."""
        moments = [self._last_heartbeat_out + HEARTBEAT_PERIOD_MS]
        if self._host_present and self.fault != m.Fault.HEARTBEAT_LOST:
            moments.append(self._last_heard + self.config.heartbeat_timeout_ms + 1)
        for part in self.fifo:
            moments.append(part.fire_at if part.decided else part.decide_at)
        if self.servo_until is not None:
            moments.append(self.servo_until)
        elif self.test_fires_left:
            moments.append(self._next_test_fire_at)
        if self._events and self._host_present:
            head = self._events[0]
            moments.append(now_ms if head.sent_at is None else head.sent_at + RETRANSMIT_MS)
        return min(moments)

    @property
    def queued_events(self) -> int:
        """Reliable events waiting for the host's ACK_EVENT (the firmware's events_count)."""
        return len(self._events)

    def take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    # --- commands ----------------------------------------------------------

    def _handle(self, frame: Frame, now_ms: int) -> None:
        msg = frame.message
        if isinstance(msg, m.AckEvent):
            if self._events and self._events[0].seq == msg.acked_seq:
                self._events.popleft()
            return
        if isinstance(msg, m.HostHeartbeat) or not msg.FROM_HOST or not msg.RELIABLE:
            return
        if isinstance(msg, m.Hello):
            self._host_present = True  # queued events now reach the new session
            self._last_host_seq = frame.seq
            self._reply(self._identify(frame.seq))
            if self.pending_fault_report:
                self._latch_fault(self.pending_fault_report, self.reset_cause)
                self.pending_fault_report = m.Fault.NONE
            return
        if frame.seq == self._last_host_seq:
            self._out += self._last_reply  # a retransmission: answer again, act once
            return
        self._last_host_seq = frame.seq
        if isinstance(msg, m.GetStatus):
            self._reply(self._status(frame.seq, now_ms))
        else:
            self._reply(m.Ack(frame.seq, self._execute(msg, now_ms)))

    def _execute(self, msg: m.Message, now_ms: int) -> int:
        if isinstance(msg, m.Configure):
            return self._configure(msg)
        if isinstance(msg, m.Verdict):
            return self._verdict(msg)
        if isinstance(msg, m.ResetFault):
            self.fault = m.Fault.NONE
            return m.Error.OK
        if isinstance(msg, m.VisionReject):
            if not self.configured:
                return m.Error.NOT_CONFIGURED
            if len(self.fifo) >= FIFO_SIZE:
                return m.Error.BUSY
            due = now_ms + msg.delay_ms
            part = PendingPart(msg.part_id | VISION_ID_BIT, m.TimingMode.MILLISECONDS, due, due)
            self._decide(part, fire=True, reason=m.GateReason.VISION)
            self.fifo.append(part)
            return m.Error.OK
        if isinstance(msg, m.TestFire):
            if not self.configured:
                return m.Error.NOT_CONFIGURED
            if self.fault:
                return m.Error.FAULTED
            if msg.count not in limits.TEST_FIRE_COUNT or (
                msg.pulse_us and msg.pulse_us not in limits.SERVO_US
            ):
                return m.Error.BAD_VALUE
            self.test_fires_left = msg.count
            self._test_fire_width = msg.pulse_us or self.config.servo_reject_us
            self._next_test_fire_at = now_ms
            return m.Error.OK
        return m.Error.UNKNOWN_TYPE

    def _configure(self, msg: m.Configure) -> int:
        fields = {k: getattr(msg, k) for k in GateConfig.__dataclass_fields__}
        candidate = GateConfig(**fields)
        if candidate.problem():
            return m.Error.BAD_VALUE
        self.config = candidate
        self.configured = True
        if self.servo_until is None:
            self.servo_us = candidate.servo_rest_us
        return m.Error.OK

    def _verdict(self, msg: m.Verdict) -> int:
        if msg.verdict not in (0, 1):
            return m.Error.BAD_VALUE
        for part in self.fifo:
            if part.part_id == msg.part_id:
                if part.decided:
                    return m.Error.LATE
                if part.verdict is None:
                    part.verdict = msg.verdict
                return m.Error.OK
        if 0 < msg.part_id < self.next_part_id:
            return m.Error.LATE
        return m.Error.UNKNOWN_PART

    # --- time-driven behaviour ------------------------------------------------

    def millis(self, now_ms: int) -> int:
        """Time since this boot, as the firmware's millis(): it restarts at 0 on every reset."""
        return (now_ms - self.boot_ms) & 0xFFFFFFFF

    def _position(self, now_ms: int, mode: int) -> int:
        return self.encoder if mode == m.TimingMode.ENCODER_COUNTS else now_ms

    def _check_heartbeat(self, now_ms: int) -> None:
        if (
            self._host_present
            and self.fault != m.Fault.HEARTBEAT_LOST
            and now_ms - self._last_heard > self.config.heartbeat_timeout_ms
        ):
            self._latch_fault(m.Fault.HEARTBEAT_LOST, now_ms - self._last_heard)
            for part in self.fifo:
                if not part.fire:
                    self._decide(part, fire=True, reason=m.GateReason.LINK_LOST)

    def _decide(self, part: PendingPart, fire: bool, reason: int) -> None:
        part.decided, part.fire, part.reason = True, fire, reason

    def _run_gate(self, now_ms: int) -> None:
        for part in self.fifo:
            if not part.decided and self._position(now_ms, part.mode) >= part.decide_at:
                if part.verdict is None:
                    self._decide(part, fire=True, reason=m.GateReason.NO_VERDICT)
                else:
                    self._decide(part, fire=part.verdict == 1, reason=m.GateReason.VERDICT)
        # Fire in the order parts fall due, not the order they came in: a VISION_REJECT
        # re-arming a forgotten part can be due before a photo-eye part queued earlier.
        due = [p for p in self.fifo if self._position(now_ms, p.mode) >= p.fire_at]
        for part in due:
            self.fifo.remove(part)
            if part.fire:
                self._start_pulse(now_ms, self.config.servo_reject_us)
                if part.mode == m.TimingMode.MILLISECONDS and self.servo_log:
                    self.servo_log[-1].late_ms = max(
                        self.servo_log[-1].late_ms, now_ms - part.fire_at
                    )
                self.counters.fired += 1
                if part.reason != m.GateReason.VERDICT:
                    self.counters.failsafe += 1
            else:
                self.counters.passed += 1
            action = m.GateAction.FIRED if part.fire else m.GateAction.PASSED
            self._queue_event(
                m.Gate(part.part_id, action, part.reason, self.millis(now_ms)), now_ms
            )

    def _start_pulse(self, now_ms: int, width_us: int) -> None:
        end = now_ms + self.config.reject_pulse_ms
        if self.servo_until is not None and self.servo_log:
            self.servo_log[-1].end_ms = end  # already out: extend to this part's full pulse
        else:
            self.servo_log.append(ServoPulse(now_ms, end, width_us))
        self.servo_us = width_us
        self.servo_until = end

    def _run_servo(self, now_ms: int) -> None:
        if self.test_fires_left and self.servo_until is None and now_ms >= self._next_test_fire_at:
            self.test_fires_left -= 1
            self._next_test_fire_at = now_ms + 2 * self.config.reject_pulse_ms
            self._start_pulse(now_ms, self._test_fire_width)
            self._queue_event(
                m.Gate(0, m.GateAction.FIRED, m.GateReason.TEST, self.millis(now_ms)), now_ms
            )
        if self.servo_until is not None and now_ms >= self.servo_until:
            self.servo_us = self.config.servo_rest_us
            self.servo_until = None

    def _run_events(self, now_ms: int) -> None:
        if not self._events or not self._host_present:
            return
        head = self._events[0]
        if head.sent_at is None or now_ms - head.sent_at >= RETRANSMIT_MS:
            head.sent_at = now_ms
            head.tries += 1
            self._out += head.wire

    # --- output helpers ----------------------------------------------------

    def _latch_fault(self, code: int, detail: int) -> None:
        if self.fault == m.Fault.NONE or code == m.Fault.HEARTBEAT_LOST:
            self.fault = code
        self._queue_event(m.FaultEvent(code, detail & 0xFFFFFFFF), None)

    def _queue_event(self, msg: m.Message, now_ms: int | None) -> None:
        if not self._host_present:
            return  # nobody to tell; counters and the gate still act
        if len(self._events) >= EVENT_QUEUE_SIZE:
            self._events.popleft()
            self.events_dropped += 1
            if self.fault == m.Fault.NONE:
                self.fault = m.Fault.EVENT_QUEUE_OVERFLOW
        self._event_seq = self._event_seq % 255 + 1
        self._events.append(_QueuedEvent(self._event_seq, encode_frame(self._event_seq, msg)))

    def _reply(self, msg: m.Message) -> None:
        self._last_reply = encode_frame(0, msg)
        self._out += self._last_reply

    def _send(self, seq: int, msg: m.Message) -> None:
        self._out += encode_frame(seq, msg)

    def _identify(self, seq: int) -> m.Identify:
        major, minor, patch = FIRMWARE_VERSION
        return m.Identify(
            seq,
            m.FIRMWARE_NAME,
            major,
            minor,
            patch,
            m.PROTOCOL_VERSION,
            self.config.calibration_crc,
            self.reset_cause,
            int(self.configured),
        )

    def _status(self, seq: int, now_ms: int) -> m.Status:
        c = self.counters
        return m.Status(
            seq,
            self.millis(now_ms),
            self._encoder_at_tick & 0xFFFFFFFF,
            c.parts,
            c.fired,
            c.passed,
            c.failsafe,
            min(c.frame_errors, 0xFFFF),
            len(self.fifo),
            self.fault,
        )
