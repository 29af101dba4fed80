"""The station's main loop: PART in, frame found, judged, VERDICT out, GATE recorded.

One thread owns all part state (this loop); the others only put things on
its inbox: the link's reader (Mega events, link up/down), the judge worker
(judgements) and the vision trigger (parts it saw). So the order of what
happened to a part is the order of the inbox, and nothing needs a lock.

The rules that keep a defective part from passing:
- every PART gets an audit row before anything else is done with it;
- a part with no verdict by its deadline is sent a reject (the Mega would
  reject it anyway at its decision point, but the host records why);
- when the link drops, every part not yet gated is recorded as a fail-safe
  reject; the Mega rejects what it holds on its own, and after the link is
  back (a new boot: its part FIFO is gone) the host re-arms every such part
  still short of the gate with a VISION_REJECT timed by the belt speed;
- a judgement that comes too late is recorded but never sent.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from station.audit import AuditLog, ImageStore
from station.calibration import Calibration
from station.camera.feed import CameraFeed
from station.camera.frames import Frame, FrameBuffer
from station.judge import FailSafe, Judge, Judgement
from station.link import messages as m
from station.link.session import LinkError, LinkState, MegaSession
from station.recording import Recorder
from station.service.metrics import LineMetrics
from station.service.systemd_notify import SystemdNotifier

log = logging.getLogger(__name__)

VISION_ID_BIT = 0x8000_0000
FRAME_MARGIN_S = 0.03
"""Stop waiting for a frame this long before the verdict deadline: time to classify and send."""


@dataclass
class PartInFlight:
    uid: int
    epoch: int
    part_id: int
    source: str
    trigger_time: float
    """Host monotonic s at the trigger (photo-eye edge, or vision line crossing)."""
    deadline: float
    gate_due: float
    judgement: Judgement | None = None
    verdict: str | None = None
    failsafe: str | None = None
    armed_epoch: int | None = None
    """The link epoch whose Mega holds this part (re-armed orphans: the epoch they were sent in)."""


@dataclass(frozen=True)
class JudgeJob:
    uid: int
    frame_time: float
    give_up_at: float
    frame: Frame | None = None
    """Set when the frame is already chosen (vision trigger)."""


@dataclass(frozen=True)
class JudgeResult:
    uid: int
    judgement: Judgement


@dataclass(frozen=True)
class VisionSighting:
    """The vision trigger saw a part cross its line in `frame`.

    `backup`: seen on a photo-eye line while the link was down, when the
    Mega's PART events cannot reach the host.
    """

    frame: Frame
    trigger_time: float
    backup: bool = False


@dataclass(frozen=True)
class CameraProblem:
    kind: str
    detail: str


@dataclass
class Parts:
    """Parts by audit uid, and the current epoch's Mega IDs to uids."""

    by_uid: dict[int, PartInFlight] = field(default_factory=dict)
    by_mega_id: dict[int, int] = field(default_factory=dict)
    orphans: list[PartInFlight] = field(default_factory=list)
    """Parts not yet gated when the link dropped: re-armed when it returns."""


