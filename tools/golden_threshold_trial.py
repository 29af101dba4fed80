#!/usr/bin/env python3
"""Whether a threshold set on a line's own golden samples fits castings the network never saw.

    .venv/bin/python tools/golden_threshold_trial.py CV_DIR [CV_DIR ...]
                     [--good-castings 1 2 3] [--draws 200]

Out of fold, each fold's threshold is chosen on castings its network trained on,
and the good castings it has not seen score higher (README, "The full 300 px
frame"). A plant would set the threshold on its own parts instead (`station
calibrate threshold`: every defective sample held, the fewest false rejects).
This measures that from a finished cross-validation (`station train --folds`),
scores only, in seconds: in each fold, some of the held-out castings are the
golden samples (G good castings and 10 G defective ones, drawn at random; every
photo of each), the threshold is chosen on their network scores by the calibrate
rule (`scoring.zero_miss_threshold`), and the fold's other held-out photos are
judged as the line judges them (the network's score or the pit check's, on the
findings saved in `oof.csv` and the fold card's cuts). Golden photos are not
counted. Prints, per G, the escapes, false rejects and accuracy over the draws.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from station.classifier.model_card import ModelCard  # noqa: E402
from station.classifier.pit_check import PitFinding, part_score  # noqa: E402
from station.scoring import zero_miss_threshold  # noqa: E402

DEFECTIVE_PER_GOOD = 10
"""Defective golden castings per good one: the folder's ratio of castings (213 to 23)."""


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def judged_once(folds: list[list[dict]], castings: dict[str, str], cards: list, good: int, rng):
    """(escapes, false rejects, photos judged) over every fold, for one draw of goldens."""
    escapes = false_rejects = judged = 0
    for rows, settings in zip(folds, cards):
        by_label = {
            label: sorted({castings[r["file"]] for r in rows if r["label"] == label})
            for label in ("0", "1")
        }
        golden = set(rng.choice(by_label["0"], good, replace=False)) | set(
            rng.choice(by_label["1"], DEFECTIVE_PER_GOOD * good, replace=False)
        )
        samples = [r for r in rows if castings[r["file"]] in golden]
        threshold = zero_miss_threshold(
            np.array([int(r["label"]) for r in samples]),
            np.array([float(r["network_score"]) for r in samples]),
        )
        for r in rows:
            if castings[r["file"]] in golden:
                continue
            pit = PitFinding.from_score_columns(r)
            rejected = part_score(float(r["network_score"]), pit, settings, threshold) >= threshold
            escapes += r["label"] == "1" and not rejected
            false_rejects += r["label"] == "0" and rejected
            judged += 1
    return escapes, false_rejects, judged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dirs", nargs="+", type=Path)
    parser.add_argument("--good-castings", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args()
    for cv_dir in args.cv_dirs:
        castings = {r["file"]: r["casting"] for r in _rows(cv_dir / "folds.csv")}
        fold_dirs = sorted(cv_dir.glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
        folds = [_rows(d / "oof.csv") for d in fold_dirs]
        cards = [ModelCard.load(d / "model_card.json").pit_check for d in fold_dirs]
        for good in args.good_castings:
            rng = np.random.default_rng(0)
            draws = np.array(
                [judged_once(folds, castings, cards, good, rng) for _ in range(args.draws)]
            )
            escapes, false_rejects, judged = draws.T
            accuracy = 1 - (escapes + false_rejects) / judged
            print(
                f"{cv_dir}: golden {good} good + {DEFECTIVE_PER_GOOD * good} defective castings "
                f"a fold, {args.draws} draws: escapes median {np.median(escapes):.0f} "
                f"(90th percentile {np.percentile(escapes, 90):.0f}), false rejects median "
                f"{np.median(false_rejects):.0f} (10th to 90th percentile "
                f"{np.percentile(false_rejects, 10):.0f} to {np.percentile(false_rejects, 90):.0f}"
                f"), accuracy median {np.median(accuracy):.2%}"
            )


if __name__ == "__main__":
    main()
