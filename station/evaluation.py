"""`station evaluate`: a model's figures on a labelled folder, through LiteRT.

Runs exactly what the line runs (the `.tflite` in LiteRT, the shared
preprocessing), so a figure here is a figure for the line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from station import plots
from station.classifier.litert_classifier import Classifier
from station.classifier.model_card import Figures
from station.dataset import BadImage, Skipped, load_grey, scan_labelled_folder
from station.scoring import figures_at

log = logging.getLogger(__name__)


@dataclass
class EvaluationReport:
    model: str
    data: Path
    threshold: float
    figures: Figures
    skipped: list[Skipped]
    plots: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "data": str(self.data),
            **self.figures.model_dump(),
            "threshold": self.threshold,
            "skipped": len(self.skipped),
            "skipped_files": [{"file": str(s.path), "reason": s.reason} for s in self.skipped],
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
        lines += [f"plot: {p}" for p in self.plots.values()]
        return "\n".join(lines)


def evaluate(
    model_dir: Path, data_dir: Path, threshold: float | None, plots_dir: Path
) -> EvaluationReport:
    classifier = Classifier(model_dir, threshold=threshold)
    labels_arr, scores_arr, skipped = score_folder(classifier, data_dir)
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
    return EvaluationReport(
        classifier.version, data_dir, classifier.threshold, figures, skipped, written
    )


def score_folder(
    classifier: Classifier, data_dir: Path
) -> tuple[np.ndarray, np.ndarray, list[Skipped]]:
    """Labels (1 = defective) and scores of every readable image; the skipped files, named."""
    folder = scan_labelled_folder(data_dir)
    side = int(classifier.card.training.get("image_size", 300))
    skipped = list(folder.skipped)
    labels, scores = [], []
    for sample in tqdm(folder.samples, desc="scoring", unit="img", mininterval=2, disable=None):
        try:
            grey = load_grey(sample.path, (side, side))
        except BadImage as exc:
            skipped.append(Skipped(sample.path, str(exc)))
            continue
        labels.append(sample.label)
        scores.append(classifier.score(grey))
    for item in skipped:
        log.warning("skipped %s: %s", item.path, item.reason)
    if not labels:
        raise BadImage(f"{data_dir}: no usable image")
    return np.array(labels), np.array(scores), skipped
