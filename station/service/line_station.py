"""The line service's main loop: the thin shell around the part tracker.

The rules are the tracker's (`station/tracker.py`); this loop only feeds
it and carries out what it asks. One thread owns all part state (this
loop); the others only put things on its inbox: the link's reader (Mega
events, link up/down), the judge worker (judgements), the vision trigger
(parts it saw) and the camera feed (its problems). So the order of what
happened to a part is the order of the inbox, and nothing needs a lock.

Nothing kills the loop: an exception while handling one event or carrying
out one action is logged with the event, alarmed, and the part it was about
is failed safe; the loop goes on. The systemd watchdog is fed only while
the loop, the judge and the camera all make progress, so a real hang gets
the service restarted while the Mega, unheard, rejects everything.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from station.audit import AuditLog
from station.camera.feed import CameraFeed
from station.camera.frames import FrameBuffer
from station.judge import Judge
from station.link.endpoint import Answered
from station.link.session import LinkError, MegaSession
from station.service.heap import short_gil_turns, startup_heap_frozen
from station.service.metrics import LineMetrics
from station.service.records import RECORD_ACTIONS, PartRecords
from station.service.systemd_notify import SystemdNotifier
from station.tracker import (
    CameraTrouble,
    Judged,
    JudgeFrame,
    PartTracker,
    SendCommand,
)
from station.web.snapshot import LineSnapshot, PartsInJudgement, ReviewPart, WebRequest

log = logging.getLogger(__name__)

DEFAULT_WATCHDOG_S = 10.0
"""Progress window when systemd sets no WatchdogSec (outside systemd nothing is pinged)."""
SNAPSHOT_EVERY_S = 0.2
"""How often the operator's page gets a new picture of the line (it shows at most 5 a s)."""


