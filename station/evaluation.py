"""`station evaluate`: a model's figures on a labelled folder, through LiteRT.

Runs exactly what the line runs (the `.tflite` in LiteRT, the shared
preprocessing), so a figure here is a figure for the line. Images of any
size are framed by `frame_photo`, as `station replay` frames them: a photo
framed on the part is classified whole, a wider view is cropped around the
part. Every image's score goes to `scores.csv`, with the network's score and
the pit check's darkest spot beside it; each escape (a defective part passed)
and false reject is saved with its crop drawn and that spot circled.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from station import plots
from station.classifier.litert_classifier import Classifier
from station.classifier.model_card import Figures, PitCheckSettings
from station.classifier.pit_check import PitFinding
from station.classifier.preprocess import Roi
from station.dataset import BadImage, Skipped, load_grey, scan_labelled_folder
from station.scoring import figures_at
from station.vision.locate import PartNotFound, frame_photo

log = logging.getLogger(__name__)


@dataclass
class EvaluationReport:
    model: str
    data: Path
    threshold: float
    figures: Figures
    skipped: list[Skipped]
    plots: dict[str, str] = field(default_factory=dict)
    scores_csv: str = ""
    escapes: list[str] = field(default_factory=list)
    """Defective images the model passed, as files (relative to the data folder)."""

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "data": str(self.data),
            **self.figures.model_dump(),
            "threshold": self.threshold,
            "skipped": len(self.skipped),
            "skipped_files": [{"file": str(s.path), "reason": s.reason} for s in self.skipped],
            "escapes": self.escapes,
            "scores_csv": self.scores_csv,
            "plots": self.plots,
        }

    def as_text(self) -> str:
        f = self.figures
        c = f.confusion
        lines = [
            f"model      {self.model}",
            f"data       {self.data}  ({f.n} images, {len(self.skipped)} skipped)",
            f"threshold  {self.threshold:.4f}",
            f"accuracy   {f.accuracy:.4f}   precision {f.precision:.4f}   recall {f.recall:.4f}"
            f"   F1 {f.f1:.4f}",
            f"MISSED DEFECTS {f.missed_defects}   false rejects {f.false_rejects}",
            "",
            "                 verdict pass   verdict reject",
            f"  label OK       {c['true_pass']:>12}   {c['false_reject']:>14}",
            f"  label defect   {c['missed_defect']:>12}   {c['true_reject']:>14}",
        ]
        lines += [f"skipped {s.path}: {s.reason}" for s in self.skipped]
        lines += [f"ESCAPE {name}" for name in self.escapes]
        lines += [f"scores: {self.scores_csv}"]
        lines += [f"plot: {p}" for p in self.plots.values()]
        return "\n".join(lines)


def evaluate(
    model_dir: Path, data_dir: Path, threshold: float | None, plots_dir: Path
) -> EvaluationReport:
    classifier = Classifier(model_dir, threshold=threshold)
    scored, skipped = score_folder(classifier, data_dir)
    labels_arr = np.array([s.label for s in scored])
    scores_arr = np.array([s.score for s in scored])
    figures = figures_at(labels_arr, scores_arr, classifier.threshold)
    plots_dir.mkdir(parents=True, exist_ok=True)
    title = f"{data_dir.name} ({classifier.version})"
    written = {
        "confusion_matrix": str(plots_dir / "confusion_matrix.png"),
        "score_histogram": str(plots_dir / "score_histogram.png"),
    }
    plots.confusion_matrix(figures, classifier.threshold, title, Path(written["confusion_matrix"]))
    plots.score_histogram(
        labels_arr, scores_arr, classifier.threshold, title, Path(written["score_histogram"])
    )
    escapes = _write_disagreements(
        scored, classifier.threshold, classifier.card.pit_check, data_dir, plots_dir
    )
    scores_csv = plots_dir / "scores.csv"
    _write_scores(scored, classifier.threshold, data_dir, scores_csv)
    return EvaluationReport(
        classifier.version,
        data_dir,
        classifier.threshold,
        figures,
        skipped,
        written,
        str(scores_csv),
        escapes,
    )


@dataclass(frozen=True)
class ScoredImage:
    path: Path
    label: int
    """1 = defective."""
    score: float
    """The part's score (the network's, or the pit check's if higher)."""
    network_score: float
    pit: PitFinding
    """The pit check's findings, in the image's pixels."""
    roi: Roi | None
    """The crop the classifier saw; None: the whole photo."""
    size: tuple[int, int]


