"""The virtual line on one stepped clock: belt, Mega, wire, host endpoint, tracker, judge.

Everything the line service decides runs here as it does on the line: the
host endpoint (`link/endpoint.py`) speaks the real wire format to the
Mega's state machine (`sim/mega_core.py`), the part tracker
(`tracker.py`) decides, and `PartRecords` writes a real SQLite audit.
What is simulated is time and physics: one integer-millisecond clock jumps
straight to the next moment anything can happen (a photo-eye edge, a byte
arriving, a retransmission, a decision, a fire, a deadline), so the run
is deterministic (same seed, same result, whatever the machine's load)
and 10^5 parts take minutes, not the 5.5 hours they take on a belt.

A part's fate is exact: the Mega's servo log gives the pusher's out and in
times to the millisecond, the belt gives the interval in which the part's
centre is inside the strike zone, and a part is rejected iff they overlap.

Faults (`FaultPlan`) are drawn from a seeded generator: Mega resets,
unplugged cables, camera stalls, classifier stalls and errors, garbled and
dropped bytes, lost acknowledgements. Judging is either the real judge on
a rendered frame (`render=True`: locate, crop, LiteRT) or a table of the
real classifier's score for each image, computed once (the soak's speed).
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from cobs import cobs
from tqdm import tqdm

from station.audit import AuditLog
from station.calibration import Calibration
from station.camera.frames import Frame
from station.config import VirtualLineConfig, VisionTriggerConfig
from station.judgement import FailSafe, Judgement
from station.link import messages as m
from station.link.endpoint import HostEndpoint, LinkPhase
from station.service.metrics import LineMetrics
from station.service.records import RECORD_ACTIONS, PartRecords
from station.sim.conveyor import VirtualConveyor
from station.sim.mega_core import GateConfig, MegaCore
from station.sim.stepped_mega import JUDGE_MS
from station.sim.stepped_trigger import TRIGGER_MS, SteppedTrigger
from station.tracker import (
    GATE_UNKNOWN,
    PULSE_CUT,
    Judged,
    JudgeFrame,
    PartTracker,
    SendCommand,
    TrackerSettings,
)
from station.vision.sighting import VisionSighting

log = logging.getLogger(__name__)

WIRE_MS = 1
"""USB latency each way."""
RECONNECT_MS = 500
"""The service's reconnect interval: a vanished or failed port is tried again this often."""
RESET_GUARD_S = 0.06
"""Opening the port reboots the Mega: wait for a gap this long with no part at the gate
(this Mega boots at once; a handshake is five round trips of 2 ms, and a lost frame
costs a 10 ms retransmission)."""
RESET_WAIT_MS = 2000
"""...but no longer than this (a dense belt must not keep the link down for ever)."""
SETTLE_MS = 3000
"""After the last part's gate: time for late events before the run is judged."""


# --- the fault plan --------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultPlan:
    """How often each fault strikes. `*_every_s` are mean intervals (the timed faults form
    one random stream, one fault at a time); `*_s` are durations; the rest are
    probabilities per judgement (classifier_error) or per frame on the wire."""

    mega_reset_every_s: float = 0.0
    unplug_every_s: float = 0.0
    unplug_s: float = 2.0
    camera_stall_every_s: float = 0.0
    camera_stall_s: float = 1.5
    classifier_stall_every_s: float = 0.0
    classifier_stall_s: float = 1.2
    trigger_stall_every_s: float = 0.0
    """Vision lines only: the vision trigger gets no CPU (a starved line PC), then works
    through the frames the camera buffered meanwhile."""
    trigger_stall_s: float = 1.2
    classifier_error: float = 0.0
    garble: float = 0.0
    drop: float = 0.0
    lost_ack: float = 0.0
    eye_miss: float = 0.0
    """Photo-eye lines: the chance that the beam misses a part (dust on the reflector, a part
    too close behind another); the Mega never hears of it, and only the camera sees it."""

    @classmethod
    def none(cls) -> FaultPlan:
        return cls()

    @classmethod
    def default(cls) -> FaultPlan:
        """Far above a real line: at 5 parts/s, a Mega reset every 600 parts, an unplugged
        cable every 1,500, a camera stall every 1,000, 1 judgement in 500 failing, 1 frame
        in 500 garbled; on a vision line, a trigger stall every 1,250."""
        return cls(
            mega_reset_every_s=120,
            unplug_every_s=300,
            unplug_s=2.0,
            camera_stall_every_s=200,
            camera_stall_s=1.5,
            classifier_stall_every_s=250,
            classifier_stall_s=1.2,
            trigger_stall_every_s=250,
            trigger_stall_s=1.2,
            classifier_error=0.002,
            garble=0.002,
            drop=0.001,
            lost_ack=0.002,
        )

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """`none`, `default`, or NAME=VALUE pairs (comma-separated) over the default,
        e.g. `default,garble=0.01` or `none,mega_reset_every_s=30`."""
        names = {f.name for f in fields(cls)}
        plan = cls.default()
        for item in (t.strip() for t in text.split(",") if t.strip()):
            if item in ("none", "default"):
                plan = cls.none() if item == "none" else cls.default()
                continue
            name, sep, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in names:
                raise ValueError(
                    f"fault {item!r}: expected none, default or NAME=VALUE with NAME one of "
                    + ", ".join(sorted(names))
                )
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"fault {item!r}: {value!r} is not a number") from None
            if number < 0 or (not name.endswith("_s") and number > 1):
                raise ValueError(f"fault {item!r}: out of range")
            plan = cls(**{**plan.__dict__, name: number})
        return plan


