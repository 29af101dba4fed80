"""The simulated Mega on a clock the caller steps, spoken to in the real wire format.

Replay's gate. Each part goes through the same exchange as on the line
(photo-eye -> PART, VERDICT -> ACK, decision -> GATE), encoded and decoded
frame by frame, but time jumps straight to the next thing that can happen,
so thousands of parts replay in seconds and no serial port is opened.
Timing is always in milliseconds here: an encoder-mode calibration is
converted at its nominal belt speed (`Calibration.gate_travel_ms`).
"""

from __future__ import annotations

from dataclasses import dataclass

from station.link import messages as m
from station.link.framing import FrameError, FrameReader, encode_frame
from station.sim.mega_core import HEARTBEAT_PERIOD_MS, MegaCore

HOST_HEARTBEAT_MS = 250


class SteppedMegaError(RuntimeError):
    """The simulated Mega refused or did not answer; a replay cannot be trusted past this."""


@dataclass(frozen=True)
class GateOutcome:
    part_id: int
    action: str
    """"fired" or "passed"."""
    reason: str
    """Why, as the Mega reports it: verdict, no_verdict, late_verdict, ..."""
    mcu_time_ms: int


class SteppedMega:
    def __init__(self, configure: m.Configure):
        self.core = MegaCore(0, m.ResetCause.POWER_ON)
        self.now_ms = 0
        self.gates: dict[int, GateOutcome] = {}
        """GATE events by part ID, as they arrive."""
        self.parts_reported: list[int] = []
        self.faults: list[str] = []
        self._reader = FrameReader()
        self._seq = 0
        self._next_heartbeat = HOST_HEARTBEAT_MS
        self._reply: m.Message | None = None
        self.core.take_output()  # the boot announcement
        self._expect_ok(self.command(m.Hello(m.PROTOCOL_VERSION)), "HELLO")
        self._expect_ok(self.command(configure), "CONFIGURE")
        self._expect_ok(self.command(m.ResetFault()), "RESET_FAULT")

    # --- what replay asks of it -----------------------------------------------------

    def photo_eye(self, at_ms: int) -> int:
        """A part breaks the beam at `at_ms`; returns the ID the Mega gave it."""
        self.advance(at_ms)
        part_id = self.core.photo_eye(self.now_ms)
        self._drain()
        return part_id

    def verdict(self, at_ms: int, part_id: int, reject: bool) -> str:
        """Send VERDICT at `at_ms`; the Mega's answer (OK, LATE, ...) by name."""
        self.advance(at_ms)
        reply = self.command(m.Verdict(part_id, int(reject)))
        return m.Error(getattr(reply, "error", m.Error.OK)).name

    def advance(self, to_ms: int) -> None:
        """Run the Mega up to `to_ms`, stopping at every moment something can happen."""
        if to_ms < self.now_ms:
            raise ValueError(f"time goes forward only: {to_ms} < {self.now_ms}")
        while self.now_ms < to_ms:
            self.now_ms = min(to_ms, self._next_event_ms())
            if self.now_ms >= self._next_heartbeat:
                self._send(m.HostHeartbeat(self.now_ms & 0xFFFFFFFF))
                self._next_heartbeat += HOST_HEARTBEAT_MS
            self.core.tick(self.now_ms)
            self._drain()

    def settle(self) -> None:
        """Run until every part the Mega holds has left the gate."""
        while self.core.fifo:
            self.advance(self._next_event_ms())
        self.advance(self.now_ms + self.core.config.reject_pulse_ms)

    # --- the wire ---------------------------------------------------------------------

    def command(self, msg: m.Message) -> m.Message:
        self._seq = self._seq % 255 + 1
        self._reply = None
        self.core.receive(encode_frame(self._seq, msg), self.now_ms)
        self._drain()
        if self._reply is None:
            raise SteppedMegaError(f"no answer to {type(msg).__name__}")
        return self._reply

    def _send(self, msg: m.Message) -> None:
        self.core.receive(encode_frame(0, msg), self.now_ms)

    def _drain(self) -> None:
        for item in self._reader.feed(self.core.take_output()):
            if isinstance(item, FrameError):
                raise SteppedMegaError(f"garbled frame from the simulated Mega: {item}")
            msg = item.message
            if msg.IS_REPLY:
                self._reply = msg
                continue
            if msg.RELIABLE:
                self._send(m.AckEvent(item.seq))
            if isinstance(msg, m.Gate):
                self.gates[msg.part_id] = GateOutcome(
                    msg.part_id,
                    "fired" if msg.action == m.GateAction.FIRED else "passed",
                    m.GateReason(msg.reason).name.lower(),
                    msg.mcu_time_ms,
                )
            elif isinstance(msg, m.Part):
                self.parts_reported.append(msg.part_id)
            elif isinstance(msg, m.FaultEvent):
                self.faults.append(m.Fault(msg.code).name)

    def _next_event_ms(self) -> int:
        """The next moment the Mega could act: a decision, a fire, the servo's return, a beat."""
        moments = [self._next_heartbeat, self.now_ms + HEARTBEAT_PERIOD_MS]
        for part in self.core.fifo:
            moments.append(part.fire_at if part.decided else part.decide_at)
        if self.core.servo_until is not None:
            moments.append(self.core.servo_until)
        return max(self.now_ms + 1, min(moments))

    @staticmethod
    def _expect_ok(reply: m.Message, what: str) -> None:
        error = getattr(reply, "error", m.Error.OK)
        if error != m.Error.OK:
            raise SteppedMegaError(f"{what} refused by the simulated Mega: {m.Error(error).name}")
