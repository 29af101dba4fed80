#!/usr/bin/env python3
"""Whether an int8 network would shorten the decision: the shipped network quantised, timed
and scored against the float one.

    .venv/bin/python tools/int8_trial.py [--model station/models/default]
                     [--data ../shared/datasets/casting/train] [--every 5] [--runs 1000]

Issue 13 asks for the whole decision in 2 ms at p99 and welcomes int8 if its
accuracy is measured; the network's two views are about 0.9 ms of it. The
model's `model.keras` is converted twice: weights in int8 with float
activations ("dynamic range"), and weights and activations in int8 with float
input and output kept ("full integer", calibrated on 300 training photos and
their mirrors, drawn with seed 0), so either would load where the float model
does (`LiteRTModel`). Each is timed on one photo as `station bench` times the
network (one thread, 50 warm-up runs), and every `--every`-th photo of the
folder (less the label review's doubted photos, as training leaves them out) is
scored with the card's two views by the float model and by each
int8 one: the largest change of a score, and the defective photos passed and
good ones rejected by the network alone at the card's threshold (the pit check
does not change with the network's arithmetic).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from station.classifier.litert_classifier import LiteRTModel  # noqa: E402
from station.classifier.model_card import ModelCard  # noqa: E402
from station.classifier.preprocess import preprocess  # noqa: E402
from station.dataset import load_grey  # noqa: E402
from station.training.config import TrainConfig  # noqa: E402
from station.training.label_review import scan_reviewed_folder  # noqa: E402

CALIBRATION_PHOTOS = 300


def convert(model_dir: Path, photos: list[Path], size: int, full_integer: bool) -> bytes:
    import keras
    import tensorflow as tf

    model = keras.models.load_model(model_dir / "model.keras", compile=False)

    def calibration():
        for path in photos:
            tensor = preprocess(load_grey(path), size)
            yield [tensor[np.newaxis]]
            yield [np.ascontiguousarray(tensor[:, ::-1])[np.newaxis]]

    with tempfile.TemporaryDirectory() as saved_model_dir:
        model.export(saved_model_dir, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if full_integer:
            converter.representative_dataset = calibration
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()


def timed(model: LiteRTModel, tensor: np.ndarray, runs: int) -> tuple[float, float]:
    """p50 and p99 of one view, in ms."""
    for _ in range(50):
        model.score_tensor(tensor)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.score_tensor(tensor)
        times.append(time.perf_counter() - start)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "station/models/default")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/datasets/casting/train")
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    card = ModelCard.load(args.model / "model_card.json")
    folder, _ = scan_reviewed_folder(args.data, TrainConfig().label_review)
    paths, labels = [s.path for s in folder.samples], folder.labels.astype(bool)
    rng = np.random.default_rng(0)
    calibration = [paths[i] for i in rng.choice(len(paths), CALIBRATION_PHOTOS, replace=False)]
    models = {"float (shipped)": LiteRTModel(args.model / "model.tflite", card.input_size)}
    with tempfile.TemporaryDirectory() as out:
        for name, full in (("int8 dynamic range", False), ("int8 full integer", True)):
            path = Path(out) / f"{name.replace(' ', '_')}.tflite"
            path.write_bytes(convert(args.model, calibration, card.input_size, full))
            models[name] = LiteRTModel(path, card.input_size)
        sample = preprocess(load_grey(paths[0]), card.input_size)
        chosen = range(0, len(paths), args.every)
        tensors = [preprocess(load_grey(paths[i]), card.input_size) for i in chosen]
        truth = labels[list(chosen)]
        scores = {}
        for name, model in models.items():
            p50, p99 = timed(model, sample, args.runs)
            scores[name] = model.score_parts(np.stack(tensors), card.test_time_views)
            rejected = scores[name] >= card.threshold
            change = np.abs(scores[name] - scores["float (shipped)"]).max()
            print(
                f"{name:20s} one view p50 {p50:.3f} ms, p99 {p99:.3f} ms; over {len(truth)} "
                f"photos: largest score change {change:.4f}, network alone passes "
                f"{int((truth & ~rejected).sum())} defective, rejects "
                f"{int((~truth & rejected).sum())} good"
            )


if __name__ == "__main__":
    main()
