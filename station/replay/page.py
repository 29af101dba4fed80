"""`station replay --serve`: the operator's page over a replay.

So that an engineer can look through a recording's parts, and review them
into training data, on the page the line has. Model A's results are kept as
the line keeps its own (`PartRecords`: audit database, image store,
counters) in the replay's output folder, so the page (station/web/) reads
them as it reads a running station, and `station export-reviewed --database
OUT/audit.sqlite` turns the reviews into def_front/ + ok_front/ folders.
Every judged frame is kept, passes too: reviewing a recording means looking
at what passed.

Actions from the page are carried out on the replay's thread, between parts
while it runs and afterwards until it is stopped: the audit keeps one
writer, as on the line. There is no Mega to reset, so an acknowledgement is
only written down.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from pathlib import Path

from station.audit import ACK_ALARM_KIND, AuditLog, AuditReader, ImageStore
from station.judgement import Judgement
from station.replay.inputs import BadInput
from station.replay.replay import PartResult
from station.service.metrics import LineMetrics
from station.service.records import PartRecords
from station.tracker import Counted, Decided, Gated, NewRow, OperatorAck, RaiseAlarm, UpdateRow
from station.web.server import WebServer, create_app
from station.web.shifts import shift_start
from station.web.snapshot import LineSnapshot, ReviewPart, WebRequest


class ReplayTrail:
    """The audit trail of one replay, and the page's view of it."""

    def __init__(
        self,
        out_dir: Path,
        source: str,
        model_version: str,
        threshold: float,
        calibration_crc: int,
        images_quota_mb: float,
    ):
        self.source = source
        self.threshold = threshold
        self.audit = AuditLog(Path(out_dir) / "audit.sqlite", model_version, calibration_crc)
        self.images = ImageStore(Path(out_dir) / "images", images_quota_mb, wait_when_full=True)
        self.metrics = LineMetrics()
        self.records = PartRecords(self.audit, self.metrics, self.images, pass_sample_every=1)
        self.epoch = self.audit.next_epoch()
        """A replay's parts get an epoch of their own, as a boot of the Mega would."""
        self._first_uid = self.audit.next_uid()
        self.inbox: queue.Queue[WebRequest] = queue.Queue()
        self.started_at = time.time()
        self.finished = False
        self.bad_inputs = 0
        self.last_bad_input: str | None = None
        self._decided: dict[int, str] = {}
        """The verdict each part was counted with, by uid."""
        self.snapshot: LineSnapshot | None = None
        """Replaced after every part; read by the web server's threads."""
        self._publish()

    def uid(self, result: PartResult) -> int:
        return self._first_uid + result.index

    # --- written by the replay's thread --------------------------------------------------

    def judged(self, result: PartResult, judgement: Judgement) -> None:
        """Model A's judgement of one part: its audit row, image and counters."""
        uid, now = self.uid(result), time.monotonic()
        note = result.name + (f" (labelled {result.label})" if result.label else "")
        for action in (
            NewRow(uid, self.epoch, result.index + 1, "replay", None, now, note),
            Counted("parts"),
            UpdateRow(
                uid,
                {
                    "frame_time": now,
                    "verdict_time": now,
                    "score": result.score,
                    "verdict": result.verdict,
                    "failsafe_reason": result.failsafe_reason,
                },
            ),
            Decided(
                uid,
                result.verdict,
                result.failsafe_reason,
                judgement,
                result.latency_ms / 1000,
                None,
            ),
        ):
            self.records.apply(action)
        self._decided[uid] = result.verdict
        self._publish()
        self.carry_out_pending()

    def bad_input(self, item: BadInput) -> None:
        """An unreadable file or frame: an alarm on the page, counted as a bad frame."""
        self.bad_inputs += 1
        self.last_bad_input = f"{item.name}: {item.reason}"
        self.records.apply(RaiseAlarm("bad_input", self.last_bad_input))
        self._publish()

    def gated(self, results: list[PartResult]) -> None:
        """After the simulated Mega has settled: what its gate did with each part (and a
        verdict it turned into a fail-safe reject, LATE, on the way)."""
        now = time.monotonic()
        for result in results:
            uid = self.uid(result)
            if self._decided.get(uid) == "pass" and result.verdict == "reject":
                # as the line counts a revoked pass: out of the passes, in again as a reject
                self.records.apply(Counted("pass_revoked"))
                self.records.apply(Decided(uid, "reject", result.failsafe_reason, None, None, None))
                self._decided[uid] = "reject"
            fields = {"verdict": result.verdict, "failsafe_reason": result.failsafe_reason}
            if result.gate_action:
                fields |= {
                    "gate_action": result.gate_action,
                    "gate_reason": result.gate_reason,
                    "gate_time": now,
                }
                self.records.apply(Gated(uid, result.gate_action, result.gate_reason, None))
            self.records.apply(UpdateRow(uid, fields))
        self._publish()

    def mark_finished(self) -> None:
        """The replay and its report are done: the page says so."""
        self.finished = True
        self._publish()

    def carry_out_pending(self) -> None:
        """The page's actions that have arrived, on this (the only writing) thread."""
        while True:
            try:
                request = self.inbox.get_nowait()
            except queue.Empty:
                return
            self._carry_out(request)

    def serve_until(self, stop: threading.Event, poll_s: float = 0.1) -> None:
        """After the replay: carry out the page's actions until `stop` is set."""
        while not stop.is_set():
            try:
                request = self.inbox.get(timeout=poll_s)
            except queue.Empty:
                continue
            self._carry_out(request)

    def close(self) -> None:
        self.images.close()
        self.audit.close()

    def _carry_out(self, request: WebRequest) -> None:
        action = request.action
        try:
            if isinstance(action, ReviewPart):
                result: object = self.audit.review(action.uid, action.truth, action.reviewer)
            elif isinstance(action, OperatorAck):
                self.records.apply(
                    RaiseAlarm(
                        ACK_ALARM_KIND,
                        f"alarms acknowledged by {action.name} (a replay: no Mega to reset)",
                    )
                )
                result = True
            else:
                raise TypeError(f"not an action of the page: {action!r}")
        except Exception as exc:  # noqa: BLE001 - the page gets the error, the replay goes on
            request.done.set_exception(exc)
            return
        request.done.set_result(result)

    # --- read by the page -------------------------------------------------------------------

    def submit(self, request: WebRequest) -> WebRequest:
        self.inbox.put(request)
        return request

    def _publish(self) -> None:
        parts = self.metrics.counts["parts"]
        self.snapshot = LineSnapshot(
            taken_at=time.time(),
            started_at=self.started_at,
            counters=self.metrics.page_counters(),
            link={
                "up": True,
                "epoch": self.epoch,
                "port": "simulated Mega (replay)",
                "firmware": None,
                "mega_calibration_crc": self.audit.calibration_crc,
                "reset_cause": None,
            },
            camera={
                "healthy": True,
                "fps": None,
                "frames": parts,
                "bad_frames": self.bad_inputs,
                "stalls": 0,
                "reopens": 0,
                "last_error": self.last_bad_input,
            },
            model={
                "version": self.audit.model_version,
                "threshold": self.threshold,
                "calibration_crc": self.audit.calibration_crc,
            },
            images={
                "used_bytes": self.images.used_bytes,
                "quota_bytes": self.images.quota_bytes,
                "dropped": self.images.dropped,
            },
            latest=self.records.latest,
            mode=f"replay of {self.source}" + (" (finished)" if self.finished else ""),
        )


class ReplayPage:
    """The operator's page (the line's own app and server) over a `ReplayTrail`."""

    def __init__(self, trail: ReplayTrail, server: WebServer):
        self.trail = trail
        self.server = server

    @classmethod
    def start(cls, trail: ReplayTrail, listen: str, token: str, shifts: list[str]) -> ReplayPage:
        app = create_app(
            snapshot=lambda: trail.snapshot,
            submit=trail.submit,
            reader=AuditReader(trail.audit.path),
            images_dir=trail.images.root,
            token=token,
            shift_start=shift_start(shifts),
        )
        return cls(trail, WebServer(app, listen).start())

    def serve_until_signalled(self) -> None:
        """Keep the page up after the replay, its actions carried out, until SIGINT or
        SIGTERM; then close the server and the audit."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        self.trail.mark_finished()
        try:
            self.trail.serve_until(stop)
        finally:
            self.close()

    def close(self) -> None:
        self.server.close()
        self.trail.close()