# --- the simulation's parts ------------------------------------------------------------------


@dataclass
class _MegaBoard:
    """The Mega across its boots: the core, its EEPROM, every servo pulse it ever made."""

    core: MegaCore
    eeprom: GateConfig | None = None
    boots: int = 1
    pulses: list[tuple[int, int]] = field(default_factory=list)
    next_due: int = 0

    def reset(self, now_ms: int, cause: int) -> None:
        """RAM lost, the servo back at rest at once (PWM stops), the configuration kept."""
        self._collect(now_ms)
        self.eeprom = self.core.config if self.core.configured else self.eeprom
        self.core = MegaCore(now_ms, cause, self.eeprom)
        self.boots += 1
        self.next_due = now_ms

    def _collect(self, cut_at: int | None) -> None:
        for pulse in self.core.servo_log:
            end = pulse.end_ms if cut_at is None else min(pulse.end_ms, cut_at)
            self.pulses.append((pulse.start_ms, end))
        self.core.servo_log = []

    def all_pulses(self) -> list[tuple[int, int]]:
        self._collect(None)
        merged = sorted(self.pulses)
        self.pulses = merged
        return merged


@dataclass
class _BeltPart:
    index: int
    eye_ms: int
    window: tuple[float, float]
    """Belt ms while the part's centre is in the strike zone."""
    camera_ms: int
    """When its centre crosses the camera's axis (the vision backup sees it then)."""
    label: str
    file: str
    mega_key: tuple[int, int, int] | None = None
    """(boot, part ID, millis) the Mega latched."""
    fate: str = ""
    line_ms: float | None = None
    """Vision-trigger lines: when its centre crosses the trigger line."""
    unseen: str | None = None
    """Vision-trigger lines: why the trigger never saw it cross ("camera_down": no frame
    came near its crossing; "not_found": frames came, and the trigger missed it). Photo-eye
    lines: "eye_missed" (the `eye_miss` fault), "eye_missed_camera_down" (and the camera,
    the other witness, was stalled as it crossed: nothing saw the part)."""


@dataclass(frozen=True)
class _Job:
    uid: int
    wanted_ms: float
    give_up_ms: float
    frame_ms: float | None


class _Wire:
    """One direction of the USB cable: frames delivered WIRE_MS later, or damaged, or lost."""

    def __init__(self, plan: FaultPlan, rng: random.Random, ack_type: int):
        self.plan = plan
        self.rng = rng
        self.ack_type = ack_type
        self.damaged = Counter()

    def carry(self, data: bytes) -> bytes:
        p = self.plan
        if not (p.garble or p.drop or p.lost_ack) or not data:
            return data
        out = bytearray()
        for frame in data.split(b"\x00")[:-1]:
            frame = bytearray(frame)
            roll = self.rng.random()
            if roll < p.garble and frame:
                k = self.rng.randrange(len(frame))
                frame[k] ^= self.rng.randrange(1, 256)
                self.damaged["garbled"] += 1
            elif roll < p.garble + p.drop and frame:
                del frame[self.rng.randrange(len(frame))]
                self.damaged["dropped_byte"] += 1
            elif p.lost_ack and roll < p.garble + p.drop + p.lost_ack and _is_ack(frame, self):
                self.damaged["lost_ack"] += 1
                continue
            out += frame + b"\x00"
        return bytes(out)


def _is_ack(frame: bytes, wire: _Wire) -> bool:
    """The frame's type byte (after COBS, the second body byte) is this direction's ACK."""
    try:
        body = cobs.decode(bytes(frame))
    except cobs.DecodeError:
        return False
    return len(body) > 1 and body[1] == wire.ack_type


# --- the line -----------------------------------------------------------------------------------


