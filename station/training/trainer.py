"""`station train`: from a labelled folder to a model directory ready to ship.

Output folder: model.keras, model.tflite, model_card.json, training_curves.png,
confusion_matrix.png, score_histogram.png, pit_sensitivity.png, validation_scores.csv.
The threshold is chosen on the exported `.tflite`'s scores through LiteRT;
the validation figures are of exactly what the line will run: that model and
the pit check (`station.classifier.pit_check`), one part score.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import logging
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from station import plots
from station.classifier.litert_classifier import LiteRTModel
from station.classifier.model_card import MODEL_CARD_NAME, MODEL_FILE_NAME, ModelCard
from station.classifier.pit_check import CARD_SETTINGS, SCORE_COLUMNS, find_pit, part_score
from station.classifier.preprocess import preprocess
from station.dataset import (
    GROUPING_SIMILARITY,
    BadImage,
    LabelledFolder,
    Skipped,
    grouped_stratified_split,
    load_grey,
    manifest_sha256,
    near_duplicate_groups,
    rotation_invariant_signature,
    scan_labelled_folder,
)
from station.same_casting import SAME_CASTING_CORRELATION, casting_groups
from station.scoring import figures_at, quality_gate, zero_miss_threshold
from station.sensitivity import PitSensitivity, pit_sensitivity
from station.training.architecture import impeller_net
from station.training.augment import Augmentation, AugmentedBatches
from station.training.config import TrainConfig
from station.training.export import to_tflite
from station.training.kernels import pin as pin_kernels
from station.training.label_review import LabelReview, scan_reviewed_folder

log = logging.getLogger(__name__)


@dataclass
class LoadedImages:
    greys: np.ndarray
    """The frames as read (uint8, image_size square); training augments these."""
    tensors: np.ndarray
    """The same frames through `preprocess`; validation and scoring use these."""
    signatures: np.ndarray
    labels: np.ndarray
    paths: list[Path]
    skipped: list[Skipped]


def load_images(folder: LabelledFolder, config: TrainConfig) -> LoadedImages:
    greys, tensors, signatures, labels, paths = [], [], [], [], []
    skipped = list(folder.skipped)
    for sample in tqdm(folder.samples, desc="loading images", unit="img", mininterval=2):
        try:
            grey = load_grey(sample.path, (config.image_size, config.image_size))
        except BadImage as exc:
            log.warning("skipped %s", exc)
            skipped.append(Skipped(sample.path, str(exc)))
            continue
        greys.append(grey)
        tensors.append(preprocess(grey, config.input_size))
        signatures.append(rotation_invariant_signature(grey))
        labels.append(sample.label)
        paths.append(sample.path)
    for item in folder.skipped:
        log.warning("skipped %s: %s", item.path, item.reason)
    return LoadedImages(
        np.stack(greys),
        np.stack(tensors),
        np.stack(signatures),
        np.array(labels),
        paths,
        skipped,
    )


THRESHOLD_RULE = (
    "the network's scores of the validation parts: zero missed defects, every defect "
    "holding it (those the pit check rejects too), fewest false rejects, midpoint of the gap "
    "in logit space (scoring.zero_miss_threshold)"
)

SPLIT_METHODS = {
    "signature": "grouped stratified: near-duplicate groups kept on one side",
    "casting": "grouped stratified: physical castings (station.same_casting) kept on one "
    "side, the review's left-out photos grouped with them",
}


def validation_groups(
    images: LoadedImages, linking: LoadedImages | None, val_split: str
) -> np.ndarray:
    """The group of each image that the validation split keeps whole (`TrainConfig.val_split`);
    `linking`: the photos the label review leaves out, grouped by casting too."""
    if val_split == "signature":
        return near_duplicate_groups(images.signatures)
    if val_split != "casting":
        raise ValueError(f"val_split: {val_split!r} is neither 'signature' nor 'casting'")
    return castings_of(images, linking)


def castings_of(images: LoadedImages, linking: LoadedImages | None) -> np.ndarray:
    """The physical casting of each of `images` (`station.same_casting`), with `linking`
    grouped too though given no group of its own: the photos the label review leaves out are
    neither trained on nor scored, but the casting they show may be what links two groups
    of photos into one (the pinhole casting's 16 defective photos are linked mostly through
    its 111 left-out OK ones), and a casting split in two is seen by the side it is held
    out from."""
    greys, signatures = images.greys, images.signatures
    if linking is not None:
        greys = np.concatenate([greys, linking.greys])
        signatures = np.concatenate([signatures, linking.signatures])
    return casting_groups(greys, signatures)[0][: len(images.labels)]


def left_out_photos(
    data_dir: Path, review: LabelReview | None, config: TrainConfig
) -> LoadedImages | None:
    """The photos the label review leaves out, loaded as training loads photos: neither
    trained on nor scored, but grouped with the others, as the casting they show may link
    them. None where the review leaves nothing out."""
    if review is None:
        return None
    excluded = review.excluded()
    folder = scan_labelled_folder(data_dir)
    samples = [s for s in folder.samples if s.path.relative_to(folder.root).as_posix() in excluded]
    if not samples:
        return None
    return load_images(replace(folder, samples=samples, skipped=[]), config)


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Weight each class by n / (2 * n_class) so that OK parts (the minority) count as much."""
    counts = np.bincount(labels, minlength=2)
    return {c: float(len(labels) / (2 * counts[c])) for c in (0, 1)}


