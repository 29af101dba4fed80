"""The simulated Mega on a clock the caller steps, spoken to through the host endpoint.

Replay's gate. Each part goes through the same exchange as on the line
(photo-eye -> PART, VERDICT -> ACK, decision -> GATE), encoded and decoded
frame by frame by the same `HostEndpoint` the line service uses, but the
wire is instant and time jumps straight to the next thing that can happen,
so thousands of parts replay in seconds and no serial port is opened.
Timing is always in milliseconds here: an encoder-mode calibration is
converted at its nominal belt speed (`Calibration.gate_travel_ms`).
Time only moves forward; callers give it in order (replay queues its
verdicts and sends each when its time comes).
"""

from __future__ import annotations

from dataclasses import dataclass

from station.link import messages as m
from station.link.endpoint import Answered, HostEndpoint, LinkState, MegaEvent
from station.sim.mega_core import MegaCore

JUDGE_MS = 5
"""Modelled time to locate and classify one part on a stepped clock (replay and the
stepped line); the real decision takes about 1 ms. Wall-clock time never steps the clock."""


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
        self.endpoint = HostEndpoint(configure, host_timeout_s=3600.0, name="stepped Mega")
        self.now_ms = 0
        self.gates: dict[int, GateOutcome] = {}
        """GATE events by part ID, as they arrive."""
        self.parts_reported: list[int] = []
        self.faults: list[str] = []
        self._answers: dict[object, Answered] = {}
        self.endpoint.opened(0.0)
        self._exchange()
        if not self.endpoint.up:
            raise SteppedMegaError(f"handshake with the simulated Mega: {self.endpoint.failure}")

    # --- what replay asks of it -----------------------------------------------------

    def photo_eye(self, at_ms: int) -> int:
        """A part breaks the beam at `at_ms`; returns the ID the Mega gave it."""
        self.advance(at_ms)
        part_id = self.core.photo_eye(self.now_ms)
        self._exchange()
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
            self.now_ms = min(to_ms, self._next_moment())
            self.core.tick(self.now_ms)
            self.endpoint.tick(self.now_ms / 1000)
            self._exchange()

    def settle(self) -> None:
        """Run until every part the Mega holds has left the gate."""
        while self.core.fifo:
            self.advance(self._next_moment())
        self.advance(self.now_ms + self.core.config.reject_pulse_ms)

    def command(self, msg: m.Message) -> m.Message:
        tag = object()
        self.endpoint.submit(msg, self.now_ms / 1000, tag)
        self._exchange()
        answer = self._answers.pop(tag, None)
        if answer is None or answer.reply is None:
            why = answer.error if answer else "no answer"
            raise SteppedMegaError(f"{type(msg).__name__}: {why}")
        return answer.reply

    # --- the instant wire -------------------------------------------------------------

    def _exchange(self) -> None:
        """Carry bytes both ways until neither side has anything more to say."""
        now_s = self.now_ms / 1000
        while True:
            to_mega = self.endpoint.take_output()
            if to_mega:
                self.core.receive(to_mega, self.now_ms)
            to_host = self.core.take_output()
            if to_host:
                self.endpoint.receive(to_host, now_s)
            for notice in self.endpoint.take_notices():
                self._note(notice)
            if not to_mega and not to_host:
                return

    def _note(self, notice: object) -> None:
        if isinstance(notice, Answered):
            self._answers[notice.tag] = notice
        elif isinstance(notice, MegaEvent):
            msg = notice.message
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
        elif isinstance(notice, LinkState) and not notice.up:
            raise SteppedMegaError(f"the simulated Mega's link went down: {notice.reason}")

    def _next_moment(self) -> int:
        moments = [self.core.next_due_ms(self.now_ms)]
        due = self.endpoint.next_due()
        if due is not None:
            moments.append(int(due * 1000) + (due * 1000 % 1 > 0))
        return max(self.now_ms + 1, min(moments))
