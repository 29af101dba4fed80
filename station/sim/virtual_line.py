"""The whole station against the virtual conveyor and the simulated Mega.

`station run --virtual-line` builds the same LineStation the service runs,
with the simulated Mega on a pty in place of the USB port and the
conveyor's camera in place of the real one, runs N parts past it, then
judges the run by physics: the conveyor's ledger of where each part ended
is joined with the audit database, part by part.

Faults can be injected at set times (`Fault`): a camera stall, the USB
cable pulled and plugged back, the classifier hanging, the Mega resetting.
"""

from __future__ import annotations

import csv
import logging
import resource
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from station.calibration import Calibration
from station.config import StationConfig, VirtualLineConfig
from station.recording import label_parts
from station.service.assembly import assemble, install_signal_handlers, start
from station.service.systemd_notify import SystemdNotifier
from station.sim.conveyor import PartOnBelt, VirtualCamera, VirtualConveyor
from station.sim.mega_pty import SimulatedMega

log = logging.getLogger(__name__)

FAULT_KINDS = ("camera-stall", "unplug", "classifier-stall", "mega-reset", "eye-miss")


@dataclass(frozen=True)
class Fault:
    kind: str
    at_s: float
    duration_s: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "Fault":
        """KIND@SECONDS[:DURATION], e.g. camera-stall@10:2 or mega-reset@30."""
        try:
            kind, _, when = text.partition("@")
            at, _, duration = when.partition(":")
            fault = cls(kind, float(at), float(duration) if duration else 1.0)
        except ValueError:
            raise ValueError(f"fault {text!r}: expected KIND@SECONDS[:DURATION]") from None
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault {text!r}: kind must be one of {', '.join(FAULT_KINDS)}")
        return fault


class StallingClassifier:
    """The shipped classifier with a switch that makes it hang (the 'classifier stall' fault)."""

    def __init__(self, classifier):
        self.classifier = classifier
        self.threshold = classifier.threshold
        self.card = classifier.card
        self.stalled_until = 0.0

    def inspect(self, image, roi=None):
        hang = self.stalled_until - time.monotonic()
        if hang > 0:
            time.sleep(hang)
        return self.classifier.inspect(image, roi)


@dataclass
class PartOutcome:
    index: int
    file: str
    label: str
    part_id: int | None
    eye_time: float
    """UNIX s, the same clock as the audit's times."""
    fate: str
    pusher_time: float | None
    """UNIX s at which the part's centre left the pusher's strike zone."""
    audited: bool
    uid: int | None
    """The part's row in the audit."""
    verdict: str | None
    score: float | None
    failsafe_reason: str | None
    gate_action: str | None
    gate_reason: str | None
    routed_as_verdict: bool
    matches_label: bool


def run_virtual_line(
    config: StationConfig,
    calibration: Calibration,
    line: VirtualLineConfig,
    parts: int,
    faults: list[Fault],
    out_dir: Path,
) -> dict:
    started = time.monotonic()
    mega = SimulatedMega(out_dir / "mega-port").start()
    config = config.model_copy(update={"link": config.link.model_copy(update={"port": mega.port})})
    conveyor = VirtualConveyor(line, mega, parts)
    stalling: list[StallingClassifier] = []

    def wrap(classifier):
        stalling.append(StallingClassifier(classifier))
        return stalling[0]

    assembly = assemble(
        config,
        calibration,
        make_source=lambda: VirtualCamera(conveyor),
        wrap_classifier=wrap,
        notifier=SystemdNotifier(),
    )
    install_signal_handlers(assembly.station)
    station = assembly.station
    start(assembly, config)
    startup_s = time.monotonic() - started
    log.info("virtual line: %d parts at %.1f parts/s", parts, conveyor.parts_per_s)
    conveyor.start(lead_in_s=0.5)
    injector = threading.Thread(
        target=_inject, args=(faults, conveyor, mega, stalling[0]), daemon=True
    )
    injector.start()
    threading.Thread(
        target=lambda: (conveyor.finished.wait(), station.request_stop()), daemon=True
    ).start()
    try:
        station.run()
    finally:
        conveyor.stop()
        assembly.close()
        mega.stop()
    wall_s = time.monotonic() - started
    conveyor.exact_fates()
    outcomes = _join(
        conveyor,
        config.audit.database,
        station.stop_requested_at or time.monotonic(),
        station.audit.clock_offset_s,
    )
    _write_parts_csv(outcomes, out_dir / "parts.csv")
    summary = _summary(outcomes, assembly.metrics, conveyor, wall_s, faults)
    summary["startup_s"] = round(startup_s, 2)
    summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    seen = [p for p in conveyor.parts if p.fate is not None]
    pulses = mega.all_pulses()
    summary["timing"] = {
        "photo_eye_noticed_late_ms_max": round(max((p.latch_late_ms for p in seen), default=0), 1),
        "fire_late_ms_max": max((p.late_ms for p in pulses), default=0),
        "polling_saw_another_fate": sum(p.polled_fate != p.fate for p in seen),
    }
    summary["tensorflow_loaded"] = "tensorflow" in sys.modules
    summary["audit_database"] = str(config.audit.database)
    summary["parts_csv"] = str(out_dir / "parts.csv")
    if config.record:
        labels = {o.uid: o.label for o in outcomes if o.uid is not None}
        summary["recorded_parts_labelled"] = label_parts(config.record.directory, labels)
        summary["recording"] = str(config.record.directory)
    return summary


