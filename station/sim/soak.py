"""`station soak`: the stepped virtual line over many parts, judged by physics.

Builds the score table (the shipped classifier's real score for every image
in the parts folder, computed once) or the real judge (`--render`: every
frame rendered, located, cropped and classified), runs `SteppedLine`, and
says whether the run kept the station's promise: every part that broke the
beam audited and decided, and no defective part in the pass bin except
those the model itself judged OK.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2

from station.calibration import Calibration
from station.camera.sources import IMAGE_SUFFIXES, label_of
from station.classifier.litert_classifier import Classifier
from station.config import VirtualLineConfig, VisionTriggerConfig
from station.judge import Judge
from station.sim.stepped_line import FaultPlan, SteppedLine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SoakRequest:
    parts: int
    plan: FaultPlan
    out_dir: Path
    seed: int = 1
    render: bool = False
    progress: bool = True


def score_table(classifier: Classifier, folder: Path) -> dict[str, float]:
    """The classifier's score for each labelled image (relative path -> score)."""
    table = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not label_of(path):
            continue
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise ValueError(f"{path}: not a readable image")
        table[str(path.relative_to(folder))] = classifier.score(image)
    return table


def run_soak(
    request: SoakRequest,
    calibration: Calibration,
    line: VirtualLineConfig,
    classifier: Classifier,
    max_frame_lag_s: float = 0.05,
    vision: VisionTriggerConfig | None = None,
) -> dict:
    """`vision`: soak a line with no photo-eye, triggered by the camera (README, "Lines with
    no photo-eye"); None: the photo-eye line."""
    request.out_dir.mkdir(parents=True, exist_ok=True)
    database = request.out_dir / "audit.sqlite"
    database.unlink(missing_ok=True)
    threshold = calibration.threshold or classifier.threshold
    kwargs: dict = {}
    if request.render:
        kwargs["judge"] = Judge(
            classifier,
            calibration.camera.crop_px,
            calibration.camera.min_part_area_px,
            threshold=threshold,
        )
    else:
        kwargs["scores"] = score_table(classifier, line.parts_from).__getitem__
    stepped = SteppedLine(
        calibration,
        line,
        request.parts,
        database,
        request.plan,
        seed=request.seed,
        threshold=threshold,
        progress=request.progress,
        max_frame_lag_s=max_frame_lag_s,
        vision=vision,
        **kwargs,
    )
    summary = stepped.run()
    summary["judging"] = "rendered frames, real judge" if request.render else "score table"
    summary["trigger"] = "vision" if vision else "photo_eye"
    summary["seed"] = request.seed
    summary["faults"] = request.plan.__dict__
    summary["audit_database"] = str(database)
    summary["parts_csv"] = str(request.out_dir / "parts.csv")
    _write_parts_csv(stepped, request.out_dir / "parts.csv")
    summary["ok"] = soak_passed(summary)
    return summary


def soak_passed(summary: dict) -> bool:
    """The promise: nothing lost or unaudited, no defect passed but by the model's own call,
    and no verdict the gate did not carry out. A line with no photo-eye is excused only
    what it cannot help and reports (`summary["vision_line"]`): parts that crossed while
    the camera was down, and rejects the Mega could not be told of before their gate."""
    silent = summary["silent"]
    return (
        summary["lost"] == 0
        and silent["unaudited"] == 0
        and silent["defects_passed_line"] == 0
        and silent["misrouted_gate_confirmed"] == 0
    )


def _write_parts_csv(stepped: SteppedLine, path: Path) -> None:
    """One row per part on the belt: what it was, where it went, what the audit says."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "index",
                "file",
                "label",
                "eye_ms",
                "fate",
                "audit_uid",
                "verdict",
                "score",
                "failsafe_reason",
                "gate_action",
                "gate_reason",
                "note",
                "unseen",
            ]
        )
        for part, o in zip(stepped.belt, stepped.outcomes):
            writer.writerow(
                [
                    part.index,
                    part.file,
                    part.label,
                    part.eye_ms,
                    part.fate,
                    o.uid,
                    o.verdict,
                    o.score,
                    o.failsafe,
                    o.gate_action,
                    o.gate_reason,
                    o.note,
                    part.unseen or "",
                ]
            )