class SteppedLine:
    def __init__(
        self,
        calibration: Calibration,
        line: VirtualLineConfig,
        parts: int,
        database: Path,
        plan: FaultPlan | None = None,
        seed: int = 1,
        scores: Callable[[str], float] | None = None,
        judge=None,
        threshold: float = 0.5,
        progress: bool = False,
        max_frame_lag_s: float = 0.05,
        vision: VisionTriggerConfig | None = None,
    ):
        """`scores(file)` gives each part's score from a table; or `judge` (a station Judge)
        judges a rendered frame of each part. One of the two is needed.

        `vision`: a line with no photo-eye, triggered by the camera (the Mega hears of a
        part only when told to fire it); None: the photo-eye line."""
        if (scores is None) == (judge is None):
            raise ValueError("give either a score table or a judge")
        self.calibration = calibration
        self.line = line
        self.plan = plan or FaultPlan.none()
        self.rng = random.Random(seed)
        self.scores = scores
        self.judge = judge
        self.threshold = threshold
        self.progress = progress
        self.max_frame_lag_s = max_frame_lag_s
        self.deadlines = calibration.deadlines()
        self.conveyor = VirtualConveyor(line.model_copy(update={"shuffle_seed": seed}), None, parts)
        self.conveyor.lay_out(0.0, 0.5, whole_ms=True)
        self.trigger = None
        if vision is not None:
            render = self.conveyor.render if judge is not None else None
            min_area = calibration.camera.min_part_area_px
            self.trigger = SteppedTrigger(vision, line, self.conveyor, min_area, render)
        self.belt = [self._belt_part(p) for p in self.conveyor.parts]
        self._camera_times = [part.camera_ms for part in self.belt]
        self.now = 0
        self.board = _MegaBoard(MegaCore(0))
        self.endpoint = HostEndpoint(
            calibration.configure_message(),
            host_timeout_s=1.0,
            name="stepped-mega",
        )
        self.audit = AuditLog(
            database, "stepped", calibration.checksum(), clock_offset_s=0.0, commit_every=5000
        )
        self.metrics = LineMetrics()
        self.records = PartRecords(
            self.audit, self.metrics, pass_sample_every=0, clock=lambda: self.now / 1000
        )
        self.tracker = PartTracker(
            TrackerSettings(
                deadlines=self.deadlines,
                heartbeat_timeout_s=calibration.link.heartbeat_timeout_ms / 1000,
                pulse_s=calibration.servo.pulse_ms / 1000,
                vision_to_gate_s=vision.camera_to_gate_ms / 1000 if vision else None,
            ),
            epoch_base=self.audit.next_epoch() - 1,
            first_uid=self.audit.next_uid(),
        )
        self.to_mega = _Wire(self.plan, self.rng, m.AckEvent.TYPE)
        self.to_host = _Wire(self.plan, self.rng, m.Ack.TYPE)
        self.faults = Counter()
        self.cable_in = True
        self.port_open = False
        self._cable_gen = 0
        self._heap: list = []
        self._seq = 0
        self._jobs: list[_Job] = []
        self._judge_free = 0.0
        self._camera_down: list[tuple[int, int]] = []
        self._classifier_down: list[tuple[int, int]] = []
        self._trigger_down: list[tuple[int, int]] = []
        self._next_eye = 0
        self._host_due = math.inf
        self._tracker_due = math.inf
        self.outcomes: list[Outcome] = []
        self._end_ms = self.belt[-1].window[1] + SETTLE_MS if self.belt else SETTLE_MS

    def _belt_part(self, p) -> _BeltPart:
        lo, hi = self.conveyor.strike_window(p)
        camera = self.conveyor.time_centred_at(p, self.line.camera_x_mm)
        return _BeltPart(
            p.index,
            round(p.eye_time * 1000),
            (lo * 1000, hi * 1000),
            round(camera * 1000),
            p.label,
            p.file,
            line_ms=self.trigger.line_ms(p) if self.trigger else None,
        )

    # --- the clock -----------------------------------------------------------------------

    def _at(self, when_ms: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(self.now, math.ceil(when_ms)), self._seq, action))

    def run(self) -> dict:
        started = time.perf_counter()
        self._at(0, self._open_port)
        self._schedule_next_eye()
        self._schedule_faults()
        bar = tqdm(
            total=len(self.belt), desc="soak", unit="part", mininterval=2, disable=not self.progress
        )
        with bar:
            while self.now <= self._end_ms:
                self.now = self._next_moment()
                while self._heap and self._heap[0][0] <= self.now:
                    heapq.heappop(self._heap)[2]()
                self._tick_mega()
                self._tick_host()
                eyes = self._next_eye - bar.n
                if eyes:
                    bar.update(eyes)
        self.audit.commit()
        summary = self._report(time.perf_counter() - started)
        self.audit.close()
        return summary

    def _next_moment(self) -> int:
        """The next millisecond anything can happen; notes when the host and the tracker
        are due (events at that moment only add later work: a new deadline is a belt
        travel away, a new command is sent at once)."""
        nxt = self._heap[0][0] if self._heap else self._end_ms + 1
        nxt = min(nxt, self.board.next_due)
        due = self.endpoint.next_due() if self.port_open else None
        self._host_due = math.inf if due is None else math.ceil(due * 1000 - 1e-9)
        deadline = self.tracker.next_deadline()
        self._tracker_due = math.inf if deadline is None else math.ceil(deadline * 1000 - 1e-9)
        nxt = min(nxt, self._host_due, self._tracker_due)
        return max(self.now + 1, int(nxt))

    # --- the belt ------------------------------------------------------------------------------

    def _schedule_next_eye(self) -> None:
        if self._next_eye < len(self.belt):
            part = self.belt[self._next_eye]
            self._at(part.eye_ms, lambda: self._photo_eye(part))
            if self.trigger is not None:
                frame = math.ceil(part.line_ms / self.trigger.period_ms - 1e-9)
                self._at(frame * self.trigger.period_ms + TRIGGER_MS, lambda: self._crosses(part))
            elif self.line.camera_x_mm >= 0:
                self._at(part.camera_ms, lambda: self._camera_sees(part))

    def _photo_eye(self, part: _BeltPart) -> None:
        """The part reaches the photo-eye's place (on a vision line: there is none)."""
        self._next_eye += 1
        self._schedule_next_eye()
        if self.trigger is not None:
            return
        if self.plan.eye_miss and self.rng.random() < self.plan.eye_miss:
            self.faults["eye_miss"] += 1
            part.unseen = "eye_missed"
            return
        core = self.board.core
        part_id = core.photo_eye(self.now)
        part.mega_key = (self.board.boots, part_id, core.millis(self.now))
        self._flush_mega()

    def _camera_sees(self, part: _BeltPart) -> None:
        """The camera witness: it reports every part it sees cross (the tracker decides)."""
        if self._in(self._camera_down, self.now):
            if part.unseen == "eye_missed":
                part.unseen = "eye_missed_camera_down"
            return
        t = self.now / 1000
        self._feed(VisionSighting(t, t, backup=True))

    def _crosses(self, part: _BeltPart) -> None:
        """Vision-trigger lines: at the first frame after the part's crossing, the trigger
        reports it (SteppedTrigger.sees), or it is not seen."""
        seen = self.trigger.sees(
            self.conveyor.parts[part.index], lambda t: self._in(self._camera_down, t)
        )
        if seen is None:
            period = self.trigger.period_ms
            near = (part.line_ms - 4 * period, part.line_ms + 4 * period)
            stalled = any(a < near[1] and b > near[0] for a, b in self._camera_down[-4:])
            part.unseen = "camera_down" if stalled else "not_found"
            return
        frame = Frame(None, seen.frame_ms / 1000, int(seen.frame_ms), "stepped camera")
        sighting = VisionSighting(seen.crossed_ms / 1000, seen.frame_ms / 1000, frame=frame)
        stall = self._trigger_down[-1] if self._trigger_down else None
        self._at(self.trigger.looks_at(seen.frame_ms, stall), lambda: self._feed(sighting))

    # --- the Mega and the wire ---------------------------------------------------------------

    def _tick_mega(self) -> None:
        if self.now >= self.board.next_due:
            self.board.core.tick(self.now)
            self._flush_mega()

    def _flush_mega(self) -> None:
        core = self.board.core
        data = core.take_output()
        if data and self.cable_in and self.port_open:
            data = self.to_host.carry(data)
            gen = self._cable_gen
            self._at(self.now + WIRE_MS, lambda: self._to_host(data, gen))
        self.board.next_due = max(self.now + 1, core.next_due_ms(self.now))

    def _to_host(self, data: bytes, gen: int) -> None:
        if gen == self._cable_gen and self.port_open:
            self.endpoint.receive(data, self.now / 1000)
            self._drain_host()

    def _to_mega(self, data: bytes, gen: int) -> None:
        if gen == self._cable_gen:
            self.board.core.receive(data, self.now)
            self._flush_mega()

    def _open_port(self, waiting_since: int | None = None) -> None:
        """The service opens the port: DTR resets the Mega; a fresh handshake."""
        if not self.cable_in:
            self._at(self.now + RECONNECT_MS, self._open_port)
            return
        waiting_since = self.now if waiting_since is None else waiting_since
        safe = self.tracker.reset_is_safe(self.now / 1000, RESET_GUARD_S)
        if not safe and self.now - waiting_since < RESET_WAIT_MS:
            self._at(self.now + 5, lambda: self._open_port(waiting_since))
            return
        self._cable_gen += 1
        self.board.reset(self.now, m.ResetCause.EXTERNAL)
        self.port_open = True
        self.endpoint.opened(self.now / 1000)
        self._drain_host()
        self._flush_mega()

    def _close_port(self, reason: str) -> None:
        if not self.port_open:
            return
        self.port_open = False
        self._cable_gen += 1
        self.endpoint.closed(self.now / 1000, reason)
        self._drain_host()
        self._at(self.now + RECONNECT_MS, self._open_port)

    # --- the host ------------------------------------------------------------------------------

    def _tick_host(self) -> None:
        t = self.now / 1000
        if self.port_open and self._host_due <= self.now:
            self.endpoint.tick(t)
            self._drain_host()
        if self._tracker_due <= self.now:
            self._apply(self.tracker.tick(t))

    def _drain_host(self) -> None:
        wire = self.endpoint.take_output()
        if wire and self.port_open and self.cable_in:
            data = self.to_mega.carry(wire)
            gen = self._cable_gen
            self._at(self.now + WIRE_MS, lambda: self._to_mega(data, gen))
        for notice in self.endpoint.take_notices():
            self._feed(notice)
        if self.endpoint.phase == LinkPhase.FAILED and self.port_open:
            self._close_port(self.endpoint.failure or "link failed")

    def _feed(self, event: object) -> None:
        self._apply(self.tracker.handle(event, self.now / 1000))

    def _apply(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, RECORD_ACTIONS):
                self.records.apply(action)
            elif isinstance(action, JudgeFrame):
                self._queue_judgement(action)
            elif isinstance(action, SendCommand):
                self.endpoint.submit(
                    action.message, self.now / 1000, action.tag, due_at=action.due_at
                )
                self._drain_host()
            else:
                raise TypeError(f"no way to carry out {action!r}")

    # --- the camera and the judge -------------------------------------------------------------

    def _queue_judgement(self, job: JudgeFrame) -> None:
        frame_ms = job.frame.timestamp * 1000 if job.frame is not None else None
        self._jobs.append(_Job(job.uid, job.wanted_at * 1000, job.give_up_at * 1000, frame_ms))
        if len(self._jobs) == 1:
            self._start_judging()

    def _start_judging(self) -> None:
        """The judge worker takes jobs one at a time, as on the line."""
        if not self._jobs:
            return
        job = self._jobs[0]
        frame_ms, found_ms = self._find_frame(job)
        begin = max(self.now, self._judge_free, found_ms)
        begin = self._after(self._classifier_down, begin) if frame_ms is not None else begin
        done = begin + (JUDGE_MS if frame_ms is not None else 0)
        self._judge_free = done
        self._at(done, lambda: self._judged(job, frame_ms))

    def _find_frame(self, job: _Job) -> tuple[float | None, float]:
        """(the frame's time or None, when the worker knows it): FrameBuffer.wait_first_after."""
        if job.frame_ms is not None:
            return job.frame_ms, job.frame_ms
        period = 1000 / self.line.fps
        t = math.ceil(job.wanted_ms / period - 1e-9) * period
        stalled = self._covering(self._camera_down, t)
        if stalled:
            t = math.ceil(stalled[1] / period) * period
        lag_ms = self.max_frame_lag_s * 1000
        if t > job.give_up_ms:
            return None, job.give_up_ms
        if t - job.wanted_ms > lag_ms:
            return None, t
        return t, t

    def _judged(self, job: _Job, frame_ms: float | None) -> None:
        self._jobs.pop(0)
        self._feed(Judged(job.uid, self._judgement(job, frame_ms)))
        self._start_judging()

    def _judgement(self, job: _Job, frame_ms: float | None) -> Judgement:
        if frame_ms is None:
            return Judgement(True, None, FailSafe.NO_FRAME, "no frame", None, None, 0.0)
        part = self._part_at_camera(frame_ms)
        frame = Frame(None, frame_ms / 1000, int(frame_ms), "stepped camera")
        if self.plan.classifier_error and self.rng.random() < self.plan.classifier_error:
            self.faults["classifier_error"] += 1
            return Judgement(
                True, None, FailSafe.CLASSIFIER_ERROR, "injected", frame, None, JUDGE_MS / 1000
            )
        if part is None:
            return Judgement(
                True, None, FailSafe.PART_NOT_FOUND, "no part in view", frame, None, 0.0
            )
        if self.judge is not None:
            image = self.conveyor.render(frame_ms / 1000)
            real = self.judge.judge(Frame(image, frame_ms / 1000, int(frame_ms), "stepped"))
            return Judgement(
                real.reject, real.score, real.failsafe, real.detail, frame, real.roi, real.seconds
            )
        score = self.scores(part.file)
        return Judgement(score >= self.threshold, score, None, "", frame, None, JUDGE_MS / 1000)

    def _part_at_camera(self, frame_ms: float) -> _BeltPart | None:
        """The part wholly in view nearest the camera's axis at `frame_ms` (table mode: the
        part the locator would find); None if no part is wholly in the frame."""
        c = self.line
        px_per_ms = c.belt_speed_mm_s * c.px_per_mm / 1000
        best, gap = None, float("inf")
        # By time, not by the parts the photo-eye has seen so far: a judge stalled for 1.2 s
        # on a line whose deadline is later than that judges a frame 6 parts back.
        k = bisect.bisect(self._camera_times, frame_ms)
        for part in self.belt[max(0, k - 3) : k + 3]:
            d = abs(part.camera_ms - frame_ms)
            image = self.conveyor.parts[part.index].image
            if d < gap and d * px_per_ms <= (c.frame_width - image.shape[1]) / 2:
                best, gap = part, d
        return best

    # --- faults --------------------------------------------------------------------------------

    def _schedule_faults(self) -> None:
        """Timed faults strike one at a time, each kind at its own mean rate.

        The next fault comes only after the last one's parts have left the gate: two
        faults at once can defeat any host (a Mega that reboots while its cable is out
        forgets parts nobody can re-arm), and the soak is a test of the station's rules,
        not of how unlucky a belt can be.
        """
        p = self.plan
        self._timed_faults = [
            (every, duration, strike)
            for every, duration, strike in (
                (p.mega_reset_every_s, 0.0, self._mega_reset),
                (p.unplug_every_s, p.unplug_s, self._unplug),
                (p.camera_stall_every_s, p.camera_stall_s, self._camera_stall),
                (p.classifier_stall_every_s, p.classifier_stall_s, self._classifier_stall),
                (p.trigger_stall_every_s, p.trigger_stall_s, self._trigger_stall),
            )
            if every > 0 and (strike != self._trigger_stall or self.trigger is not None)
        ]
        if self._timed_faults:
            self._next_fault(quiet_ms=0)

    def _next_fault(self, quiet_ms: float) -> None:
        rates = [1 / every for every, _, _ in self._timed_faults]
        gap_ms = self.rng.expovariate(sum(rates)) * 1000
        every, duration_s, strike = self.rng.choices(self._timed_faults, weights=rates)[0]
        duration_ms = round(duration_s * 1000)

        def fire() -> None:
            if self.belt and self.now < self.belt[-1].eye_ms:  # faults end with the parts
                strike(duration_ms)
                settle = duration_ms + RECONNECT_MS + self.deadlines.gate_travel_ms + 1000
                self._next_fault(quiet_ms=settle)

        self._at(self.now + quiet_ms + gap_ms, fire)

    def _mega_reset(self, _: int) -> None:
        self.faults["mega_reset"] += 1
        cause = self.rng.choice([m.ResetCause.EXTERNAL, m.ResetCause.WATCHDOG])
        self.board.reset(self.now, cause)
        self._flush_mega()

    def _unplug(self, duration_ms: int) -> None:
        self.faults["unplug"] += 1
        self.cable_in = False
        self._close_port("unplugged")

        def plug() -> None:
            self.cable_in = True

        self._at(self.now + duration_ms, plug)

    def _camera_stall(self, duration_ms: int) -> None:
        self.faults["camera_stall"] += 1
        self._camera_down.append((self.now, self.now + duration_ms))

    def _classifier_stall(self, duration_ms: int) -> None:
        self.faults["classifier_stall"] += 1
        self._classifier_down.append((self.now, self.now + duration_ms))

    def _trigger_stall(self, duration_ms: int) -> None:
        """The vision trigger's thread gets no CPU; when it is back, the first frame it looks
        at is as old as the stall (LagWatch, as on the line, may report it)."""
        self.faults["trigger_stall"] += 1
        start, end = self.now, self.now + duration_ms
        self._trigger_down.append((start, end))
        looked_at = self.trigger.looks_at(start, (start, end))
        lag = self.trigger.lag.check(start / 1000, looked_at / 1000)
        if lag is not None:
            self._at(looked_at, lambda: self._feed(lag))

    @staticmethod
    def _covering(spans: list[tuple[int, int]], t: float) -> tuple[int, int] | None:
        for span in reversed(spans[-4:]):
            if span[0] <= t < span[1]:
                return span
        return None

    def _in(self, spans: list[tuple[int, int]], t: float) -> bool:
        return self._covering(spans, t) is not None

    def _after(self, spans: list[tuple[int, int]], t: float) -> float:
        span = self._covering(spans, t)
        return span[1] if span else t

    # --- the verdict of the run -----------------------------------------------------------------

    def _report(self, wall_s: float) -> dict:
        pulses = self.board.all_pulses()
        starts = [p[0] for p in pulses]

        for part in self.belt:
            lo, hi = part.window
            k = bisect.bisect_right(starts, hi)
            hit = any(end > lo for _, end in pulses[max(0, k - 3) : k])
            part.fate = "rejected" if hit else "passed"
        rows = _rows(self.audit.db)
        self.outcomes = [Outcome.of(part, rows.match(part, self.deadlines)) for part in self.belt]
        return _summary(self.outcomes, self, wall_s)


