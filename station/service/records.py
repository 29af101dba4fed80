"""Carry out the tracker's record-keeping actions: audit rows, alarms, counters, images.

The live service and the stepped virtual line keep their records through
this one class, so the soak's audit database is written exactly as the
line's is. Commands to the Mega and judging requests are not here: each
shell carries those out its own way (a blocking serial command, a
simulated wire).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from station.audit import AuditLog, ImageStore
from station.recording import Recorder
from station.service.metrics import LineMetrics
from station.tracker import Counted, Decided, Gated, NewRow, RaiseAlarm, UpdateRow
from station.web.snapshot import JudgedView

log = logging.getLogger(__name__)

RECORD_ACTIONS = (NewRow, UpdateRow, RaiseAlarm, Decided, Gated, Counted)

_TIMES = ("trigger_time", "frame_time", "verdict_time", "gate_time")
_RECORDED = ("verdict", "failsafe_reason", "gate_action", "gate_reason", "gate_time")
"""Audit columns mirrored into a recording's sidecars."""


class PartRecords:
    def __init__(
        self,
        audit: AuditLog,
        metrics: LineMetrics,
        images: ImageStore | None = None,
        recorder: Recorder | None = None,
        pass_sample_every: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.audit = audit
        self.metrics = metrics
        self.images = images
        self.recorder = recorder
        self.pass_sample_every = pass_sample_every
        self.clock = clock
        """The station's clock (the tracker's): alarms are stamped with it."""
        self.alarms_raised = 0
        self.latest: JudgedView | None = None
        """The last judged frame, for the operator's page (replaced, never changed)."""
        self._passes_seen = 0

    def apply(self, action: object) -> None:
        if isinstance(action, NewRow):
            self.audit.new_part(
                action.uid,
                action.epoch,
                action.part_id,
                action.source,
                action.mcu_trigger_ms,
                action.trigger_time,
                action.note,
            )
        elif isinstance(action, UpdateRow):
            self.audit.update(action.uid, **action.fields)
            if self.recorder and set(action.fields) & {"verdict", "gate_action"}:
                changed = {
                    k: (self.audit.wall(v) if k in _TIMES else v)
                    for k, v in action.fields.items()
                    if k
                    in ("verdict", "failsafe_reason", "gate_action", "gate_reason", "gate_time")
                }
                self.recorder.part_changed(action.uid, **changed)
        elif isinstance(action, RaiseAlarm):
            self.alarms_raised += 1
            level = logging.INFO if action.kind in ("link_up", "fault_cleared") else logging.ERROR
            log.log(level, "%s: %s", action.kind, action.detail)
            self.audit.alarm(action.kind, action.detail, when=self.clock())
        elif isinstance(action, Decided):
            self._decided(action)
        elif isinstance(action, Gated):
            self.metrics.gated(action.action, action.mega_failsafe)
        elif isinstance(action, Counted):
            self._count(action)
        else:
            raise TypeError(f"not a record-keeping action: {action!r}")

    def _count(self, action: Counted) -> None:
        kind, _, name = action.name.partition(":")
        if kind == "parts":
            self.metrics.part_triggered()
        elif kind == "missed_triggers":
            self.metrics.missed_triggers(action.n)
        elif kind == "pass_revoked":
            self.metrics.pass_revoked()
        elif kind == "fault":
            self.metrics.fault(name)
        elif kind == "camera":
            self.metrics.camera_problem(name)
        else:
            raise ValueError(f"unknown counter {action.name!r}")

    def _decided(self, d: Decided) -> None:
        self.metrics.verdict_sent(
            d.verdict == "reject", d.failsafe, d.frame_to_verdict_s, d.trigger_to_verdict_s
        )
        j = d.judgement
        frame = j.frame if j else None
        if frame is None or getattr(frame, "image", None) is None:
            return
        roi = (j.roi.x, j.roi.y, j.roi.width, j.roi.height) if j.roi else None
        self.latest = JudgedView(
            d.uid, frame.image, roi, d.verdict, j.score, d.failsafe, time.time()
        )
        path = self._keep_image(d, frame)
        if path:
            self.audit.update(d.uid, image_path=path)
        if self.recorder:
            row = self.audit.db.execute(
                "SELECT part_id, link_epoch, trigger_source, trigger_time, frame_time, "
                "verdict_time FROM parts WHERE uid = ?",
                (d.uid,),
            ).fetchone()
            self.recorder.part_judged(
                d.uid,
                frame,
                j,
                {
                    "part_id": row[0],
                    "link_epoch": row[1],
                    "trigger_source": row[2],
                    "trigger_time": row[3],
                    "frame_time": row[4],
                    "verdict_time": row[5],
                    "verdict": d.verdict,
                    "failsafe_reason": d.failsafe,
                    "model_version": self.audit.model_version,
                    "calibration_checksum": self.audit.calibration_crc,
                },
            )

    def _keep_image(self, d: Decided, frame) -> str | None:
        if self.images is None:
            return None
        if d.verdict == "pass":
            self._passes_seen += 1
            if not self.pass_sample_every or self._passes_seen % self.pass_sample_every:
                return None
        day = time.strftime("%Y-%m-%d")
        name = f"{day}/{d.uid:09d}_{d.verdict}_{d.failsafe or 'judged'}.png"
        path = self.images.save(name, frame.image)
        return str(path) if path else None
