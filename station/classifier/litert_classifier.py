"""Inference with LiteRT (ai-edge-litert): the classifier `station run` uses.

One interpreter, one thread: the line PC has other work (camera, link,
audit) and a single-image latency well under a millisecond needs no more.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from station.classifier.model_card import (
    MODEL_CARD_NAME,
    MODEL_FILE_NAME,
    ModelCard,
    ModelCardError,
)
from station.classifier.pit_check import PitFinding, find_pit, part_score
from station.classifier.preprocess import Roi, crop, preprocess
from station.models import DEFAULT_MODEL_DIR


class ModelLoadError(RuntimeError):
    """The model cannot be used: missing, corrupt, or not the shape its card says."""


@dataclass(frozen=True)
class Decision:
    score: float
    defective: bool


@dataclass(frozen=True)
class Inspection:
    """What the decision rests on: the network's score, the pit check's findings, and the
    part's score made of both (`pit_check.part_score`), which the threshold judges."""

    score: float
    network_score: float
    pit: PitFinding
    """The flange's darkest spot, sharpest dip and darkest round spot, in the crop's pixels."""


class LiteRTModel:
    """A `.tflite` file in a LiteRT interpreter: one grey square image in, one score out."""

    def __init__(self, model_path: Path, input_size: int | None = None, num_threads: int = 1):
        self.path = Path(model_path)
        self.interpreter = _open_interpreter(self.path, num_threads)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        shapes = [tuple(int(v) for v in d["shape"]) for d in inputs]
        if len(inputs) != 1 or len(shapes[0]) != 4 or shapes[0][0] != 1 or shapes[0][3] != 1:
            raise ModelLoadError(f"{self.path}: input shape {shapes}, expected (1, size, size, 1)")
        self.input_size = shapes[0][1]
        if input_size is not None and shapes[0][1:3] != (input_size, input_size):
            raise ModelLoadError(
                f"{self.path}: input shape {shapes[0]} does not match the expected "
                f"(1, {input_size}, {input_size}, 1)"
            )
        if inputs[0]["dtype"] != np.float32:
            raise ModelLoadError(f"{self.path}: input type {inputs[0]['dtype']} is not float32")
        if len(outputs) != 1 or int(np.prod(outputs[0]["shape"][1:])) != 1:
            raise ModelLoadError(f"{self.path}: expected one score per image in the output")
        self._input_index = inputs[0]["index"]
        self._output_index = outputs[0]["index"]

    def score_tensor(self, tensor: np.ndarray) -> float:
        """Score one preprocessed (size, size, 1) float32 tensor."""
        self.interpreter.set_tensor(self._input_index, tensor[np.newaxis])
        self.interpreter.invoke()
        return float(self.interpreter.get_tensor(self._output_index).reshape(-1)[0])

    def score_part(self, tensor: np.ndarray, views: int) -> float:
        """The part's defect score: one view, or the mean of the view and its mirror image.

        Parts lie at any angle, so a mirror image is as valid a view as the original;
        averaging the two steadies the score of small defects that one view catches
        weakly (on validation, for the first model: 9 false rejects at zero missed
        defects instead of 59).
        """
        score = self.score_tensor(tensor)
        if views == 2:
            score = (score + self.score_tensor(np.ascontiguousarray(tensor[:, ::-1]))) / 2
        return score

    def score_parts(self, tensors: np.ndarray, views: int) -> np.ndarray:
        return np.array([self.score_part(t, views) for t in tensors], dtype=np.float64)


class Classifier:
    """The shipped decision: the network's score in LiteRT and the pit check on the same
    crop, one part score, compared with the threshold."""

    def __init__(
        self,
        model_dir: Path = DEFAULT_MODEL_DIR,
        threshold: float | None = None,
        num_threads: int = 1,
    ):
        model_dir = Path(model_dir)
        try:
            self.card = ModelCard.load(model_dir / MODEL_CARD_NAME)
        except ModelCardError as exc:
            raise ModelLoadError(str(exc)) from None
        if self.card.status.startswith("FAILED"):
            raise ModelLoadError(
                f"{model_dir / MODEL_CARD_NAME}: model marked {self.card.status}; a model that "
                "failed its quality gate must not run a line"
            )
        self.model = LiteRTModel(model_dir / MODEL_FILE_NAME, self.card.input_size, num_threads)
        self.input_size = self.card.input_size
        self.threshold = self.card.threshold if threshold is None else threshold
        if not 0.0 < self.threshold < 1.0:
            raise ModelLoadError(f"threshold {self.threshold} is outside (0, 1)")
        self.model_sha256 = hashlib.sha256(self.model.path.read_bytes()).hexdigest()
        if self.model_sha256 != self.card.model_sha256:
            raise ModelLoadError(
                f"{self.model.path}: sha256 {self.model_sha256[:12]}... does not match the "
                f"model card's {self.card.model_sha256[:12]}...; the card belongs to another model"
            )
        self.version = f"{self.card.name}-{self.card.version}-{self.model_sha256[:8]}"

    def inspect(self, image: np.ndarray, roi: Roi | None = None) -> Inspection:
        """The part in `image` (uint8, grey or BGR; `roi` its crop, None: all of it)."""
        part = crop(image, roi)
        network = self.model.score_part(
            preprocess(part, self.input_size), self.card.test_time_views
        )
        pit = find_pit(part)
        score = part_score(network, pit, self.card.pit_check, self.threshold)
        return Inspection(score, network, pit)

    def score(self, image: np.ndarray, roi: Roi | None = None) -> float:
        """The part's score: at or above the threshold, it is defective."""
        return self.inspect(image, roi).score

    def decide(self, image: np.ndarray, roi: Roi | None = None) -> Decision:
        score = self.score(image, roi)
        return Decision(score=score, defective=score >= self.threshold)


def _open_interpreter(model_path: Path, num_threads: int) -> Interpreter:
    if not model_path.is_file():
        raise ModelLoadError(f"{model_path}: model file not found")
    try:
        interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{model_path}: not a usable TFLite model ({exc})") from None
    return interpreter