# --- joining the belt's ledger with the audit -----------------------------------------------


class _ByTime:
    """Rows stamped with a time, each taken once by the belt part nearest to it: a bisect,
    not a scan (10^5 vision rows against 10^5 parts)."""

    def __init__(self, column: str):
        self.column = column
        self._times: list[float] = []
        self._rows: list = []

    def add(self, row) -> None:
        k = bisect.bisect(self._times, row[self.column])
        self._times.insert(k, row[self.column])
        self._rows.insert(k, row)

    def take_nearest(self, when: float, within: float):
        k = bisect.bisect(self._times, when)
        near = [i for i in (k - 1, k) if 0 <= i < len(self._times)]
        if not near:
            return None
        best = min(near, key=lambda i: abs(self._times[i] - when))
        if abs(self._times[best] - when) > within:
            return None
        del self._times[best]
        return self._rows.pop(best)


@dataclass
class _Rows:
    by_mega: dict[tuple[int, int], _ByTime]
    backup: _ByTime
    gate_only: dict[int, _ByTime]
    vision: _ByTime

    def match(self, part: _BeltPart, deadlines) -> sqlite3.Row | None:
        if part.line_ms is not None:  # stamped with when it crossed the trigger line
            return self.vision.take_nearest(part.line_ms / 1000, 0.05)
        if part.mega_key is not None:
            _, part_id, millis = part.mega_key
            eye = self.by_mega.get((part_id, millis))
            row = eye.take_nearest(part.eye_ms / 1000, 0.05) if eye else None
            if row is not None:
                return row
            gate_due = (part.eye_ms + deadlines.gate_travel_ms) / 1000
            gated = self.gate_only.get(part_id)
            row = gated.take_nearest(gate_due, 1.5) if gated else None
            if row is not None:
                return row
        return self.backup.take_nearest(part.eye_ms / 1000, 0.05)


