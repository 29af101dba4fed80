"""`station train --folds K`: grouped k-fold cross-validation, an out-of-fold score for every image.

A single validation split saturates (100% on 1,013 images says little about
the next casting). Here every image is held out exactly once: the folder's
photos are grouped by physical casting (`station.same_casting`: the same part
turned, flipped, shifted or zoomed) and whole castings are dealt into K folds,
stratified by class, so no fold model has seen a photo of a casting it is
scored on. (The signature's near-duplicate groups, used before 2026-11-24,
split castings: 4,220 of the 6,633 photos had a photo of their casting in
another fold.) Images the label review doubts are left out, as training
leaves them out, but only after the grouping: they are photos of castings too,
and may be what links two groups of photos into one casting (below). For each
fold the normal `station
train` recipe runs on the other K-1 folds (its own grouped validation split
inside them picks the threshold, so the held-out fold never touches it) and
the resulting model and the pit check score the held-out fold at that
threshold, as the line would. The merged
`oof_scores.csv` gives escapes, false rejects and accuracy over all images,
with each escape saved as an image; each fold model is held to the quality
gate on its own held-out fold.

Why the left-out photos are grouped too (2026-12-06): the one casting with a pinhole
that shows in photos of both labels has 16 defective photos, linked to one another
mostly through its 111 OK photos, which the review leaves out. Grouped without them,
the 16 fell into two groups of 10 and 6, dealt to two folds; each of those fold
networks had trained on the other group's photos of the same pinhole, and so did
every out-of-fold score of the 16 until then (another deal, `--seed 7`, passed 2 of
them all the same).

Resumable: the fold assignment is written first (`folds.csv`) and each
finished fold leaves `fold_K/oof.csv`; a stopped run picks up at the first
fold without one.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from station import plots
from station.classifier.litert_classifier import LiteRTModel
from station.classifier.model_card import MODEL_CARD_NAME, MODEL_FILE_NAME, ModelCard
from station.classifier.pit_check import SCORE_COLUMNS, PitFinding, find_pit, part_score
from station.dataset import load_grey
from station.scoring import figures_at, logits_past, moved_thresholds, quality_gate, roc_auc
from station.training.config import RECIPE_KEYS, TrainConfig, recorded
from station.training.label_review import scan_reviewed_folder
from station.training.trainer import (
    LoadedImages,
    castings_of,
    left_out_photos,
    load_images,
    train,
)

log = logging.getLogger(__name__)


def grouped_stratified_folds(
    labels: np.ndarray, groups: np.ndarray, folds: int, seed: int
) -> np.ndarray:
    """The fold of each image: whole groups, dealt in a seeded order to the fold that has
    the fewest images of the group's majority class so far."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=int)
    count = np.zeros((folds, 2))
    for g in rng.permutation(np.unique(groups)):
        members = np.nonzero(groups == g)[0]
        majority = int(round(labels[members].mean()))
        target = int(np.argmin(count[:, majority]))
        fold_of[members] = target
        count[target, majority] += len(members)
    return fold_of


@dataclass(frozen=True)
class FoldResult:
    fold: int
    images: int
    threshold: float
    accuracy: float
    escapes: int
    false_rejects: int
    auc: float | None
    """Area under the ROC curve of the held-out fold: the ranking, whatever the threshold."""
    gate: str
    """'passed' or why the fold model failed the quality gate."""


def cross_validate(data_dir: Path, out_dir: Path, config: TrainConfig, folds: int) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    folder, review = scan_reviewed_folder(data_dir, config.label_review)
    images = load_images(folder, config)
    names = [str(p.relative_to(folder.root)) for p in images.paths]
    linking = left_out_photos(data_dir, review, config)
    fold_of = _fold_assignment(out_dir / "folds.csv", names, images, linking, folds, config.seed)
    results = []
    for k in range(folds):
        held = np.nonzero(fold_of == k)[0]
        oof = out_dir / f"fold_{k}" / "oof.csv"
        if oof.is_file():
            with oof.open() as f:
                if next(csv.reader(f), None) != OOF_COLUMNS:
                    raise ValueError(
                        f"{oof}: written by an older station, without the pit check's "
                        "columns; use a new --out folder"
                    )
            log.info("fold %d of %d: done before, kept (%s)", k + 1, folds, oof)
        else:
            log.info("fold %d of %d: training on %d images", k + 1, folds, len(names) - len(held))
            _run_fold(data_dir, out_dir / f"fold_{k}", config, k, images, held, names)
        results.append(_fold_result(k, oof, config))
    left_out = len(review.excluded()) if review is not None else 0
    return _merge(out_dir, folder.root, results, config, left_out)


