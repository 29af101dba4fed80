"""Figures that matter on a reject line, and the choice of operating threshold.

Positive class = defective = reject. A missed defect (defective scored
below the threshold) is the costly error; a false reject only wastes a part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from station.classifier.model_card import Figures

THRESHOLD_MOVES_LOGITS = (-4.0, -3.0, -2.0, -1.0, -0.5, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0)
"""The moves `moved_thresholds` reports out of fold, in logits: -1 lowers 0.5 to 0.27, +1
raises it to 0.73."""


def figures_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> Figures:
    labels = np.asarray(labels).astype(bool)
    rejected = np.asarray(scores) >= threshold
    tp = int(np.sum(rejected & labels))
    fp = int(np.sum(rejected & ~labels))
    tn = int(np.sum(~rejected & ~labels))
    fn = int(np.sum(~rejected & labels))
    n = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Figures(
        n=n,
        accuracy=(tp + tn) / n if n else 0.0,
        precision=precision,
        recall=recall,
        f1=f1,
        missed_defects=fn,
        false_rejects=fp,
        confusion={"true_reject": tp, "false_reject": fp, "true_pass": tn, "missed_defect": fn},
    )


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """The chance that a defective part scores above an OK one (ties count half): how
    well the scores rank, whatever the threshold. None without both classes.

    Why it is reported beside the figures at the threshold: out of fold, one
    unseen photo session can move every score of its parts at once and swamp
    the thresholded counts, while the ranking still says whether the model
    tells defects from good parts.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if not n1 or not n0:
        return None
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores[order][np.diff(scores[order], prepend=np.nan) == 0]):
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def zero_miss_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold with zero missed defects and the fewest false rejects, centred in its gap.

    Every defective part must score >= threshold, so the threshold can be at
    most the lowest defective score. Any value between the highest OK score
    below that and the lowest defective score gives the same figures; the
    midpoint in logit space leaves the widest margin on both sides for parts
    the model has not seen.

    Given the network's scores, every defect holds it, the ones the pit check rejects too:
    a check added to the station only adds rejects. From 2026-12-05 to 2026-12-06 a defect
    the pit check rejected and the network scored no higher than some good part was left
    out (as a pinhole the network cannot see). Out of fold that cost escapes wherever it
    acted: the card's cross-validation passed casting 139's 4 chipped photos (fold 2's
    threshold rose from 0.091 to 0.159 over 4 chipped validation photos the notch caught),
    and with a good casting it had not seen in validation at 1.0, a fold's threshold rose
    from 0.36 to 0.89 and passed 76 defective photos. The pit check's cuts are sharp: a
    defect like one it caught can fall just short of its cut, and then only the network's
    threshold, held by that defect, catches it (docs/model-trials.md, "The threshold rule's
    exception, dropped"; tools/threshold_exception.py).
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if not labels.any():
        raise ValueError("no defective samples: a zero-miss threshold cannot be chosen")
    lowest_defect = float(scores[labels].min())
    ok_below = scores[~labels & (scores < lowest_defect)]
    highest_ok_below = float(ok_below.max()) if ok_below.size else lowest_defect / 2
    midpoint = float(
        np.clip(
            _sigmoid((_logit(lowest_defect) + _logit(highest_ok_below)) / 2), 1e-6, lowest_defect
        )
    )
    if midpoint <= highest_ok_below:
        # Scores within 1e-7 of 0 or 1 share one clipped logit, and the "midpoint" can
        # fall on or below the OK score: the lowest defective score itself keeps the gap.
        return lowest_defect
    return midpoint


@dataclass(frozen=True)
class MovedThreshold:
    """The figures with every threshold moved by `logits` (below 0: lowered; 0: as chosen)."""

    logits: float
    escapes: int
    false_rejects: int
    accuracy: float


def moved_thresholds(
    labels: np.ndarray,
    network_scores: np.ndarray,
    pit_rejects: np.ndarray,
    thresholds: np.ndarray,
    moves: tuple[float, ...] = THRESHOLD_MOVES_LOGITS,
) -> list[MovedThreshold]:
    """What moving each part's threshold would buy and cost: the escapes and false rejects
    with each threshold lowered or raised by each move, in logits.

    Why both ways: out of fold, each fold's threshold is chosen on castings its network
    trained on. Lowered, it is a safety margin: how many escapes fall to how much margin,
    and for how many good parts thrown away, is the choice a plant makes, so it is
    measured rather than guessed. Raised, it shows whether the false rejects are the
    threshold's (a higher one would keep the escapes and drop them) or the ranking's (every
    good part it saves costs defects passed). Only the network's side moves, as it does on
    the line: the pit check's score is pinned to the threshold it is compared with
    (`pit_check.pit_score`), so a part it rejects (`pit_rejects`: a finding past its cut)
    stays rejected and no other joins it. That is why the pit check's verdicts are passed
    in, not read off the part's score: where the network is past the threshold too, the
    part's score is the network's, and would not say whether the pit check rejects it.
    """
    labels = np.asarray(labels).astype(bool)
    past = logits_past(network_scores, thresholds)
    pit_rejects = np.asarray(pit_rejects).astype(bool)
    rows = []
    for move in moves:
        rejected = (past >= move) | pit_rejects
        escapes = int(np.sum(labels & ~rejected))
        false_rejects = int(np.sum(~labels & rejected))
        accuracy = 1 - (escapes + false_rejects) / len(labels) if len(labels) else 0.0
        rows.append(MovedThreshold(move, escapes, false_rejects, round(accuracy, 5)))
    return rows


def _logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return float(np.log(p / (1 - p)))


def logits_past(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How far each score is past its threshold, in logits (negative: below it); scores
    within 1e-7 of 0 or 1 are taken as 1e-7 from them, as `_logit` takes them."""
    scores, thresholds = (
        np.clip(np.asarray(v, dtype=np.float64), 1e-7, 1 - 1e-7) for v in (scores, thresholds)
    )
    return np.log(scores / (1 - scores)) - np.log(thresholds / (1 - thresholds))


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def quality_gate(figures: Figures, min_accuracy: float, max_escape_rate: float) -> str | None:
    """Why a model must not be shipped (None: it passes): accuracy on held-out images at
    its threshold below `min_accuracy`, or more escapes than `max_escape_rate` allows."""
    problems = []
    if figures.accuracy < min_accuracy:
        problems.append(
            f"accuracy {figures.accuracy:.4f} < {min_accuracy} on {figures.n} held-out images"
        )
    defective = figures.missed_defects + figures.confusion.get("true_reject", 0)
    allowed = max_escape_rate * defective
    if figures.missed_defects > allowed:
        problems.append(
            f"{figures.missed_defects} escapes in {defective} held-out defective images "
            f"(at most {allowed:.2f} allowed: {max_escape_rate} per image)"
        )
    return "; ".join(problems) or None