class JudgeWorker:
    """Finds each part's frame and judges it, one part at a time, off the main loop.

    If the classifier hangs, this thread hangs with it; the main loop keeps
    its deadlines and fails the waiting parts safe, and the watchdog sees
    that the judge made no progress.
    """

    def __init__(
        self,
        judge: Judge,
        frames: FrameBuffer,
        results: queue.Queue,
        max_frame_lag_s: float,
        judging: PartsInJudgement,
    ):
        self.max_frame_lag_s = max_frame_lag_s
        self.judging = judging
        """Begun here when the part's frame is found, ended by the main loop once the
        verdict is sent (here, if judging raised)."""
        self.judge = judge
        self.frames = frames
        self.results = results
        self.jobs: queue.Queue[JudgeFrame | None] = queue.Queue()
        self.busy_since: float | None = None
        """Monotonic s when the job in hand was taken; None while waiting for one."""
        self._thread = threading.Thread(target=self._run, name="judge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.jobs.put(None)

    def stuck_for(self, now: float) -> float:
        busy = self.busy_since
        return 0.0 if busy is None else now - busy

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            self.busy_since = time.monotonic()
            try:
                frame = job.frame or self.frames.wait_first_after(
                    job.wanted_at, job.give_up_at, self.max_frame_lag_s
                )
                self.judging.begin(job.uid)
                self.results.put(Judged(job.uid, self.judge.judge(frame)))
            except Exception:  # noqa: BLE001 - the loop fails the part safe at its deadline
                log.exception("judging part %d failed", job.uid)
                self.judging.end(job.uid)
            finally:
                self.busy_since = None


LISTEN_AFTER_STOP_S = 0.25
"""After a stop is asked for, the station goes on reading the link at least this long: a part
that crossed the photo-eye just before is announced by the Mega a few milliseconds later
(more on a loaded machine), and must be heard to be audited. Before this wait, a stop asked
for between two parts could end the loop while that part's PART was still on its way: 1
virtual-line run in 6 lost a part so, on a machine with both cores busy."""


class LineStation:
    def __init__(
        self,
        tracker: PartTracker,
        link: MegaSession,
        inbox: queue.Queue,
        frames: FrameBuffer,
        feed: CameraFeed,
        judge: Judge,
        audit: AuditLog,
        records: PartRecords,
        metrics: LineMetrics,
        notifier: SystemdNotifier | None = None,
        summary_every_s: float = 60.0,
        max_frame_lag_s: float = 0.05,
        drain_s: float = 2.0,
        listen_after_stop_s: float = LISTEN_AFTER_STOP_S,
    ):
        self.tracker = tracker
        self.link = link
        self.inbox = inbox
        self.frames = frames
        self.feed = feed
        self.judging = PartsInJudgement()
        """The parts whose verdict is on its way; the operator's page waits for them."""
        self.worker = JudgeWorker(judge, frames, inbox, max_frame_lag_s, self.judging)
        self.audit = audit
        self.records = records
        self.metrics = metrics
        self.notifier = notifier or SystemdNotifier({})
        self.summary_every_s = summary_every_s
        self.drain_s = drain_s
        self.listen_after_stop_s = listen_after_stop_s
        self.watchdog_s = self.notifier.watchdog_s or DEFAULT_WATCHDOG_S
        self.trigger_progress_age_s: Callable[[float], float] = lambda now: 0.0
        """The vision trigger's `progress_age_s` (set by the assembly, which starts it): the
        trigger of a vision line, the witness of a photo-eye line."""
        self.errors = 0
        """Events or actions that raised (each alarmed, its part failed safe)."""
        self.stop_requested_at: float | None = None
        """When SIGTERM (or the virtual line's end) asked the station to stop: every part that
        crossed the photo-eye before it is audited (the virtual line's report ends there)."""
        self._last_summary = time.monotonic()
        self._last_ping = 0.0
        self._last_loop = time.monotonic()
        self._stopping = threading.Event()
        self.started_at = time.time()
        self.snapshot: LineSnapshot | None = None
        """The latest picture of the line for the operator's page: replaced by the main
        loop every SNAPSHOT_EVERY_S, read by the web server's threads."""
        self._last_snapshot = 0.0
        self._snapshot_failing = False

    # --- life cycle ----------------------------------------------------------------

    def request_stop(self) -> None:
        """SIGTERM: finish the parts in flight, then stop (the servo is left at rest)."""
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
        self._stopping.set()

    def run(self, drain_timeout_s: float | None = None) -> None:
        status = (
            f"running: model {self.audit.model_version}, calibration {self.audit.calibration_crc}"
        )
        with startup_heap_frozen(), short_gil_turns():
            self.notifier.ready(status)
            log.info("station ready (%s)", status)
            drain_until: float | None = None
            listen_until = 0.0
            while True:
                self._step(timeout=0.02)
                if self._stopping.is_set():
                    if drain_until is None:
                        drain_until = time.monotonic() + (drain_timeout_s or self.drain_s)
                        asked = self.stop_requested_at or time.monotonic()
                        listen_until = asked + self.listen_after_stop_s
                        self.notifier.stopping()
                        log.info("stopping: finishing %d parts in flight", self.tracker.in_flight)
                    now = time.monotonic()
                    if (now >= listen_until and not self.tracker.in_flight) or now > drain_until:
                        break
            self._handle_what_arrived()
            self._shutdown()

    def _handle_what_arrived(self) -> None:
        """What is already on the inbox when the loop stops: a part the Mega announced is
        tracked, so that stopping notes it (its gate outcome unknown) instead of dropping it
        unaudited."""
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return
            self.handle(item)

    def _shutdown(self) -> None:
        self._apply(self.tracker.stop(time.monotonic()), None)
        self.worker.stop()
        self.feed.stop()
        self.link.close()
        if self.records.images:
            self.records.images.close()
        if self.records.recorder:
            self.records.recorder.close()
        log.info("stopped: %s", self.metrics.summary_line())

    # --- the loop ------------------------------------------------------------------

    def _step(self, timeout: float) -> None:
        try:
            item = self.inbox.get(timeout=self._time_to_next_deadline(timeout))
        except queue.Empty:
            item = None
        if item is not None:
            self.handle(item)
        self._guarded(None, lambda: self.tracker.tick(time.monotonic()))
        self._housekeeping()

    def _time_to_next_deadline(self, cap: float) -> float:
        deadline = self.tracker.next_deadline()
        if deadline is None:
            return cap
        return max(0.0, min(cap, deadline - time.monotonic()))

    def handle(self, item: object) -> None:
        """One inbox item through the tracker, its actions carried out."""
        if isinstance(item, WebRequest):
            self._web_request(item)
            return
        self._guarded(item, lambda: self.tracker.handle(item, time.monotonic()))
        if isinstance(item, Judged):
            self.judging.end(item.uid)

    def submit(self, request: WebRequest) -> WebRequest:
        """From the web server's threads: put an action on the inbox; its `done` tells."""
        self.inbox.put(request)
        return request

    def _web_request(self, request: WebRequest) -> None:
        """Actions from the operator's page, on the main loop like every other write."""
        try:
            if isinstance(request.action, ReviewPart):
                a = request.action
                result: object = self.audit.review(a.uid, a.truth, a.reviewer)
            else:
                self._guarded(
                    request.action, lambda: self.tracker.handle(request.action, time.monotonic())
                )
                result = True
        except Exception as exc:  # noqa: BLE001 - a bad request must not stop the loop
            log.exception("web request %r failed", request.action)
            request.done.set_exception(exc)
            return
        request.done.set_result(result)

    def camera_problem(self, kind: str, detail: str) -> None:
        """Called from the camera feed's threads: hand it to the main loop."""
        self.inbox.put(CameraTrouble(kind, detail))

    # --- carrying out ----------------------------------------------------------------

    def _guarded(self, event: object, step) -> None:
        try:
            actions = step()
        except Exception as exc:  # noqa: BLE001 - nothing may kill the loop
            self._failed(event, None, exc)
            return
        self._apply(actions, event)

    def _apply(self, actions: list, event: object) -> None:
        for action in actions:
            try:
                self._do(action)
            except Exception as exc:  # noqa: BLE001 - one bad action must not stop the rest
                self._failed(event, action, exc)

    def _do(self, action: object) -> None:
        if isinstance(action, RECORD_ACTIONS):
            self.records.apply(action)
        elif isinstance(action, JudgeFrame):
            self.worker.jobs.put(action)
        elif isinstance(action, SendCommand):
            self.handle(self._command(action))
        else:
            raise TypeError(f"no way to carry out {action!r}")

    def _command(self, action: SendCommand) -> Answered:
        """Send and wait (stop-and-wait: the Mega answers within a millisecond or two)."""
        try:
            reply = self.link.command(action.message, due_at=action.due_at)
        except LinkError as exc:
            log.error("%s not delivered: %s", type(action.message).__name__, exc)
            return Answered(action.tag, None, "link_down")
        return Answered(action.tag, reply)

    def _failed(self, event: object, action: object, exc: Exception) -> None:
        """Log, alarm, fail the part safe: the loop goes on."""
        self.errors += 1
        uid = getattr(action, "uid", None) or self.tracker.uid_of(event)
        what = f"{type(event).__name__}" + (f" -> {type(action).__name__}" if action else "")
        log.exception("internal error on part %s handling %s", uid, what)
        try:
            self.audit.alarm("internal_error", f"part {uid}: {what}: {type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001 - the audit itself may be what failed
            log.exception("could not record the alarm")
        if uid is not None:
            actions = self.tracker.fail_safe(uid, "internal_error", time.monotonic())
            for follow_up in actions:
                try:
                    self._do(follow_up)
                except Exception:  # noqa: BLE001
                    log.exception("failing part %s safe failed too", uid)

    # --- the operator's page ------------------------------------------------------------

    def _take_snapshot(self, now: float) -> LineSnapshot:
        """Copies only: the web server reads this from other threads."""
        counters = self.metrics.page_counters()
        identify = self.link.identify
        link = {
            "up": self.tracker.link_up,
            "epoch": self.link.epoch,
            "port": self.link.port,
            "firmware": (
                f"{identify.firmware.decode(errors='replace')} {identify.version_major}."
                f"{identify.version_minor}.{identify.version_patch}"
                if identify
                else None
            ),
            # The handshake ends only once the Mega reports the checksum it was sent.
            "mega_calibration_crc": (
                f"{self.link.endpoint.configure.calibration_crc:#010x}"
                if self.tracker.link_up
                else None
            ),
            "reset_cause": identify.reset_cause if identify else None,
        }
        stats = self.feed.stats
        camera = {
            "healthy": self.feed.healthy(),
            "fps": round(self.frames.rate(now), 1),
            "frames": stats.frames,
            "bad_frames": stats.bad_frames,
            "stalls": stats.stalls,
            "reopens": stats.reopens,
            "last_error": self.feed.last_error,
        }
        images = self.records.images
        return LineSnapshot(
            taken_at=time.time(),
            started_at=self.started_at,
            counters=counters,
            link=link,
            camera=camera,
            model={
                "version": self.audit.model_version,
                "threshold": self.worker.judge.threshold,
                "calibration_crc": self.audit.calibration_crc,
            },
            images={
                "used_bytes": images.used_bytes if images else 0,
                "quota_bytes": images.quota_bytes if images else 0,
                "dropped": images.dropped if images else 0,
            },
            latest=self.records.latest,
        )

    # --- housekeeping ------------------------------------------------------------------

    def healthy(self, now: float) -> list[str]:
        """What has made no progress within half the watchdog period (empty: all well)."""
        limit = self.watchdog_s / 2
        stuck = []
        if now - self._last_loop > limit:
            stuck.append(f"main loop silent {now - self._last_loop:.1f} s")
        if self.worker.stuck_for(now) > limit:
            stuck.append(f"judge busy on one part for {self.worker.stuck_for(now):.1f} s")
        if self.feed.progress_age_s(now) > limit:
            stuck.append(f"camera supervisor silent {self.feed.progress_age_s(now):.1f} s")
        if (trigger_age := self.trigger_progress_age_s(now)) > limit:
            stuck.append(f"vision trigger silent {trigger_age:.1f} s")
        return stuck

    def _housekeeping(self) -> None:
        now = time.monotonic()
        self._last_loop = now
        if now - self._last_snapshot >= SNAPSHOT_EVERY_S:
            self._last_snapshot = now
            try:
                self.snapshot = self._take_snapshot(now)
                self._snapshot_failing = False
            except Exception:  # noqa: BLE001 - the page may go stale; the line goes on
                if not self._snapshot_failing:  # once, not five times a second
                    log.exception("could not take a snapshot for the operator's page")
                self._snapshot_failing = True
        if now - self._last_ping >= 1.0:
            self._last_ping = now
            stuck = self.healthy(now)
            if stuck:
                log.error("watchdog not fed: %s", "; ".join(stuck))
            else:
                self.notifier.watchdog()
            camera = "ok" if self.feed.healthy() else "STALLED"
            link = "up" if self.tracker.link_up else "DOWN"
            c = self.metrics.counts
            self.notifier.status(
                f"link {link}, camera {camera}: parts {c['parts']}, pass {c['pass']}, "
                f"reject {c['reject']}, failsafe {sum(self.metrics.failsafe.values())}"
                + (f"; STUCK: {'; '.join(stuck)}" if stuck else "")
            )
        if now - self._last_summary >= self.summary_every_s:
            self._last_summary = now
            log.info("summary: %s", self.metrics.summary_line())