def _fold_assignment(
    path: Path,
    names: list[str],
    images: LoadedImages,
    linking: LoadedImages | None,
    folds: int,
    seed: int,
) -> np.ndarray:
    """Read the assignment a stopped run made (the same images, the same K), or make it.
    `linking`: photos grouped with `images` but not dealt (the review's left-out photos),
    so that a casting they link stays in one fold."""
    if path.is_file():
        with path.open() as f:
            stored = {row["file"]: int(row["fold"]) for row in csv.DictReader(f)}
        if set(stored) == set(names) and max(stored.values()) == folds - 1:
            return np.array([stored[n] for n in names])
        raise ValueError(
            f"{path}: made for other images or another --folds; use a new --out folder"
        )
    groups = castings_of(images, linking)
    fold_of = grouped_stratified_folds(images.labels, groups, folds, seed)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "casting", "fold"])
        for name, label, group, fold in zip(names, images.labels, groups, fold_of):
            writer.writerow([name, int(label), int(group), int(fold)])
    return fold_of


OOF_COLUMNS = [
    "file",
    "label",
    "score",
    "fold",
    "threshold",
    "network_score",
    *SCORE_COLUMNS,
]
"""`score` is the part's (network and pit check, as the line judges); the last six its
parts: the network's score, the flange's darkest spot, its sharpest dip, its darkest
round spot and its most isolated dip, and the face's darkest notch."""


def _run_fold(data_dir, fold_dir, config, k, images, held, names) -> None:
    held_paths = frozenset(images.paths[i] for i in held)
    card = train(data_dir, fold_dir, replace(config, seed=config.seed + k), exclude=held_paths)
    model = LiteRTModel(fold_dir / MODEL_FILE_NAME, config.input_size)
    networks = model.score_parts(images.tensors[held], config.views)
    tmp = fold_dir / "oof.csv.part"
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(OOF_COLUMNS)
        for i, network in zip(held, networks):
            pit = find_pit(images.greys[i])
            score = part_score(network, pit, card.pit_check, card.threshold)
            writer.writerow(
                [
                    names[i],
                    int(images.labels[i]),
                    f"{score:.6f}",
                    k,
                    card.threshold,
                    f"{network:.6f}",
                    *(f"{value:.6f}" for value in pit.score_columns().values()),
                ]
            )
    tmp.replace(fold_dir / "oof.csv")  # written last: its presence means the fold is done


def _fold_result(k: int, oof: Path, config: TrainConfig) -> FoldResult:
    rows = _read(oof)
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    threshold = float(rows[0]["threshold"])
    figures = figures_at(labels, scores, threshold)
    failed = quality_gate(figures, config.min_accuracy, config.max_escape_rate)
    card = ModelCard.load(oof.parent / "model_card.json")
    log.info("fold %d: %s; card %s", k, failed or "passed", card.status)
    return FoldResult(
        k,
        len(rows),
        threshold,
        figures.accuracy,
        figures.missed_defects,
        figures.false_rejects,
        roc_auc(labels, scores),
        f"FAILED: {failed}" if failed else "passed",
    )


