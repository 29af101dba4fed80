#!/usr/bin/env python3
"""Would the mean of two networks pass fewer defects out of fold? (a trial)

    .venv/bin/python tools/ensemble_trial.py CV_DIR OUT [--folds 0 1 2] [--seed-offset 1000]
        [--part-only [--reach 1.03]]

CV_DIR is a finished `station train --folds K` folder. For each fold asked
for, a second network is trained as the cross-validation trained that
fold's (the same training part, the same validation split, the same
recipe), with another training seed (the fold's seed plus `--seed-offset`:
other initial weights, other augmentation draws). It writes OUT/fold_K/
(the network, its card, its validation scores) and OUT/fold_K/held.csv,
its scores of the held-out fold. A fold with held.csv is not trained again.

`--part-only` (with `--seed-offset 0`, the fold's own seed): the second
network sees the part alone. Everything in the frame beyond `--reach`
times the rim's radius (`flange.rim_circle`; PART_REACH unless given) is
set to black, in training, in validation and on the held-out fold, so
neither the belt nor the rim's shadow (how a photo session lit and placed
the part; README, "What the photos give away without a defect") reaches
it; a wider reach lets the shadow and some belt back in. Signatures, grouping and
the pit check read the photos as taken.

Then, for every fold with both networks, it prints each network alone and
the mean of the two (of the scores, and of their logits): the threshold
`station train`'s rule picks on the shared validation split, the escapes and
false rejects on the held-out fold with the pit check beside the network,
as the line judges, the false rejects at the highest threshold that passes
no defect the pit check leaves to the network (by hindsight), and the
network's own AUC on the held-out fold. About 17 minutes a fold, 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import station.training.trainer as trainer  # noqa: E402
from station.classifier.flange import rim_circle  # noqa: E402
from station.classifier.litert_classifier import LiteRTModel  # noqa: E402
from station.classifier.model_card import MODEL_CARD_NAME, MODEL_FILE_NAME, ModelCard  # noqa: E402
from station.classifier.pit_check import CARD_SETTINGS, PitFinding  # noqa: E402
from station.classifier.preprocess import preprocess  # noqa: E402
from station.dataset import LabelledFolder  # noqa: E402
from station.scoring import roc_auc, zero_miss_threshold  # noqa: E402
from station.training.config import TrainConfig  # noqa: E402
from station.training.label_review import scan_reviewed_folder  # noqa: E402

PART_REACH = 1.03
"""The part alone (`--part-only`): the rim's radius times this (its outline, which a tilt
takes a pixel or two off the fitted circle, and no more of the belt)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cv_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seed-offset", type=int, default=1000)
    parser.add_argument("--part-only", action="store_true")
    parser.add_argument("--reach", type=float, default=PART_REACH)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/datasets/casting/train")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with _the_part_only(args.reach) if args.part_only else nullcontext():
        for k in args.folds:
            if not (args.out / f"fold_{k}" / "held.csv").is_file():
                train_second_network(
                    args.cv_dir, args.out / f"fold_{k}", k, args.seed_offset, args.data
                )
    compare(args.cv_dir, args.out, args.folds)


