#!/usr/bin/env python3
"""One test-time view against the card's two, out of fold, from finished cross-validations.

    .venv/bin/python tools/views_trial.py CV_DIR [CV_DIR ...] [--data DIR]

The decision runs the network twice, on the part and on its mirror image, and
averages the two (`LiteRTModel.score_part`): about 0.45 ms of its p99 on this
machine. This says what the second view buys. For each fold of each
cross-validation (`station train --folds`): the fold's own network scores its
validation photos and its held-out photos again, with one view and with two;
the threshold is chosen on the validation scores as training chooses it
(`scoring.zero_miss_threshold`); each held-out photo is judged as the line
judges it, the larger of the network's score and the pit check's (the fold
card's cuts, on the findings saved in `oof.csv`). The two-view scores must
equal the saved ones, or the script stops: it then measures the run it names.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np

from station.classifier.litert_classifier import LiteRTModel
from station.classifier.model_card import ModelCard
from station.classifier.pit_check import PitFinding, part_score
from station.classifier.preprocess import preprocess
from station.dataset import load_grey
from station.scoring import zero_miss_threshold

REPO = Path(__file__).resolve().parent.parent
SAVED_SCORE_TOLERANCE = 2e-6
"""oof.csv keeps six decimals."""


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _scores(model: LiteRTModel, data: Path, rows: list[dict[str, str]], views: int) -> np.ndarray:
    tensors = (preprocess(load_grey(data / r["file"]), model.input_size) for r in rows)
    return np.array([model.score_part(t, views) for t in tensors])


def fold_figures(fold: Path, data: Path, views: int) -> tuple[float, list[str], int, int]:
    """The fold judged with `views`: its threshold, the escapes' files, the false rejects
    and the held-out photos."""
    model = LiteRTModel(fold / "model.tflite")
    settings = ModelCard.load(fold / "model_card.json").pit_check
    validation, held_out = _rows(fold / "validation_scores.csv"), _rows(fold / "oof.csv")
    threshold = zero_miss_threshold(
        np.array([int(r["label"]) for r in validation]),
        _scores(model, data, validation, views),
    )
    network = _scores(model, data, held_out, views)
    if views == 2:
        saved = np.array([float(r["network_score"]) for r in held_out])
        if not np.allclose(network, saved, atol=SAVED_SCORE_TOLERANCE):
            raise SystemExit(f"{fold}: the network's scores are not the saved ones")
    escapes, false_rejects = [], 0
    for row, score in zip(held_out, network):
        finding = PitFinding.from_score_columns(row)
        rejected = part_score(score, finding, settings, threshold) >= threshold
        if row["label"] == "1" and not rejected:
            escapes.append(Path(row["file"]).stem)
        false_rejects += row["label"] == "0" and rejected
    return threshold, escapes, false_rejects, len(held_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cv_dirs", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/datasets/casting/train")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    for cv_dir in args.cv_dirs:
        for views in (1, 2):
            escapes, false_rejects, images = 0, 0, 0
            for fold in sorted(cv_dir.glob("fold_*")):
                threshold, missed, rejected, n = fold_figures(fold, args.data, views)
                print(
                    f"{cv_dir} {fold.name}, {views} view(s): threshold {threshold:.3f}, "
                    f"{len(missed)} escaped {missed}, {rejected} false rejects of {n}"
                )
                escapes, false_rejects, images = (
                    escapes + len(missed),
                    false_rejects + rejected,
                    images + n,
                )
            accuracy = 1 - (escapes + false_rejects) / images
            print(
                f"{cv_dir}, {views} view(s): {escapes} escaped, {false_rejects} false rejects, "
                f"accuracy {accuracy:.2%}"
            )


if __name__ == "__main__":
    main()