def _merge(
    out_dir: Path, root: Path, results: list[FoldResult], config: TrainConfig, left_out: int
) -> dict:
    rows = [r for k in range(len(results)) for r in _read(out_dir / f"fold_{k}" / "oof.csv")]
    with (out_dir / "oof_scores.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=OOF_COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["file"]))
    escapes, false_rejects = [], []
    for r in rows:
        reject = float(r["score"]) >= float(r["threshold"])
        if int(r["label"]) == 1 and not reject:
            escapes.append(r)
        elif int(r["label"]) == 0 and reject:
            false_rejects.append(r)
    for kind, chosen in (("escapes", escapes), ("false_rejects", false_rejects)):
        for r in chosen:
            lines = [
                f"{kind[:-1]}: score {float(r['score']):.4f}",
                f"fold {r['fold']} threshold {float(r['threshold']):.4f}",
            ]
            target = out_dir / kind / (r["file"].replace("/", "__").rsplit(".", 1)[0] + ".png")
            plots.save_part(target, load_grey(root / r["file"]), None, lines, kind != "escapes")
    labels = np.array([int(r["label"]) for r in rows])
    part_scores = np.array([float(r["score"]) for r in rows])
    thresholds = np.array([float(r["threshold"]) for r in rows])
    network_scores = np.array([float(r["network_score"]) for r in rows])
    pit_settings = [
        ModelCard.load(out_dir / f"fold_{k}" / MODEL_CARD_NAME).pit_check
        for k in range(len(results))
    ]
    pit_rejects = np.array(
        [PitFinding.from_score_columns(r).is_pit(pit_settings[int(r["fold"])]) for r in rows]
    )
    summary = {
        "images": len(rows),
        "defective": int(labels.sum()),
        "escapes": len(escapes),
        "false_rejects": len(false_rejects),
        "accuracy": round(1 - (len(escapes) + len(false_rejects)) / len(rows), 5),
        "escape_files": sorted(r["file"] for r in escapes),
        "left_out_by_label_review": left_out,
        "folds": [r.__dict__ for r in results],
        "moved_thresholds": [
            asdict(row) for row in moved_thresholds(labels, network_scores, pit_rejects, thresholds)
        ],
        "all_folds_pass_gate": all(r.gate == "passed" for r in results),
        "gate": {"min_accuracy": config.min_accuracy, "max_escape_rate": config.max_escape_rate},
        "oof_scores": str(out_dir / "oof_scores.csv"),
    }
    (out_dir / "cv_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plots.oof_margins(
        labels,
        logits_past(part_scores, thresholds),
        f"out of fold, {len(results)} folds: {len(escapes)} escapes, "
        f"{len(false_rejects)} false rejects",
        out_dir / "oof_margins.png",
    )
    return summary


CV_METHOD = (
    "grouped stratified K-fold by physical casting (station.same_casting): no casting in "
    "two folds; doubted labels left out; each fold's threshold chosen on a validation "
    "split of its training part"
)


def attach_to_card(summary: dict, out_dir: Path, model_dir: Path, config: TrainConfig) -> None:
    """Write the out-of-fold figures into the model card of `model_dir` (and the scores and
    the margins plot beside it), after checking that the card's recipe is this one."""
    card_path = model_dir / MODEL_CARD_NAME
    card = ModelCard.load(card_path)
    ours = asdict(config)
    for key in RECIPE_KEYS:
        theirs = recorded(card.training, key)
        if theirs != ours[key]:
            raise ValueError(
                f"{card_path}: training.{key} is {theirs!r}, this "
                f"cross-validation ran with {ours[key]!r}; its figures are not this model's"
            )
    entry = {k: summary[k] for k in ("images", "defective", "escapes", "false_rejects")}
    entry.update(
        accuracy=summary["accuracy"],
        folds=len(summary["folds"]),
        method=CV_METHOD,
        left_out_by_label_review=summary["left_out_by_label_review"],
        escape_files=summary["escape_files"],
        per_fold=[
            {
                k: f[k]
                for k in ("fold", "images", "accuracy", "escapes", "false_rejects", "auc", "gate")
            }
            for f in summary["folds"]
        ],
        all_folds_pass_gate=summary["all_folds_pass_gate"],
        moved_thresholds=summary["moved_thresholds"],
        scores="cv_oof_scores.csv",
        plot="cv_oof_margins.png",
    )
    card.model_copy(update={"cross_validation": entry}).save(card_path)
    shutil.copyfile(out_dir / "oof_scores.csv", model_dir / "cv_oof_scores.csv")
    shutil.copyfile(out_dir / "oof_margins.png", model_dir / "cv_oof_margins.png")
    log.info("out-of-fold figures written into %s", card_path)


def _read(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))