def _rows(db: sqlite3.Connection) -> _Rows:
    db.row_factory = sqlite3.Row
    rows = _Rows({}, _ByTime("trigger_time"), {}, _ByTime("trigger_time"))
    for r in db.execute("SELECT * FROM parts ORDER BY uid"):
        source = r["trigger_source"]
        if source == "photo_eye":
            key = (r["part_id"], r["mcu_trigger_ms"])
            rows.by_mega.setdefault(key, _ByTime("trigger_time")).add(r)
        elif source == "vision_backup":
            rows.backup.add(r)
        elif source == "vision":
            rows.vision.add(r)
        elif source == "gate_only" and r["gate_time"] is not None:
            rows.gate_only.setdefault(r["part_id"], _ByTime("gate_time")).add(r)
    return rows


@dataclass(frozen=True)
class Outcome:
    """One part on the belt joined with its audit row (None fields: no row)."""

    index: int
    label: str
    fate: str
    audited: bool
    uid: int | None
    verdict: str | None
    score: float | None
    failsafe: str | None
    gate_action: str | None
    gate_reason: str | None
    note: str | None

    @classmethod
    def of(cls, part: _BeltPart, row) -> Outcome:
        get = (lambda k: row[k]) if row is not None else (lambda k: None)
        return cls(
            part.index,
            part.label,
            part.fate,
            row is not None,
            get("uid"),
            get("verdict"),
            get("score"),
            get("failsafe_reason"),
            get("gate_action"),
            get("gate_reason"),
            get("note"),
        )

    @property
    def routed_as_verdict(self) -> bool:
        return self.verdict is not None and (self.verdict == "reject") == (self.fate == "rejected")

    @property
    def model_escape(self) -> bool:
        """A defective part the model judged OK, and the line did as told."""
        return self.verdict == "pass" and self.failsafe is None and self.score is not None


