"""Training augmentation, done on the full-resolution frame before the run-time preprocess.

Why here and not as Keras layers on the 192 px tensors: turning a small
image by an arbitrary angle interpolates every pixel, which smooths it. With
Keras' RandomRotation on the 192 px input almost every training image lost
about 30% of its high-frequency energy (variance of the Laplacian, 64
images), while validation and line images keep theirs, and the defects
(blow holes, burrs, pits) are exactly that kind of detail. Turning the
300 px frame with cubic interpolation and then shrinking it with
`preprocess` (the line's own INTER_AREA resize) keeps a turned frame as sharp
as a real one (0.0064 against 0.0060). It did not stop validation
accuracy swinging between epochs; that is the batch-norm statistics (see
`architecture.py`).

Each batch draws from its own generator seeded by (seed, epoch, batch), so a
batch does not depend on which worker thread makes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import keras
import numpy as np

from station.classifier.preprocess import preprocess


@dataclass(frozen=True)
class Augmentation:
    """Ranges drawn per image. Parts are seen from above at any angle, so
    flips and a full turn are always on; light and focus vary mildly."""

    brightness: float = 0.1
    """Added to the [0, 1] image, drawn from +-brightness."""
    contrast: float = 0.15
    """Deviation from the image mean scaled by 1 +- contrast."""
    blur_probability: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    """Gaussian sigma in frame pixels (before the shrink to the model input)."""


def turn_and_blur(grey: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """Mirror (half the time), turn by any angle, and sometimes defocus a uint8 frame."""
    if rng.random() < 0.5:
        grey = grey[:, ::-1]
    h, w = grey.shape
    turn = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), rng.uniform(0.0, 360.0), 1.0)
    grey = cv2.warpAffine(
        grey, turn, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101
    )
    if rng.random() < aug.blur_probability:
        grey = cv2.GaussianBlur(grey, (0, 0), rng.uniform(*aug.blur_sigma))
    return grey


def relight(tensor: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """Change contrast about the image mean and add a brightness offset; stay in [0, 1]."""
    mean = float(tensor.mean())
    factor = rng.uniform(1.0 - aug.contrast, 1.0 + aug.contrast)
    offset = rng.uniform(-aug.brightness, aug.brightness)
    return np.clip((tensor - mean) * factor + mean + offset, 0.0, 1.0)


def augmented_tensor(
    grey: np.ndarray, input_size: int, rng: np.random.Generator, aug: Augmentation
) -> np.ndarray:
    """One training view of a frame, ending in the same `preprocess` the line runs."""
    return relight(preprocess(turn_and_blur(grey, rng, aug), input_size), rng, aug)


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled, augmented, class-weighted batches of uint8 frames for `model.fit`.

    Yields (images, labels, sample weights); the weights carry the class
    weights so that OK parts, the minority, count as much as defective ones.
    """

    def __init__(
        self,
        greys: np.ndarray,
        labels: np.ndarray,
        class_weight: dict[int, float],
        input_size: int,
        batch_size: int,
        seed: int,
        augmentation: Augmentation = Augmentation(),
        workers: int = 2,
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
        self.greys = greys
        self.labels = labels.astype(np.float32)
        self.weights = np.array([class_weight[int(c)] for c in labels], np.float32)
        self.input_size = input_size
        self.batch_size = batch_size
        self.seed = seed
        self.augmentation = augmentation
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = np.stack(
            [augmented_tensor(self.greys[i], self.input_size, rng, self.augmentation) for i in rows]
        )
        return images, self.labels[rows], self.weights[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()
