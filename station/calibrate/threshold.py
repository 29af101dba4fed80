"""`calibrate threshold`: the operating point from this station's golden samples.

Every defective sample must have a network score at or above the threshold
(zero missed defects, as `station train` chooses it), except one the network
scores no higher than a good sample and the pit check rejects; among such
thresholds the one with the fewest false rejects is taken, centred in its gap
(`station.scoring.network_threshold`). The figures and
two plots are of the whole decision at that threshold, the pit check
included, and show what it costs. Defects the exception left to the pit check
are reported with the good sample that let it, and the threshold the network
alone would need: one good sample scored high (a casting the model has never
seen) can lift the threshold over defects the network sees.
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
from station.scoring import figures_at, left_to_pit_check, network_threshold, zero_miss_threshold


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
    left_to_pit_check: LeftToPitCheck | None
    """Defective samples the threshold does not hold, left to the pit check; None: none."""


@dataclass(frozen=True)
class LeftToPitCheck:
    """What the threshold rule's one exception did on these samples
    (`station.scoring.left_to_pit_check`), for the technician to judge before writing it."""

    samples: int
    lowest_network_score: float
    highest_network_score: float
    highest_good_score: float
    highest_good_sample: Path
    """The good sample that makes them 'no higher than some good part'."""
    network_alone_threshold: float
    """The threshold if every defective sample held it, as the network alone must."""
    network_alone_false_rejects: int


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
    caught = np.array([s.pit.is_pit(settings) for s in scored])
    threshold = network_threshold(labels, network_scores, caught)

    def whole_decision(at: float) -> np.ndarray:
        return np.array(
            [part_score(n, s.pit, settings, at) for n, s in zip(network_scores, scored)]
        )

    scores = whole_decision(threshold)
    figures = figures_at(labels, scores, threshold)
    left_out = None
    left = left_to_pit_check(labels, network_scores, caught)
    if left.any():
        best_good = int(np.argmax(np.where(labels == 0, network_scores, -np.inf)))
        alone = zero_miss_threshold(labels, network_scores)
        alone_figures = figures_at(labels, whole_decision(alone), alone)
        left_out = LeftToPitCheck(
            samples=int(left.sum()),
            lowest_network_score=float(network_scores[left].min()),
            highest_network_score=float(network_scores[left].max()),
            highest_good_score=float(network_scores[best_good]),
            highest_good_sample=scored[best_good].path,
            network_alone_threshold=alone,
            network_alone_false_rejects=alone_figures.false_rejects,
        )
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
        left_to_pit_check=left_out,
    )