def _summary(outcomes: list[Outcome], line: SteppedLine, wall_s: float) -> dict:
    defects_passed = [o for o in outcomes if o.label == "defective" and o.fate == "passed"]
    line_escapes = [o for o in defects_passed if not (o.model_escape and o.routed_as_verdict)]
    vision = _vision_summary(outcomes, line) if line.trigger is not None else None
    reported = _reported_by_a_vision_line(line) if vision else set()
    misrouted = [o for o in outcomes if not o.routed_as_verdict and o.gate_action is not None]
    good_rejected = Counter(
        o.failsafe or ("model" if o.verdict == "reject" else f"gate_{o.gate_reason}")
        for o in outcomes
        if o.label == "ok" and o.fate == "rejected"
    )
    stats = line.endpoint.stats
    return {
        "parts": len(outcomes),
        "audited": sum(o.audited for o in outcomes),
        "unaudited": sum(not o.audited for o in outcomes),
        "unaudited_parts": [o.index for o in outcomes if not o.audited][:20],
        "lost": sum(o.audited and o.verdict is None for o in outcomes),
        "routed_as_verdict": sum(o.routed_as_verdict for o in outcomes),
        "misrouted_gate_confirmed": len(misrouted),
        "misrouted_gate_unknown": sum(
            o.audited and not o.routed_as_verdict and o.gate_action is None for o in outcomes
        ),
        "defects_passed": len(defects_passed),
        "defects_passed_model_escape": len(defects_passed) - len(line_escapes),
        "defects_passed_line": len(line_escapes),
        "line_escapes": [
            {
                "index": o.index,
                "verdict": o.verdict,
                "failsafe": o.failsafe,
                "gate": o.gate_action,
                "note": o.note,
            }
            for o in line_escapes[:20]
        ],
        "good_rejected": sum(good_rejected.values()),
        "good_rejected_by_reason": dict(sorted(good_rejected.items())),
        "failsafe_by_reason": dict(
            sorted(Counter(o.failsafe for o in outcomes if o.failsafe).items())
        ),
        "gate_unconfirmed": sum(o.audited and o.gate_action is None for o in outcomes),
        "faults_injected": dict(sorted(line.faults.items())),
        "wire_damage": dict(sorted((line.to_mega.damaged + line.to_host.damaged).items())),
        "link": {
            "retransmits": stats.retransmits,
            "frame_errors": dict(sorted(stats.frame_errors.items())),
            "reconnects": stats.reconnects,
            "mega_boots": line.board.boots,
        },
        "alarms": line.records.alarms_raised,
        **({"vision_line": vision} if vision else {}),
        **({"eye_missed": _eye_missed(outcomes, line)} if line.plan.eye_miss else {}),
        "silent": {
            "unaudited": sum(not o.audited and o.index not in reported for o in outcomes),
            "defects_passed_line": sum(o.index not in reported for o in line_escapes),
            "misrouted_gate_confirmed": sum(o.index not in reported for o in misrouted),
        },
        "line_time_s": round(line.now / 1000, 1),
        "wall_s": round(wall_s, 1),
        "parts_per_wall_s": round(len(outcomes) / wall_s, 1) if wall_s else None,
    }