def _inject(faults, conveyor: VirtualConveyor, mega: SimulatedMega, classifier) -> None:
    begin = time.monotonic()
    for fault in sorted(faults, key=lambda f: f.at_s):
        time.sleep(max(0.0, begin + fault.at_s - time.monotonic()))
        log.warning("injecting fault: %s for %.1f s", fault.kind, fault.duration_s)
        if fault.kind == "camera-stall":
            conveyor.stall_camera(fault.duration_s)
        elif fault.kind == "classifier-stall":
            classifier.stalled_until = time.monotonic() + fault.duration_s
        elif fault.kind == "mega-reset":
            mega.reset()
        elif fault.kind == "eye-miss":
            conveyor.miss_next_part()
        elif fault.kind == "unplug":
            mega.unplug()
            time.sleep(fault.duration_s)
            mega.plug()


def _join(
    conveyor: VirtualConveyor, database: Path, stopped: float, offset: float
) -> list[PartOutcome]:
    """Ledger joined with audit rows; parts that reached the eye after the station was asked
    to stop (SIGTERM) were never its business and are left out (those it heard of are
    audited all the same). `offset`: the audit's own, from
    the conveyor's monotonic times to the rows' UNIX times (one taken now would carry any
    step of the wall clock since the audit opened into the 1 s match)."""
    photo_eye = conveyor.config.photo_eye
    db = sqlite3.connect(database)
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT * FROM parts ORDER BY uid").fetchall()
    db.close()
    # Part IDs and millis() restart at every boot of the Mega, so one key can recur (and a
    # part whose PART event died with a reboot has no row under it): match on time too.
    exact: dict[tuple[int, int], list] = {}
    for r in rows:
        if r["mcu_trigger_ms"] is not None:
            exact.setdefault((r["part_id"], r["mcu_trigger_ms"]), []).append(r)
    spare = [r for r in rows if r["mcu_trigger_ms"] is None]
    outcomes = []
    for part in conveyor.parts:
        if part.eye_time > stopped:
            break
        matches = exact.get((part.part_id, part.mcu_trigger_ms), []) if photo_eye else []
        row = _nearest_in_time(matches, part.eye_time + offset, 1.0)  # the key is exact
        if row is None:
            row = _nearest_by_time(spare, part, offset, conveyor)
        outcomes.append(_outcome(part, row, offset))
    return outcomes


def _nearest_in_time(rows: list, when: float, within_s: float):
    """Take from `rows` the one whose trigger time is nearest `when`, if within `within_s`."""
    best = min(rows, key=lambda r: abs(r["trigger_time"] - when), default=None)
    if best is None or abs(best["trigger_time"] - when) > within_s:
        return None
    rows.remove(best)
    return best


def _nearest_by_time(spare: list, part: PartOnBelt, offset: float, conveyor: VirtualConveyor):
    """Rows with no Mega trigger time (vision parts, gate-only parts): match on time."""
    best, best_gap = None, conveyor.config.pitch_mm / conveyor.config.belt_speed_mm_s / 3
    for row in spare:
        if row["trigger_source"] == "gate_only":
            if row["part_id"] != part.part_id or row["gate_time"] is None or not part.gate_time:
                continue
            gap = abs(row["gate_time"] - (part.gate_time + offset))
        elif row["trigger_source"] == "vision_backup":  # stamped with its photo-eye time
            gap = abs(row["trigger_time"] - (part.eye_time + offset))
        else:  # vision: stamped when its centre crossed the camera's axis
            seen = conveyor.time_centred_at(part, conveyor.config.camera_x_mm)
            gap = abs(row["trigger_time"] - (seen + offset))
        if gap < best_gap:
            best, best_gap = row, gap
    if best is not None:
        spare.remove(best)
    return best