def train(
    data_dir: Path, out_dir: Path, config: TrainConfig, exclude: frozenset[Path] = frozenset()
) -> ModelCard:
    """Train, export, pick the threshold, write the card. `exclude`: images held out
    entirely (cross-validation's held-out fold), as if they were not in the folder."""
    started = time.monotonic()
    commit = _git_commit()  # the code that trains, not whatever is checked out at the end
    # The same kernels and thread count on every machine (kernels.py), then kernels that add
    # in a fixed order whatever order their threads finish in: the same command gives the
    # same model.tflite.
    kernels = pin_kernels()
    if not kernels.cpu_has_isa:
        log.warning(
            "this CPU (%s) does not report %s: the model may differ from one trained elsewhere",
            kernels.cpu,
            kernels.onednn_max_cpu_isa,
        )
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    out_dir.mkdir(parents=True, exist_ok=True)

    folder, review = scan_reviewed_folder(data_dir, config.label_review)
    if exclude:
        folder = replace(folder, samples=[s for s in folder.samples if s.path not in exclude])
    images = load_images(folder, config)
    linking = left_out_photos(data_dir, review, config) if config.val_split == "casting" else None
    groups = validation_groups(images, linking, config.val_split)
    train_idx, val_idx = grouped_stratified_split(
        images.labels, groups, config.val_fraction, config.seed
    )
    log.info(
        "%d images in %d %s groups; train %d, validation %d (%d defective); %d skipped",
        len(images.labels),
        groups.max() + 1,
        {"signature": "near-duplicate", "casting": "casting"}[config.val_split],
        len(train_idx),
        len(val_idx),
        int(images.labels[val_idx].sum()),
        len(images.skipped),
    )

    model = impeller_net(config.input_size, config.width)
    history, kept_epoch = _fit(model, images, train_idx, val_idx, config)
    model.save(out_dir / "model.keras")
    (out_dir / MODEL_FILE_NAME).write_bytes(to_tflite(model))

    litert = LiteRTModel(out_dir / MODEL_FILE_NAME, config.input_size)
    val_labels = images.labels[val_idx]
    network_scores = litert.score_parts(images.tensors[val_idx], config.views)
    # The threshold is the network's own, held by every defective validation photo, the
    # ones the pit check rejects too (scoring.zero_miss_threshold).
    threshold = zero_miss_threshold(val_labels, network_scores)
    pits = [find_pit(images.greys[i]) for i in val_idx]
    val_scores = np.array(
        [part_score(n, pit, CARD_SETTINGS, threshold) for n, pit in zip(network_scores, pits)]
    )
    figures = figures_at(val_labels, val_scores, threshold)
    _write_scores_csv(
        out_dir / "validation_scores.csv",
        [images.paths[i] for i in val_idx],
        val_labels,
        {
            "score": val_scores,
            "network_score": network_scores,
            **{
                name: np.array([pit.score_columns()[name] for pit in pits])
                for name in SCORE_COLUMNS
            },
        },
        folder.root,
    )

    used = set(images.paths)
    used_samples = [s for s in folder.samples if s.path in used]
    card = ModelCard(
        name="impeller_net",
        version=dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d"),
        created_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        architecture=f"ImpellerNet: stem conv + 4 depthwise-separable stages, width {config.width}",
        parameters=int(model.count_params()),
        input_size=config.input_size,
        test_time_views=config.views,
        preprocessing=f"grey, crop to ROI, INTER_AREA resize to {config.input_size}x"
        f"{config.input_size}, scale by 1/255 (station.classifier.preprocess)",
        threshold=threshold,
        threshold_rule=THRESHOLD_RULE,
        pit_check=CARD_SETTINGS,
        validation=figures,
        split={
            "method": SPLIT_METHODS[config.val_split],
            # the cut that made the groups: the signature's, or the aligned photos'
            **(
                {"grouping_similarity": GROUPING_SIMILARITY}
                if config.val_split == "signature"
                else {"same_casting_correlation": SAME_CASTING_CORRELATION}
            ),
            "groups": int(groups.max() + 1),
            "val_fraction": config.val_fraction,
            "seed": config.seed,
            "train_images": int(len(train_idx)),
            "val_images": int(len(val_idx)),
        },
        dataset={
            "path": recorded_path(data_dir),
            "manifest_sha256": manifest_sha256(used_samples, folder.root),
            "images_used": int(len(images.labels)),
            "defective": int(images.labels.sum()),
            "ok": int(len(images.labels) - images.labels.sum()),
            "skipped": len(images.skipped),
            **(review.card_entry() if review is not None else {}),
        },
        training={
            **asdict(config),
            "label_review": recorded_path(config.label_review),
            "epochs_run": len(history["loss"]),
            "best_epoch": kept_epoch,
            "seconds": round(time.monotonic() - started, 1),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            # Both change the model too: OpenCV makes the augmented frames and the resize
            # (4.14 and 5.x train different networks), NumPy draws the augmentation.
            "opencv": cv2.__version__,
            "numpy": np.__version__,
            "commit": commit,
            **kernels.as_card(),
        },
        model_sha256=hashlib.sha256((out_dir / MODEL_FILE_NAME).read_bytes()).hexdigest(),
    )
    sensitivity = _pit_sensitivity(
        out_dir, config, [images.paths[i] for i in val_idx], val_labels, threshold
    )
    failed = quality_gate(figures, config.min_accuracy, config.max_escape_rate)
    card = card.model_copy(
        update={
            "pit_sensitivity": sensitivity.card_entry(),
            "status": f"FAILED: {failed}" if failed else "passed",
        }
    )
    card.save(out_dir / MODEL_CARD_NAME)
    plots.pit_sensitivity(sensitivity, "validation OK photos", out_dir / "pit_sensitivity.png")
    plots.training_curves(
        history, out_dir / "training_curves.png", kept_epoch, selection_starts(config)
    )
    plots.confusion_matrix(
        figures, threshold, "validation split (LiteRT)", out_dir / "confusion_matrix.png"
    )
    plots.score_histogram(
        val_labels,
        val_scores,
        threshold,
        "validation split (LiteRT)",
        out_dir / "score_histogram.png",
    )
    return card