def _vision_summary(outcomes: list[Outcome], line: SteppedLine) -> dict:
    """What a line with no photo-eye cannot help, and whether the station said so.

    `unseen_camera_down`: parts that crossed while no frame came (camera stall); no audit
    row, the camera alarm says parts pass unseen. `passed_unfired`: reject verdicts the
    Mega could not be told before the gate (the link down from judgement to gate time,
    or, `_late`, the trigger seeing the part after its gate time: a starved PC, which
    `vision_lag` alarms); the audit says passed and `gate_mismatch` is alarmed.
    `passed_unknown`: rejects sent just as the link went, back only after the gate time;
    the audit says the outcome is unknown and `gate_unknown` is alarmed. Anything else is
    `silent`."""
    unseen = [(p, o) for p, o in zip(line.belt, outcomes) if p.unseen == "camera_down"]
    unfired = [o for o in outcomes if _passed_unfired(o)]
    unknown = [o for o in outcomes if _passed_unknown(o)]
    return {
        "unseen_camera_down": len(unseen),
        "unseen_camera_down_defective": sum(o.label == "defective" for _, o in unseen),
        "unseen_not_found": sum(p.unseen == "not_found" for p in line.belt),
        "passed_unfired": len(unfired),
        "passed_unfired_defective": sum(o.label == "defective" for o in unfired),
        "passed_unfired_late": sum(o.failsafe == "late" for o in unfired),
        "vision_lag_alarms": line.metrics.camera_errors["vision_lag"],
        "passed_unknown": len(unknown),
        "passed_unknown_defective": sum(o.label == "defective" for o in unknown),
    }