def train_second_network(cv_dir: Path, out: Path, k: int, offset: int, data: Path) -> None:
    """Fold k's training again, on the fold's own validation split, with another seed."""
    fold_card = ModelCard.load(cv_dir / f"fold_{k}" / MODEL_CARD_NAME)
    split_seed = int(fold_card.split["seed"])
    with (cv_dir / "folds.csv").open() as f:
        held = frozenset(data / row["file"] for row in csv.DictReader(f) if int(row["fold"]) == k)
    split = trainer.grouped_stratified_split
    # The fold's split, whatever the training seed. Put back after each fold: a second
    # fold would otherwise wrap the first one's split and keep its seed.
    trainer.grouped_stratified_split = lambda labels, groups, fraction, _seed: split(
        labels, groups, fraction, split_seed
    )
    config = TrainConfig()
    try:
        trainer.train(data, out, replace(config, seed=split_seed + offset), exclude=held)
    finally:
        trainer.grouped_stratified_split = split
    folder, _ = scan_reviewed_folder(data, config.label_review)
    folder = replace(folder, samples=[s for s in folder.samples if s.path in held])
    images = trainer.load_images(folder, config)  # the part alone too, with --part-only
    scores = LiteRTModel(out / MODEL_FILE_NAME, config.input_size).score_parts(
        images.tensors, config.views
    )
    with (out / "held.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "network_score"])
        for path, score in zip(images.paths, scores):
            writer.writerow([path.relative_to(data).as_posix(), f"{score:.6f}"])


def part_only(grey: np.ndarray, reach: float = PART_REACH) -> np.ndarray:
    """`grey` with everything beyond `reach` of the rim's radius set to black."""
    rim = rim_circle(grey)
    height, width = grey.shape
    ys, xs = np.ogrid[:height, :width]
    beyond = (xs - rim.x) ** 2 + (ys - rim.y) ** 2 > (reach * rim.radius) ** 2
    return np.where(beyond, np.uint8(0), grey)


@contextmanager
def _the_part_only(reach: float) -> Iterator[None]:
    """Training's loader gives the network the part alone (frames and tensors); its
    signatures, and so the grouping and the split, are the photos'. The pit check, which
    training runs on the validation frames it is given, is handed the photo as taken."""
    load, find_pit = trainer.load_images, trainer.find_pit
    taken: dict[bytes, np.ndarray] = {}

    def load_part_only(folder: LabelledFolder, config: TrainConfig) -> trainer.LoadedImages:
        images = load(folder, config)
        greys = np.stack([part_only(grey, reach) for grey in images.greys])
        for shown, grey in zip(greys, images.greys):
            taken[hashlib.sha1(shown.tobytes()).digest()] = grey
        tensors = np.stack([preprocess(grey, config.input_size) for grey in greys])
        return replace(images, greys=greys, tensors=tensors)

    trainer.load_images = load_part_only
    trainer.find_pit = lambda grey: find_pit(taken.get(hashlib.sha1(grey.tobytes()).digest(), grey))
    try:
        yield
    finally:
        trainer.load_images, trainer.find_pit = load, find_pit


def compare(cv_dir: Path, out: Path, folds: list[int]) -> None:
    totals: dict[str, np.ndarray] = {}
    for k in folds:
        if not (out / f"fold_{k}" / "held.csv").is_file():
            continue
        val = [_rows(d / f"fold_{k}" / "validation_scores.csv") for d in (cv_dir, out)]
        files = sorted(val[0])
        if set(val[1]) != set(files):
            raise ValueError(f"fold {k}: the two networks were validated on other photos")
        val_labels = np.array([int(val[0][f]["label"]) for f in files])
        val_scores = [np.array([float(v[f]["network_score"]) for f in files]) for v in val]
        oof = _rows(cv_dir / f"fold_{k}" / "oof.csv")
        second = {
            f: float(r["network_score"]) for f, r in _rows(out / f"fold_{k}" / "held.csv").items()
        }
        held = sorted(oof)
        labels = np.array([int(oof[f]["label"]) for f in held])
        caught = np.array([_caught(oof[f]) for f in held])
        held_scores = [
            np.array([float(oof[f]["network_score"]) for f in held]),
            np.array([second[f] for f in held]),
        ]
        ways = {
            "the fold's network": (val_scores[0], held_scores[0]),
            "the second network": (val_scores[1], held_scores[1]),
            "mean of scores": (np.mean(val_scores, 0), np.mean(held_scores, 0)),
            "mean of logits": (_mean_logit(val_scores), _mean_logit(held_scores)),
        }
        for name, (v, h) in ways.items():
            threshold = zero_miss_threshold(val_labels, v)
            rejected = (h >= threshold) | caught
            escapes = [held[i] for i in np.flatnonzero((labels == 1) & ~rejected)]
            false_rejects = int(np.sum((labels == 0) & rejected))
            lowest_left = h[(labels == 1) & ~caught].min()
            hindsight = int(np.sum((labels == 0) & ((h >= lowest_left) | caught)))
            print(
                f"fold {k}  {name:18s}  threshold {threshold:.3f}  escapes {len(escapes):2d}  "
                f"false rejects {false_rejects:4d}  by hindsight {hindsight:4d}  "
                f"AUC {roc_auc(labels, h):.4f}  {' '.join(Path(e).stem for e in escapes)}"
            )
            totals.setdefault(name, np.zeros(4, int))
            totals[name] += (len(escapes), false_rejects, hindsight, len(held))
    for name, (escapes, false_rejects, hindsight, n) in totals.items():
        accuracy = (n - escapes - false_rejects) / n
        print(
            f"all     {name:18s}  escapes {escapes}  false rejects {false_rejects}  "
            f"by hindsight {hindsight}  accuracy {accuracy:.2%} of {n}"
        )


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def _caught(row: dict[str, str]) -> bool:
    """The pit check's verdict from a scores CSV's columns (the card's cuts)."""
    return PitFinding.from_score_columns(row).is_pit(CARD_SETTINGS)


def _mean_logit(scores: list[np.ndarray]) -> np.ndarray:
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    return 1 / (1 + np.exp(-np.mean(np.log(p / (1 - p)), axis=0)))


if __name__ == "__main__":
    main()