def _outcome(part: PartOnBelt, row, offset: float) -> PartOutcome:
    verdict = row["verdict"] if row is not None else None
    return PartOutcome(
        index=part.index,
        file=part.file,
        label=part.label,
        part_id=part.part_id,
        eye_time=round(part.eye_time + offset, 3),
        fate=part.fate or "on_belt",
        pusher_time=round(part.gate_time + offset, 3) if part.gate_time else None,
        audited=row is not None,
        uid=row["uid"] if row is not None else None,
        verdict=verdict,
        score=row["score"] if row is not None else None,
        failsafe_reason=row["failsafe_reason"] if row is not None else None,
        gate_action=row["gate_action"] if row is not None else None,
        gate_reason=row["gate_reason"] if row is not None else None,
        routed_as_verdict=verdict is not None
        and (verdict == "reject") == (part.fate == "rejected"),
        matches_label=(part.label == "defective") == (part.fate == "rejected"),
    )


def _write_parts_csv(outcomes: list[PartOutcome], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(outcomes[0])))
        writer.writeheader()
        for outcome in outcomes:
            writer.writerow(asdict(outcome))


def _summary(outcomes, metrics, conveyor, wall_s, faults) -> dict:
    n = len(outcomes)
    judged = [o for o in outcomes if o.audited and not o.failsafe_reason]
    p50, p99 = metrics.percentiles_ms(metrics.trigger_to_verdict_s)
    f50, f99 = metrics.percentiles_ms(metrics.frame_to_verdict_s)
    return {
        "parts": n,
        "parts_per_s": round(conveyor.parts_per_s, 2),
        "wall_s": round(wall_s, 1),
        "audited": sum(o.audited for o in outcomes),
        "lost": sum(not o.audited for o in outcomes),
        "gate_unconfirmed": sum(o.audited and o.gate_action is None for o in outcomes),
        "routed_as_verdict": sum(o.routed_as_verdict for o in outcomes),
        "matches_label": sum(o.matches_label for o in outcomes),
        "matches_label_when_judged": sum(o.matches_label for o in judged),
        "judged": len(judged),
        "defects_passed": sum(o.label == "defective" and o.fate == "passed" for o in outcomes),
        "good_rejected": sum(o.label == "ok" and o.fate == "rejected" for o in outcomes),
        "rejected": sum(o.fate == "rejected" for o in outcomes),
        "failsafe_rejects": sum(bool(o.failsafe_reason) for o in outcomes),
        "failsafe_by_reason": dict(
            Counter(o.failsafe_reason for o in outcomes if o.failsafe_reason)
        ),
        "mega_gate_reasons": dict(Counter(o.gate_reason for o in outcomes if o.gate_reason)),
        "verdict_latency_ms_p50": _round(p50),
        "verdict_latency_ms_p99": _round(p99),
        "frame_to_verdict_ms_p50": _round(f50),
        "frame_to_verdict_ms_p99": _round(f99),
        "missed_triggers": metrics.counts["missed_triggers"],
        "camera_errors": dict(metrics.camera_errors),
        "mega_faults": dict(metrics.faults),
        "faults_injected": [asdict(f) for f in faults],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@contextmanager
def virtual_rig(line: VirtualLineConfig, parts: int, workdir: Path) -> Iterator[VirtualRig]:
    """The virtual conveyor running past a simulated Mega on a pty: a machine for
    `station calibrate --virtual-line` to measure, with no station attached."""
    mega = SimulatedMega(workdir / "mega-port").start()
    conveyor = VirtualConveyor(line, mega, parts)
    conveyor.start(lead_in_s=0.3)
    try:
        yield VirtualRig(mega, conveyor)
    finally:
        conveyor.stop()
        mega.stop()


@dataclass
class VirtualRig:
    mega: SimulatedMega
    conveyor: VirtualConveyor

    @property
    def port(self) -> str:
        return self.mega.port

    def camera(self) -> VirtualCamera:
        return VirtualCamera(self.conveyor)