def _eye_missed(outcomes: list[Outcome], line: SteppedLine) -> dict:
    """Parts the photo-eye missed (the `eye_miss` fault): the camera witness rejects them
    (`not_reported`); those that crossed the camera while it was stalled nobody saw, and
    they pass with no audit row (counted `silent`: nothing said so)."""
    missed = [(p, o) for p, o in zip(line.belt, outcomes) if p.unseen]
    blind = [o for p, o in missed if p.unseen == "eye_missed_camera_down"]
    return {
        "parts": len(missed),
        "rejected_not_reported": sum(o.failsafe == "not_reported" for _, o in missed),
        "camera_down_too": len(blind),
        "camera_down_too_defective": sum(o.label == "defective" for o in blind),
    }


def _reported_by_a_vision_line(line: SteppedLine) -> set[int]:
    """Belt indexes of the parts a vision line loses by its nature, and says so."""
    return {p.index for p in line.belt if p.unseen == "camera_down"} | {
        o.index for o in line.outcomes if _passed_unfired(o) or _passed_unknown(o)
    }


def _passed_unfired(o: Outcome) -> bool:
    """Audited as passed against its reject verdict, and it did pass."""
    return o.verdict == "reject" and o.gate_action == "passed" and o.fate == "passed"


def _passed_unknown(o: Outcome) -> bool:
    """A reject whose gate outcome the station says it cannot know (alarmed), and it passed."""
    return (
        o.verdict == "reject"
        and o.gate_action is None
        and o.fate == "passed"
        and any(
            (o.note or "").startswith(f"gate outcome unknown: {why}")
            for why in (GATE_UNKNOWN, PULSE_CUT)
        )
    )