class JudgeWorker:
    """Finds each part's frame and judges it, one part at a time, off the main loop.

    If the classifier hangs, this thread hangs with it; the main loop keeps
    its deadlines and fails the waiting parts safe.
    """

    def __init__(
        self, judge: Judge, frames: FrameBuffer, results: queue.Queue, max_frame_lag_s: float
    ):
        self.max_frame_lag_s = max_frame_lag_s
        self.judge = judge
        self.frames = frames
        self.results = results
        self.jobs: queue.Queue[JudgeJob | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="judge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.jobs.put(None)

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            frame = job.frame or self.frames.wait_first_after(
                job.frame_time, job.give_up_at, self.max_frame_lag_s
            )
            self.results.put(JudgeResult(job.uid, self.judge.judge(frame)))


class LineStation:
    def __init__(
        self,
        calibration: Calibration,
        link: MegaSession,
        inbox: queue.Queue,
        frames: FrameBuffer,
        feed: CameraFeed,
        judge: Judge,
        audit: AuditLog,
        images: ImageStore | None,
        metrics: LineMetrics,
        notifier: SystemdNotifier | None = None,
        pass_sample_every: int = 100,
        auto_reset_faults: bool = True,
        summary_every_s: float = 60.0,
        vision_to_gate_s: float | None = None,
        max_frame_lag_s: float = 0.05,
        recorder: Recorder | None = None,
    ):
        self.calibration = calibration
        self.link = link
        self.inbox = inbox
        self.frames = frames
        self.feed = feed
        self.worker = JudgeWorker(judge, frames, inbox, max_frame_lag_s)
        self.audit = audit
        self.images = images
        self.recorder = recorder
        """`station run --record`: judged frames kept for `station replay`."""
        self.metrics = metrics
        self.notifier = notifier or SystemdNotifier({})
        self.pass_sample_every = pass_sample_every
        self.auto_reset_faults = auto_reset_faults
        self.summary_every_s = summary_every_s
        self.vision_to_gate_s = vision_to_gate_s
        """Vision trigger: from the trigger line to the gate at the nominal belt speed."""
        self.parts = Parts()
        self.epoch = audit.next_epoch() - 1
        self._last_part_id: int | None = None
        self._vision_seq = 0
        self._passes_seen = 0
        self._last_summary = time.monotonic()
        self._last_ping = 0.0
        self._link_up_at = 0.0
        self.stopped_at: float | None = None
        """When the loop stopped taking parts (the virtual line's report ends there)."""
        self._stopping = threading.Event()

    # --- life cycle ----------------------------------------------------------------

    def request_stop(self) -> None:
        """SIGTERM: finish the parts in flight, then stop (the servo is left at rest)."""
        self._stopping.set()

    def run(self, drain_timeout_s: float | None = None) -> None:
        status = (
            f"running: model {self.audit.model_version}, calibration {self.audit.calibration_crc}"
        )
        self.notifier.ready(status)
        log.info("station ready (%s)", status)
        drain_until: float | None = None
        while True:
            self._step(timeout=0.02)
            if self._stopping.is_set():
                if drain_until is None:
                    drain_until = time.monotonic() + (
                        drain_timeout_s or self.calibration.gate_travel_ms / 1000 + 1.0
                    )
                    self.notifier.stopping()
                    log.info("stopping: finishing %d parts in flight", len(self.parts.by_uid))
                if not self.parts.by_uid or time.monotonic() > drain_until:
                    break
        self.stopped_at = time.monotonic()
        self._shutdown()

    def _shutdown(self) -> None:
        for part in list(self.parts.by_uid.values()):
            self.audit.update(part.uid, note="gate outcome unknown: station stopped first")
        # The last fire ends within one pulse; wait for it so the servo is at rest.
        time.sleep(self.calibration.servo.pulse_ms / 1000)
        self.worker.stop()
        self.feed.stop()
        self.link.close()
        if self.images:
            self.images.close()
        if self.recorder:
            self.recorder.close()
        log.info("stopped: %s", self.metrics.summary_line())

    # --- the loop ------------------------------------------------------------------

    def _step(self, timeout: float) -> None:
        try:
            item = self.inbox.get(timeout=self._time_to_next_deadline(timeout))
        except queue.Empty:
            item = None
        if item is not None:
            self._handle(item)
        self._enforce_deadlines()
        self._housekeeping()

    def _time_to_next_deadline(self, cap: float) -> float:
        pending = [p.deadline for p in self.parts.by_uid.values() if p.verdict is None]
        if not pending:
            return cap
        return max(0.0, min(cap, min(pending) - time.monotonic()))

    def _handle(self, item: object) -> None:
        if isinstance(item, JudgeResult):
            self._on_judgement(item)
        elif isinstance(item, m.Part):
            self._on_part(item)
        elif isinstance(item, m.Gate):
            self._on_gate(item)
        elif isinstance(item, m.FaultEvent):
            self._on_fault(item)
        elif isinstance(item, LinkState):
            self._on_link_state(item)
        elif isinstance(item, VisionSighting):
            self._on_vision(item)
        elif isinstance(item, CameraProblem):
            self._on_camera_problem(item)
        else:
            log.warning("unexpected inbox item %r", item)

    # --- parts ---------------------------------------------------------------------

    def _on_part(self, msg: m.Part) -> None:
        now = time.monotonic()
        synced = self.link.clock.to_host(msg.mcu_time_ms)
        trigger = now if synced is None else min(synced, now)
        if self._last_part_id is not None and msg.part_id > self._last_part_id + 1:
            missed = msg.part_id - self._last_part_id - 1
            self.metrics.missed_triggers(missed)
            self._alarm(
                "missed_trigger",
                f"part IDs {self._last_part_id + 1}..{msg.part_id - 1} "
                "were counted by the Mega but never reported",
            )
        self._last_part_id = max(msg.part_id, self._last_part_id or 0)
        part = self._new_part(msg.part_id, "photo_eye", trigger, msg.mcu_time_ms)
        delay = self.calibration.camera.trigger_delay_ms / 1000
        self.worker.jobs.put(JudgeJob(part.uid, trigger + delay, part.deadline - FRAME_MARGIN_S))

    def link_recently_down(self, grace_s: float) -> bool:
        """For the vision backup: the link is down, or came up less than `grace_s` ago."""
        if not self.link.connected.is_set():
            return True
        return time.monotonic() - self._link_up_at < grace_s

    def _on_vision(self, sighting: VisionSighting) -> None:
        if sighting.backup:
            self._on_backup_sighting(sighting)
            return
        part = self._new_part(self._next_vision_id(), "vision", sighting.trigger_time, None)
        self.worker.jobs.put(
            JudgeJob(part.uid, sighting.frame.timestamp, part.deadline, sighting.frame)
        )

    def _on_backup_sighting(self, sighting: VisionSighting) -> None:
        """A part the camera saw while the Mega could not report it: reject it, re-arm later.

        Parts already known from a PART event are recognised by time: the camera
        sees a part `trigger_delay_ms` after the photo-eye does.
        """
        cal = self.calibration
        eye_time = sighting.trigger_time - cal.camera.trigger_delay_ms / 1000
        tolerance = 0.05
        known = list(self.parts.by_uid.values()) + self.parts.orphans
        if any(abs(p.trigger_time - eye_time) < tolerance for p in known):
            return
        part = self._new_part(
            self._next_vision_id(),
            "vision_backup",
            eye_time,
            None,
            note="seen by the camera while the link was down",
        )
        self.parts.by_uid.pop(part.uid)
        part.verdict, part.failsafe = "reject", FailSafe.LINK_LOST.value
        self.metrics.verdict_sent(True, part.failsafe, None, None)
        self.audit.update(
            part.uid,
            frame_time=sighting.frame.timestamp,
            verdict="reject",
            failsafe_reason=part.failsafe,
            verdict_time=time.monotonic(),
            image_path=self._keep_image(part, sighting.frame),
        )
        self.parts.orphans.append(part)
        if self.link.connected.is_set():
            self._rearm_orphans()

    def _next_vision_id(self) -> int:
        self._vision_seq = self._vision_seq % 0x7FFF_FFFF + 1
        return VISION_ID_BIT | self._vision_seq

    def _new_part(
        self, part_id: int, source: str, trigger: float, mcu_ms: int | None, note: str | None = None
    ) -> PartInFlight:
        uid = self.audit.new_part(self.epoch, part_id, source, mcu_ms, trigger, note)
        cal = self.calibration
        part = PartInFlight(
            uid=uid,
            epoch=self.epoch,
            part_id=part_id,
            source=source,
            trigger_time=trigger,
            deadline=trigger
            + (
                self.vision_to_gate_s / 2
                if source == "vision" and self.vision_to_gate_s
                else cal.verdict_deadline_ms / 1000
            ),
            gate_due=trigger
            + (
                self.vision_to_gate_s
                if source == "vision" and self.vision_to_gate_s
                else cal.gate_travel_ms / 1000
            ),
        )
        self.parts.by_uid[uid] = part
        self.parts.by_mega_id[part_id] = uid
        self.metrics.part_triggered()
        return part

    def _on_judgement(self, result: JudgeResult) -> None:
        part = self.parts.by_uid.get(result.uid)
        j = result.judgement
        if part is None or part.verdict is not None:
            # Too late: the part was already failed safe. Keep the score for the record.
            self.audit.update(result.uid, score=j.score, note=f"late judgement ({j.verdict})")
            return
        part.judgement = j
        failsafe = j.failsafe.value if j.failsafe else None
        self._send_verdict(part, j.reject, failsafe, j)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for part in list(self.parts.by_uid.values()):
            if part.verdict is None and now >= part.deadline:
                log.error("part %d: no judgement by the deadline; rejecting", part.part_id)
                self._send_verdict(part, True, FailSafe.CLASSIFIER_TIMEOUT.value, None)

    def _send_verdict(
        self, part: PartInFlight, reject: bool, failsafe: str | None, j: Judgement | None
    ) -> None:
        part.verdict = "reject" if reject else "pass"
        part.failsafe = failsafe
        if part.source == "vision":
            error = self._send_vision(part, reject)
        else:
            error = self._send_to_mega(m.Verdict(part.part_id, int(reject)))
        if error == m.Error.LATE.name:
            part.verdict, part.failsafe = "reject", FailSafe.LATE.value
        elif error is not None:
            part.failsafe = part.failsafe or FailSafe.LINK_LOST.value
            part.verdict = "reject"
        sent = time.monotonic()
        frame = j.frame if j else None
        self.metrics.verdict_sent(
            part.verdict == "reject",
            part.failsafe,
            sent - frame.timestamp if frame and j.failsafe is None else None,
            sent - part.trigger_time if j and j.failsafe is None else None,
        )
        self.audit.update(
            part.uid,
            frame_time=frame.timestamp if frame else None,
            verdict_time=sent,
            score=j.score if j else None,
            verdict=part.verdict,
            failsafe_reason=part.failsafe,
            image_path=self._keep_image(part, frame),
            note=(j.detail or None) if j else (f"mega: {error}" if error else None),
        )
        if self.recorder and j and frame:
            self.recorder.part_judged(
                part.uid,
                frame,
                j,
                {
                    "part_id": part.part_id,
                    "link_epoch": part.epoch,
                    "trigger_source": part.source,
                    "trigger_time": self.audit.wall(part.trigger_time),
                    "verdict_time": self.audit.wall(sent),
                    "verdict": part.verdict,
                    "failsafe_reason": part.failsafe,
                    "model_version": self.audit.model_version,
                    "calibration_checksum": self.audit.calibration_crc,
                },
            )

    def _send_vision(self, part: PartInFlight, reject: bool) -> str | None:
        if not reject:
            # Nothing to tell the Mega: with no photo-eye it tracks only what it must fire.
            self._gated(part, "passed", "not_actuated", time.monotonic())
            return None
        delay_ms = int((part.gate_due - time.monotonic()) * 1000)
        if delay_ms < 0:
            self._alarm(
                "vision_late", f"part {part.part_id & 0x7FFF_FFFF} judged after its gate time"
            )
            return m.Error.LATE.name
        return self._send_to_mega(m.VisionReject(part.part_id & 0x7FFF_FFFF, min(delay_ms, 65535)))

    def _send_to_mega(self, msg: m.Message) -> str | None:
        """Send a command; None if the Mega took it, else why not (the Mega then fails safe)."""
        try:
            reply = self.link.command(msg)
        except LinkError as exc:
            log.error("%s not delivered: %s", type(msg).__name__, exc)
            return "link_down"
        error = m.Error(getattr(reply, "error", m.Error.OK))
        if error != m.Error.OK:
            log.error("%s refused by the Mega: %s", msg, error.name)
            return error.name
        return None

    def _keep_image(self, part: PartInFlight, frame: Frame | None) -> str | None:
        if self.images is None or frame is None:
            return None
        if part.verdict == "pass":
            self._passes_seen += 1
            if not self.pass_sample_every or self._passes_seen % self.pass_sample_every:
                return None
        day = time.strftime("%Y-%m-%d")
        name = f"{day}/{part.uid:09d}_{part.verdict}_{part.failsafe or 'judged'}.png"
        path = self.images.save(name, frame.image)
        return str(path) if path else None

    # --- gate, faults, link -----------------------------------------------------------

    def _on_gate(self, msg: m.Gate) -> None:
        if msg.part_id == 0:
            log.info("test fire done")
            return
        action = "fired" if msg.action == m.GateAction.FIRED else "passed"
        reason = m.GateReason(msg.reason).name.lower()
        uid = self.parts.by_mega_id.pop(msg.part_id, None)
        if msg.part_id & VISION_ID_BIT and uid is None:
            uid = self._orphan_uid(msg.part_id)
        if uid is None:
            # A part the Mega saw but never reported (its PART was lost): record it now.
            part = self._new_part(
                msg.part_id,
                "gate_only",
                time.monotonic(),
                None,
                note="PART never received; known from its GATE event",
            )
            self.parts.by_mega_id.pop(msg.part_id, None)
            part.verdict, part.failsafe = "reject", f"mega_{reason}"
            self.audit.update(part.uid, verdict="reject", failsafe_reason=part.failsafe)
            uid = part.uid
        part = self.parts.by_uid.get(uid) or next(p for p in self.parts.orphans if p.uid == uid)
        self._gated(part, action, reason, time.monotonic())

    def _orphan_uid(self, vision_id: int) -> int | None:
        for part in self.parts.orphans:
            if part.part_id == vision_id:
                return part.uid
        return None

    def _gated(self, part: PartInFlight, action: str, reason: str, when: float) -> None:
        self.parts.by_uid.pop(part.uid, None)
        if part in self.parts.orphans:
            self.parts.orphans.remove(part)
        mega_failsafe = reason if reason not in ("verdict", "vision", "not_actuated") else None
        self.metrics.gated(action, mega_failsafe)
        if (part.verdict == "reject") != (action == "fired"):
            self._alarm(
                "gate_mismatch",
                f"part {part.part_id}: verdict {part.verdict} but the gate {action} ({reason})",
            )
        self.audit.update(part.uid, gate_action=action, gate_reason=reason, gate_time=when)
        if self.recorder:
            self.recorder.part_changed(
                part.uid, gate_action=action, gate_reason=reason, gate_time=self.audit.wall(when)
            )

    def _on_fault(self, msg: m.FaultEvent) -> None:
        name = m.Fault(msg.code).name
        self.metrics.fault(name)
        self._alarm("mega_fault", f"{name} (detail {msg.detail})")
        if self.auto_reset_faults and self.link.connected.is_set():
            if self._send_to_mega(m.ResetFault()) is None:
                log.warning("fault %s cleared; sorting resumes", name)

    def _on_link_state(self, state: LinkState) -> None:
        if state.up:
            self._link_up_at = time.monotonic()
            self.epoch += 1
            self._last_part_id = None
            self.parts.by_mega_id.clear()
            self._alarm("link_up", f"epoch {self.epoch}: {state.reason}")
            self._rearm_orphans()
            return
        self._alarm("link_down", state.reason)
        for part in list(self.parts.by_uid.values()):
            self.parts.by_uid.pop(part.uid)
            kept = self._pass_survives(part, state)
            if kept:
                self.audit.update(part.uid, note=kept)
                continue
            if part.verdict != "reject":
                if part.verdict == "pass":
                    self.metrics.pass_revoked()
                part.verdict, part.failsafe = "reject", FailSafe.LINK_LOST.value
                self.metrics.verdict_sent(True, part.failsafe, None, None)
                self.audit.update(
                    part.uid,
                    verdict="reject",
                    failsafe_reason=part.failsafe,
                    verdict_time=time.monotonic(),
                )
                if self.recorder:
                    self.recorder.part_changed(
                        part.uid, verdict="reject", failsafe_reason=part.failsafe
                    )
            self.parts.orphans.append(part)

    def _pass_survives(self, part: PartInFlight, state: LinkState) -> str | None:
        """Why a pass verdict still stands after the link went down, or None if it cannot.

        Lost contact means reject (PROTOCOL.md): once the Mega misses our heartbeat it
        fires every part it still holds, passes included. A pass stands only where the
        part certainly leaves the gate before that, or the Mega has forgotten it (a
        reboot) so that nothing will fire it. Anything else becomes a fail-safe reject,
        re-armed when the link is back.
        """
        if part.verdict != "pass" or part.source != "photo_eye":
            return None
        if state.rebooted:
            return "the Mega rebooted and forgot this part: it passes, as judged"
        timeout_s = self.calibration.link.heartbeat_timeout_ms / 1000
        if part.gate_due < state.heard_by_mega_at + timeout_s:
            return "link lost; the part reaches the gate before the Mega can time out"
        return None

    def _rearm_orphans(self) -> None:
        """After a reconnect the Mega is freshly booted: fire for the parts it forgot."""
        now = time.monotonic()
        for part in list(self.parts.orphans):
            if part.armed_epoch == self.epoch:
                continue  # already re-armed on this boot
            remaining_ms = (part.gate_due - now) * 1000
            if remaining_ms < 20:
                self.parts.orphans.remove(part)
                self.audit.update(part.uid, note="gate outcome unknown: link down at gate time")
                continue
            rearm_id = self._next_vision_id()
            error = self._send_to_mega(m.VisionReject(rearm_id & 0x7FFF_FFFF, int(remaining_ms)))
            if error is None:
                part.part_id = rearm_id
                part.armed_epoch = self.epoch
                self.audit.update(part.uid, note=f"re-armed after link loss as {rearm_id:#x}")
            else:
                self.parts.orphans.remove(part)
                self.audit.update(part.uid, note=f"re-arm after link loss refused: {error}")

    # --- housekeeping ------------------------------------------------------------------

    def _alarm(self, kind: str, detail: str) -> None:
        level = logging.INFO if kind == "link_up" else logging.ERROR
        log.log(level, "%s: %s", kind, detail)
        self.audit.alarm(kind, detail)

    def camera_problem(self, kind: str, detail: str) -> None:
        """Called from the camera feed's threads: hand it to the main loop."""
        self.inbox.put(CameraProblem(kind, detail))

    def _on_camera_problem(self, problem: CameraProblem) -> None:
        self.metrics.camera_problem(problem.kind)
        self.audit.alarm(problem.kind, problem.detail)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_ping >= 1.0:
            self._last_ping = now
            self.notifier.watchdog()
            camera = "ok" if self.feed.healthy() else "STALLED"
            link = "up" if self.link.connected.is_set() else "DOWN"
            c = self.metrics.counts
            self.notifier.status(
                f"link {link}, camera {camera}: parts {c['parts']}, pass {c['pass']}, "
                f"reject {c['reject']}, failsafe {sum(self.metrics.failsafe.values())}"
            )
        if now - self._last_summary >= self.summary_every_s:
            self._last_summary = now
            log.info("summary: %s", self.metrics.summary_line())
