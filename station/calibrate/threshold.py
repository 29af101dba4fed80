"""`calibrate threshold`: the operating point from this station's golden samples.

Every defective sample must have a network score at or above the threshold
(zero missed defects, as `station train` chooses it), the ones the pit check
rejects too: a check added to the station only adds rejects. Among such
thresholds the one with the fewest false rejects is taken, centred in its gap
(`station.scoring.zero_miss_threshold`). The figures and two plots are of
the whole decision at that threshold, the pit check included, and show what
it costs. The defective sample that holds the threshold down is named: a
pinhole the network does not see, or a mislabelled good part, among the
golden samples pulls it onto the good ones, and the technician must see
which sample did it before writing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from station import plots
from station.classifier.litert_classifier import Classifier
from station.classifier.pit_check import part_score
from station.dataset import Skipped
from station.evaluation import score_folder
from station.scoring import figures_at, zero_miss_threshold


class NotEnoughSamples(ValueError):
    """The folder cannot support a threshold (no defective or no OK sample)."""


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    samples: int
    defective: int
    missed_defects: int
    false_rejects: int
    lowest_defect_score: float
    skipped: list[Skipped]
    plots: dict[str, str]
    held_by: Path
    """The defective sample with the lowest network score: the one the threshold is set by."""
    held_by_network_score: float
    held_by_pit_check: bool
    """Whether the pit check rejects that sample too."""


def choose_threshold(classifier: Classifier, data_dir: Path, plots_dir: Path) -> ThresholdChoice:
    scored, skipped = score_folder(classifier, data_dir)
    labels = np.array([s.label for s in scored])
    network_scores = np.array([s.network_score for s in scored])
    defective = int(labels.sum())
    if defective == 0 or defective == len(labels):
        missing = "defective" if defective == 0 else "OK"
        raise NotEnoughSamples(
            f"{data_dir}: no {missing} sample; golden samples need both def_front/ and ok_front/"
        )
    # On the network's scores: the pit score is put on the threshold's scale, so a threshold
    # chosen on part scores made at the card's threshold would not hold at its own.
    settings = classifier.card.pit_check
    threshold = zero_miss_threshold(labels, network_scores)
    scores = np.array(
        [part_score(n, s.pit, settings, threshold) for n, s in zip(network_scores, scored)]
    )
    figures = figures_at(labels, scores, threshold)
    held_by = int(np.argmin(np.where(labels == 1, network_scores, np.inf)))
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "score_histogram": plots_dir / "threshold_score_histogram.png",
        "misses_against_false_rejects": plots_dir / "threshold_misses_vs_false_rejects.png",
    }
    title = f"golden samples {data_dir.name} ({classifier.version})"
    plots.score_histogram(labels, scores, threshold, title, written["score_histogram"])
    plots.misses_against_false_rejects(
        labels, scores, threshold, title, written["misses_against_false_rejects"]
    )
    return ThresholdChoice(
        threshold=threshold,
        samples=len(labels),
        defective=defective,
        missed_defects=figures.missed_defects,
        false_rejects=figures.false_rejects,
        lowest_defect_score=float(np.min(scores[labels.astype(bool)])),
        skipped=skipped,
        plots={k: str(v) for k, v in written.items()},
        held_by=scored[held_by].path,
        held_by_network_score=float(network_scores[held_by]),
        held_by_pit_check=scored[held_by].pit.is_pit(settings),
    )
