#!/usr/bin/env python3
"""Can the shipped network learn painted pits if it starts from its own weights?

    .venv/bin/python tools/pit_finetune.py [--epochs 7] [--learning-rate 3e-4]
        [--pit-share 0.3] [--pit-diameter 2 8] [--pit-brightness 0.25 0.75]
        [--max-head] [--ok-only] [--start FILE.keras] [--out /tmp/pit-finetune]

Trains the shipped model further on its own training part (the training
folder less the photos its validation_scores.csv lists and those the label
review doubts), painting one pit (`station.sensitivity.paint_pit`, 2 to 8 px,
25% to 75% of the metal's brightness unless asked) on a share of the OK frames before the
turn, and labelling those defective. After each epoch it prints, on the
shipped model's validation split (mean of image and mirror, Keras), the
accuracy at that epoch's own zero-miss threshold and the share of the
validation OK photos rejected with one 2, 3, 4, 6 or 8 px pit at 30%
painted on them (the card's sensitivity table).

`--ok-only` trains on the OK photos alone (a pit is then the only thing
that makes a frame defective): whether the network can see the pits at all.

`--start FILE.keras` goes on from a model this tool saved (one epoch's
weights) instead of the shipped model.

`--max-head` adds a 1x1-convolution score map on the last stage, max-pooled
and added to the global logit; it starts at zero, so epoch 0 is the shipped
model. At the end it prints what the last model does in-sample (escapes and
false rejects on the unpainted training photos), how many of the photos
the label review doubts it rejects, and its detection of pits as faint as
the reviewed pinholes (0.86 of the metal); `--epochs 0 --start FILE` gives
that for a saved model. About 40 s an epoch on 2 cores. The 2026-12-04 runs and what they
showed are in `station/training/architecture.py`.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers

from station.classifier.preprocess import preprocess
from station.dataset import load_grey
from station.models import DEFAULT_MODEL_DIR
from station.scoring import figures_at, zero_miss_threshold
from station.sensitivity import PIT_DARKNESS, PIT_SIZES_PX, SEED, paint_pit
from station.training.augment import AugmentedBatches, augmented_tensor
from station.training.config import TrainConfig
from station.training.label_review import scan_reviewed_folder

PIT_DIAMETERS = (2.0, 8.0)
PIT_BRIGHTNESS = (0.25, 0.75)
"""Defaults of --pit-diameter and --pit-brightness: the range drawn from per painted frame."""


class PaintedBatches(AugmentedBatches):
    """`station train`'s batches (same order, same augmentation draws), with a pit painted
    on some OK frames, which are then labelled defective."""

    def __init__(
        self,
        greys: np.ndarray,
        labels: np.ndarray,
        pit_share: float,
        seed: int,
        input_size: int,
        diameters: tuple[float, float] = PIT_DIAMETERS,
        brightness: tuple[float, float] = PIT_BRIGHTNESS,
    ):
        counts = np.bincount(labels, minlength=2)
        weight = {c: len(labels) / (2 * max(1, counts[c])) for c in (0, 1)}  # --ok-only: no 1s
        super().__init__(greys, labels, weight, input_size=input_size, batch_size=64, seed=seed)
        self.pit_share, self.diameters, self.brightness = pit_share, diameters, brightness

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images, labels = [], []
        for i in rows:
            grey, label = self.greys[i], int(self.labels[i])
            if label == 0 and rng.random() < self.pit_share:
                grey, _ = paint_pit(
                    grey, rng.uniform(*self.diameters), rng, rng.uniform(*self.brightness)
                )
                label = 1
            images.append(augmented_tensor(grey, self.input_size, rng, self.augmentation))
            labels.append(label)
        return np.stack(images), np.array(labels, np.float32), self.weights[rows]


def with_max_head(model: keras.Model) -> keras.Model:
    """The shipped model plus a max-pooled local score map, added to its logit; starts equal."""
    features = model.get_layer("sep4_relu").output
    pooled = model.get_layer("dropout")(model.get_layer("pool")(features))
    global_logit = layers.Dense(1, name="global_logit")(pooled)
    score_map = layers.Conv2D(1, 1, name="score_map", kernel_initializer="zeros")(features)
    local_logit = layers.GlobalMaxPooling2D(name="local_logit")(score_map)
    output = layers.Activation("sigmoid")(layers.Add()([global_logit, local_logit]))
    grafted = keras.Model(model.input, output)
    grafted.get_layer("global_logit").set_weights(
        model.get_layer("defect_probability").get_weights()
    )
    return grafted


def scores(model: keras.Model, greys: list[np.ndarray] | np.ndarray) -> np.ndarray:
    tensors = np.stack([preprocess(g, model.input_shape[1]) for g in greys])
    plain = model.predict(tensors, batch_size=256, verbose=0).reshape(-1)
    mirror = model.predict(tensors[:, :, ::-1], batch_size=256, verbose=0).reshape(-1)
    return (plain + mirror) / 2


def report(model: keras.Model, tag: str, greys: np.ndarray, labels: np.ndarray) -> float:
    val = scores(model, greys)
    threshold = zero_miss_threshold(labels, val)
    figures = figures_at(labels, val, threshold)
    ok = greys[labels == 0]
    rng = np.random.default_rng(SEED)
    baseline = float(np.mean(scores(model, ok) >= threshold))
    detected = {}
    for size in PIT_SIZES_PX:
        painted = [paint_pit(g, size, rng, PIT_DARKNESS)[0] for g in ok]
        detected[size] = float(np.mean(scores(model, painted) >= threshold))
    print(
        f"[{tag}] threshold {threshold:.4f}: validation accuracy {figures.accuracy:.4f}, "
        f"{figures.missed_defects} missed, {figures.false_rejects} false rejects; unpainted OK "
        f"rejected {baseline:.3f}; pits detected "
        + ", ".join(f"{s} px {r:.1%}" for s, r in detected.items()),
        flush=True,
    )
    return threshold


def final_report(
    model: keras.Model,
    threshold: float,
    train: list,
    train_greys: np.ndarray,
    doubted: list[Path],
    val_ok: np.ndarray,
) -> None:
    """What the last model does on the photos it trained on (unpainted), on the photos the
    label review doubts, and with pits as faint as the reviewed pinholes (0.86)."""
    labels = np.array([s.label for s in train])
    figures = figures_at(labels, scores(model, train_greys), threshold)
    doubted_scores = scores(model, [load_grey(p) for p in doubted]) if doubted else np.array([])
    rng = np.random.default_rng(SEED)
    faint = {}
    for size in PIT_SIZES_PX:
        painted = [paint_pit(g, size, rng, 0.86)[0] for g in val_ok]
        faint[size] = float(np.mean(scores(model, painted) >= threshold))
    print(
        f"[final] in-sample at {threshold:.4f}: {figures.missed_defects} escapes of "
        f"{int(labels.sum())} defective, {figures.false_rejects} false rejects of "
        f"{int(len(labels) - labels.sum())} OK; doubted OK photos rejected "
        f"{int(np.sum(doubted_scores >= threshold))} of {len(doubted)}; pits at 0.86 detected "
        + ", ".join(f"{s} px {r:.1%}" for s, r in faint.items()),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/casting/train"))
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--pit-share", type=float, default=0.3)
    parser.add_argument("--pit-diameter", type=float, nargs=2, default=PIT_DIAMETERS)
    parser.add_argument("--pit-brightness", type=float, nargs=2, default=PIT_BRIGHTNESS)
    parser.add_argument("--max-head", action="store_true")
    parser.add_argument("--ok-only", action="store_true")
    parser.add_argument("--start", type=Path, default=DEFAULT_MODEL_DIR / "model.keras")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("/tmp/pit-finetune"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    folder, review = scan_reviewed_folder(args.data, TrainConfig().label_review)
    with (DEFAULT_MODEL_DIR / "validation_scores.csv").open() as f:
        validation = {row["file"] for row in csv.DictReader(f)}
    held_out = [s.path.relative_to(folder.root).as_posix() in validation for s in folder.samples]
    train = [
        s for s, v in zip(folder.samples, held_out) if not v and not (args.ok_only and s.label)
    ]
    val = [s for s, v in zip(folder.samples, held_out) if v]
    print(f"training on {len(train)} photos, validating on {len(val)}", flush=True)
    train_greys = np.stack([load_grey(s.path) for s in train])
    val_greys = np.stack([load_grey(s.path) for s in val])
    val_labels = np.array([s.label for s in val])

    model = keras.models.load_model(args.start)
    if args.max_head and "score_map" not in [layer.name for layer in model.layers]:
        model = with_max_head(model)
    threshold = report(model, "epoch 0", val_greys, val_labels)
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    batches = PaintedBatches(
        train_greys,
        np.array([s.label for s in train]),
        args.pit_share,
        args.seed,
        model.input_shape[1],
        tuple(args.pit_diameter),
        tuple(args.pit_brightness),
    )
    for epoch in range(1, args.epochs + 1):
        started = time.monotonic()
        history = model.fit(batches, epochs=1, verbose=0).history
        print(
            f"epoch {epoch}: training loss {history['loss'][0]:.4f}, "
            f"accuracy {history['accuracy'][0]:.4f} ({time.monotonic() - started:.0f} s)",
            flush=True,
        )
        threshold = report(model, f"epoch {epoch}", val_greys, val_labels)
        model.save(args.out / f"epoch_{epoch}.keras")
    doubted = [folder.root / name for name in review.excluded()] if review else []
    final_report(model, threshold, train, train_greys, doubted, val_greys[val_labels == 0])


if __name__ == "__main__":
    main()