def learning_rate_schedule(
    config: TrainConfig, train_images: int
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Warm up over two epochs, then cosine-decay to 1% of the rate by the last epoch.

    The rate reaches its floor at `config.epochs`, so the last epochs make small
    steps: in the shipped run validation stopped collapsing after epoch 21 and
    stayed between 95% and 99.5% (0.5 cut) from epoch 30 on.
    """
    steps_per_epoch = -(-train_images // config.batch_size)
    warmup = 2 * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10,
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(1, config.epochs * steps_per_epoch - warmup),
        alpha=0.01,
    )


def _fit(
    model: keras.Model,
    images: LoadedImages,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    config: TrainConfig,
) -> tuple[dict[str, list[float]], int]:
    """Fit; the per-epoch history and the epoch whose weights are kept (from 1)."""
    train_batches = AugmentedBatches(
        images.greys[train_idx],
        images.labels[train_idx],
        class_weights(images.labels[train_idx]),
        config.input_size,
        config.batch_size,
        config.seed,
        Augmentation(casting_mix=config.casting_mix),
    )
    val_ds = tf.data.Dataset.from_tensor_slices(
        (images.tensors[val_idx], images.labels[val_idx].astype(np.float32))
    ).batch(256)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate_schedule(config, len(train_idx))),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss",
        patience=config.patience,
        restore_best_weights=True,
        start_from_epoch=selection_starts(config),
    )
    result = model.fit(
        train_batches,
        validation_data=val_ds,
        epochs=config.epochs,
        callbacks=[stopping],
        verbose=2,
    )
    history = {k: [float(v) for v in vals] for k, vals in result.history.items()}
    return history, stopping.best_epoch + 1


def selection_starts(config: TrainConfig) -> int:
    """Epochs run before the kept weights may be chosen: the first two thirds.

    At a high learning rate the validation loss swings between epochs (the
    2026-11-24 run: validation accuracy at 0.5 from 58% to 99% and back, epoch to
    epoch, until the rate had decayed), so the lowest loss early on is luck: that
    run stopped at epoch 26 with the weights of epoch 11, which passed 15 of the
    16 reviewed pinholes and 14 other defective training photos. Choosing among
    the last third, where the rate is below a quarter of its peak, keeps the
    settled weights; patience counts from there.
    """
    return config.epochs * 2 // 3


def _pit_sensitivity(
    out_dir: Path, config: TrainConfig, paths: list[Path], labels: np.ndarray, threshold: float
) -> PitSensitivity:
    """Synthetic pits on the held-out OK photos, judged as the line judges them: the
    exported model in LiteRT and the pit check, one part score."""
    litert = LiteRTModel(out_dir / MODEL_FILE_NAME, config.input_size)
    ok = [load_grey(p) for p, label in zip(paths, labels) if label == 0]

    def score(image: np.ndarray) -> float:
        network = litert.score_part(preprocess(image, config.input_size), config.views)
        return part_score(network, find_pit(image), CARD_SETTINGS, threshold)

    return pit_sensitivity(score, ok, threshold)


def _write_scores_csv(
    path: Path, paths: list[Path], labels: np.ndarray, columns: dict[str, np.ndarray], root: Path
) -> None:
    """file, label, then each of `columns` (`score` first: the part's score)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", *columns])
        for i, (p, label) in enumerate(zip(paths, labels)):
            values = [f"{column[i]:.6f}" for column in columns.values()]
            writer.writerow([p.relative_to(root).as_posix(), int(label), *values])


def recorded_path(path: str | Path) -> str:
    """`path` as the card records it, so that a card does not carry the path of the checkout
    that trained it and a retrain elsewhere writes the same card: relative to the project
    when it is in it (the label review shipped in the package), or in the `shared` folder
    beside it (`../shared/datasets/casting/train`, the layout the README gives); as given
    otherwise ('' stays '')."""
    if not path:
        return str(path)
    project = Path(__file__).resolve().parents[2]
    resolved = Path(path).resolve()
    if resolved.is_relative_to(project):
        return resolved.relative_to(project).as_posix()
    if resolved.is_relative_to(project.parent / "shared"):
        return Path("..", resolved.relative_to(project.parent)).as_posix()
    return str(path)


def _git_commit() -> str:
    """HEAD's short hash, with "+changes" if the package's code differs from it (the card
    then names code no commit holds); "unknown" outside a git checkout."""
    package = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=package,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", ".", ":!models"],  # code, not models
            capture_output=True,
            cwd=package,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if changed.returncode else "")
