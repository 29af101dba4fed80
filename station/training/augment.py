"""Training augmentation, done on the full-resolution frame before the run-time preprocess.

Why here and not as Keras layers on the 192 px tensors: turning a small
image by an arbitrary angle interpolates every pixel, which smooths it. With
Keras' RandomRotation on the 192 px input almost every training image lost
about 30% of its high-frequency energy (variance of the Laplacian, 64
images), while validation and line images keep theirs, and the defects
(blow holes, burrs, pits) are exactly that kind of detail. Turning the
300 px frame with cubic interpolation and then shrinking it with
`preprocess` (the line's own INTER_AREA resize) keeps a turned frame as sharp
as a real one (0.0064 against 0.0060); at the 300 px input shipped since
2026-12-06 no resize follows, and the cubic turn alone keeps 0.96 or more of
each sample photo's detail (tests/test_augment.py). It did not stop validation
accuracy swinging between epochs; that is the batch-norm statistics (see
`architecture.py`).

Each batch draws from its own generator seeded by (seed, epoch, batch), so a
batch does not depend on which worker thread makes it.

Why good frames are mixed (`wedge_mix`, 2026-12-05): the folder holds photos of
213 defective castings but of only two dozen good ones, each photographed many
times turned and flipped. Out of fold, a network that trained on some 15 good
castings rejected most photos of a good casting it had never seen (fold 1: two of
its six good castings, 255 of 255 and 234 of 248 photos): it had learned "good
is one of these castings". A good frame with a wedge of another good casting laid
on it is a good part that no photo shows, so the good side stops being a short
list to remember. Out of fold (`station train --folds 3`, same folds as the run
before it): false rejects 1,237 to 1,059 of 2,764, escapes 1 to 1 (another photo),
good castings with a photo rejected 12 to 10 of 23. With each held-out fold's
threshold set by hindsight the fold networks would reject about as many good photos
as before (956 against 964): the gain is mostly in where the thresholds, chosen
without the held-out fold, land. The README has the figures.

A mixed frame has seams; so that a seam says nothing of the label, defective frames
get the same seams from a wedge of themselves, turned a little (a defect in the wedge
is lost only where the turn carries it out: on average 15 degrees of 360, one mixed
defective frame in 24).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import keras
import numpy as np

from station.classifier.flange import Circle, rim_circle
from station.classifier.preprocess import preprocess

SEAM_DEG = 4.0
"""Width of the blend at each side of a mixed-in wedge."""


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
    casting_mix: float = 0.5
    """Share of frames given a wedge (`wedge_mix`): a good frame one of another good
    frame, a defective frame one of itself turned by `self_turn_deg`."""
    wedge_deg: tuple[float, float] = (90.0, 180.0)
    self_turn_deg: tuple[float, float] = (5.0, 25.0)
    wedge_brightness: float = 0.08
    """The wedge's face brightness, matched to the frame's, then scaled by 1 +- this."""


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


def wedge_mix(
    frame: np.ndarray,
    rim: Circle,
    donor: np.ndarray,
    donor_rim: Circle,
    rng: np.random.Generator,
    aug: Augmentation,
    turn: float | None = None,
) -> np.ndarray:
    """`frame` (uint8) with a wedge of `donor` laid on it, rims on each other.

    The donor is mirrored half the time and turned by any angle (or by `turn` degrees,
    not mirrored), scaled and moved so that its rim lies on `rim`; its face (inside the
    rim) is given the frame's face's mean and spread, times 1 +- `wedge_brightness`; the
    wedge, `wedge_deg` wide from a random angle about the rim's centre, is blended over
    SEAM_DEG at each side.
    """
    height, width = frame.shape
    donor_x = donor_rim.x
    if turn is None:
        if rng.random() < 0.5:
            donor = np.ascontiguousarray(donor[:, ::-1])
            donor_x = width - 1 - donor_x
        turn = rng.uniform(0.0, 360.0)
    place = cv2.getRotationMatrix2D((donor_x, donor_rim.y), turn, rim.radius / donor_rim.radius)
    place[:, 2] += (rim.x - donor_x, rim.y - donor_rim.y)
    laid = cv2.warpAffine(
        donor, place, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101
    ).astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    face = np.hypot(xs - rim.x, ys - rim.y) < rim.radius
    own, theirs = frame[face].astype(np.float32), laid[face]
    gain = rng.uniform(1.0 - aug.wedge_brightness, 1.0 + aug.wedge_brightness)
    laid = (laid - theirs.mean()) * (own.std() / (theirs.std() + 1e-3)) + own.mean() * gain
    start = rng.uniform(-np.pi, np.pi)
    wedge = np.deg2rad(rng.uniform(*aug.wedge_deg))
    into = np.mod(np.arctan2(ys - rim.y, xs - rim.x) - start, 2 * np.pi)
    weight = np.clip(np.minimum(into, wedge - into) / np.deg2rad(SEAM_DEG) + 0.5, 0.0, 1.0)
    mixed = frame.astype(np.float32) * (1.0 - weight) + laid * weight
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


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
        self.good = np.flatnonzero(labels == 0)
        self.rims = [rim_circle(g) for g in greys] if augmentation.casting_mix > 0 else []

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = np.stack(
            [
                augmented_tensor(self._frame(i, rng), self.input_size, rng, self.augmentation)
                for i in rows
            ]
        )
        return images, self.labels[rows], self.weights[rows]

    def _frame(self, i: int, rng: np.random.Generator) -> np.ndarray:
        """Frame `i`, with a wedge laid on it `casting_mix` of the time (module docstring)."""
        aug = self.augmentation
        if aug.casting_mix <= 0 or rng.random() >= aug.casting_mix:
            return self.greys[i]
        if self.labels[i] == 0:
            j = int(self.good[rng.integers(len(self.good))])
            return wedge_mix(self.greys[i], self.rims[i], self.greys[j], self.rims[j], rng, aug)
        turn = float(rng.choice([-1.0, 1.0]) * rng.uniform(*aug.self_turn_deg))
        frame, rim = self.greys[i], self.rims[i]
        return wedge_mix(frame, rim, frame, rim, rng, aug, turn=turn)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()