def score_folder(classifier: Classifier, data_dir: Path) -> tuple[list[ScoredImage], list[Skipped]]:
    """Every readable image framed (`frame_photo`) and scored; the skipped files, named."""
    folder = scan_labelled_folder(data_dir)
    skipped = list(folder.skipped)
    scored: list[ScoredImage] = []
    for sample in tqdm(folder.samples, desc="scoring", unit="img", mininterval=2, disable=None):
        try:
            grey = load_grey(sample.path)
            roi = frame_photo(grey, None)
        except (BadImage, PartNotFound) as exc:
            skipped.append(Skipped(sample.path, f"{sample.path}: {exc}"))
            continue
        seen = classifier.inspect(grey, roi)
        left, top = (roi.x, roi.y) if roi else (0, 0)
        pit = seen.pit.shifted(left, top)
        scored.append(
            ScoredImage(
                sample.path,
                sample.label,
                seen.score,
                seen.network_score,
                pit,
                roi,
                grey.shape[::-1],
            )
        )
    for item in skipped:
        log.warning("skipped %s", item.reason)
    if not scored:
        raise BadImage(f"{data_dir}: no usable image ({len(skipped)} skipped)")
    return scored, skipped


def _write_scores(scored: list[ScoredImage], threshold: float, root: Path, path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "file",
                "label",
                "score",
                "verdict",
                "width",
                "height",
                "crop",
                "network_score",
                "pit_ratio",
                "dark_x",
                "dark_y",
                "pit_dip",
                "dip_x",
                "dip_y",
                "round_ratio",
                "round_x",
                "round_y",
                "isolated_dip",
                "isolated_x",
                "isolated_y",
                "notch_ratio",
                "notch_x",
                "notch_y",
            ]
        )
        for s in scored:
            crop = f"{s.roi.x},{s.roi.y},{s.roi.width}" if s.roi else "whole"
            writer.writerow(
                [
                    s.path.relative_to(root),
                    "defective" if s.label else "ok",
                    f"{s.score:.6f}",
                    "reject" if s.score >= threshold else "pass",
                    *s.size,
                    crop,
                    f"{s.network_score:.6f}",
                    f"{s.pit.darkest.value:.4f}",
                    s.pit.darkest.x,
                    s.pit.darkest.y,
                    f"{s.pit.sharpest.value:.4f}",
                    s.pit.sharpest.x,
                    s.pit.sharpest.y,
                    f"{s.pit.darkest_round.value:.4f}",
                    s.pit.darkest_round.x,
                    s.pit.darkest_round.y,
                    f"{s.pit.isolated.value:.4f}",
                    s.pit.isolated.x,
                    s.pit.isolated.y,
                    f"{s.pit.notch.value:.4f}",
                    s.pit.notch.x,
                    s.pit.notch.y,
                ]
            )


def _write_disagreements(
    scored: list[ScoredImage],
    threshold: float,
    pit_check: PitCheckSettings,
    root: Path,
    out: Path,
) -> list[str]:
    """Escapes and false rejects as PNGs with the crop drawn; the escapes' names."""
    escapes = []
    for s in scored:
        reject = s.score >= threshold
        if bool(s.label) == reject:
            continue
        name = str(s.path.relative_to(root))
        folder = "escapes" if s.label else "false_rejects"
        if s.label:
            escapes.append(name)
        lines = [
            f"{'defective' if s.label else 'ok'}: {'reject' if reject else 'PASS'}",
            f"score {s.score:.4f} (threshold {threshold:.4f})",
            f"network {s.network_score:.4f}",
            *(f"pit check: {finding}" for finding in s.pit.describe_each(pit_check)),
        ]
        target = out / folder / (name.replace("/", "__").rsplit(".", 1)[0] + ".png")
        spot = s.pit.decisive(pit_check)
        plots.save_part(target, load_grey(s.path), s.roi, lines, reject, mark=(spot.x, spot.y))
    return escapes
