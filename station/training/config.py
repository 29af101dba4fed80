"""Training settings, in a module without TensorFlow so the CLI can show the defaults fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrainConfig:
    input_size: int = 300
    width: int = 16
    epochs: int = 45
    batch_size: int = 64
    learning_rate: float = 3e-3
    patience: int = 15
    val_fraction: float = 0.15
    val_split: str = "signature"
    """What the validation split keeps whole: "signature" (near-duplicate groups of the
    Fourier-Mellin signature) or "casting" (`station.same_casting`: every photo of one
    physical casting, so the kept epoch and the threshold are chosen on castings the
    network never trained on)."""
    seed: int = 20261122
    casting_mix: float = 0.5
    """Share of training frames given a wedge of another good frame, or of themselves
    (augment.wedge_mix; 0: none)."""
    views: int = 2
    """Test-time views: 1, or 2 for the mean of the image and its mirror image."""
    image_size: int = 300
    """Side of the images the folder must hold; others are skipped and counted."""
    min_accuracy: float = 0.998
    """Quality gate: accuracy on the held-out images at the model's threshold."""
    max_escape_rate: float = 0.001
    """Quality gate: missed defects per held-out defective image (1 in 1,000)."""
    label_review: str = str(Path(__file__).resolve().parent / "label_review.yaml")
    """Decisions on individual images (label_review.py); empty: none."""


RECIPE_KEYS = (
    "input_size",
    "width",
    "epochs",
    "batch_size",
    "learning_rate",
    "patience",
    "val_fraction",
    "views",
    "image_size",
    "casting_mix",
    "val_split",
)
"""The settings that shape the network, the seed aside: what must match between a model's
card and a cross-validation for its figures to be that model's recipe's (each fold trains
with its own seed), and what `station train` names first when its model is not the shipped
one (reproduction.py). The quality gate and the label review's path shape nothing (the
review's content is in the card's dataset entry)."""

CARDS_BEFORE = {"val_split": "signature"}
"""What a card written before a recipe key existed was trained with."""


def recorded(training: dict, key: str) -> object:
    """A card's `training` entry for `key`, as trained: what cards from before the key
    existed were trained with (CARDS_BEFORE), None if a card never said."""
    return training.get(key, CARDS_BEFORE.get(key))
