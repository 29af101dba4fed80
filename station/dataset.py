"""Labelled image folders (`def_front/`, `ok_front/`) and an honest validation split.

Used by training, evaluation and threshold calibration. Every unreadable or
unexpected file is reported by name and counted, never silently dropped.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from station.camera.sources import decode_image_file

log = logging.getLogger(__name__)

CLASS_FOLDERS = {"def_front": 1, "ok_front": 0}
"""Folder name -> label; 1 is defective (the positive class: reject)."""

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
COLOUR_TOLERANCE = 3.0
"""Mean absolute difference (grey levels) between channels above which an image is colour.

The casting JPEGs store grey as three equal channels; JPEG chroma
subsampling leaves differences of about one grey level.
"""


class DatasetError(ValueError):
    """The folder cannot be used at all (missing, empty, or a class folder missing)."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass
class LabelledFolder:
    root: Path
    samples: list[Sample]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)


def scan_labelled_folder(root: Path) -> LabelledFolder:
    """List the images under `root/def_front` and `root/ok_front`.

    Files that are not images are skipped with a reason; a missing class
    folder or an empty set is fatal, because training or evaluating on one
    class only gives figures that mean nothing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    missing = [name for name in CLASS_FOLDERS if not (root / name).is_dir()]
    if missing:
        raise DatasetError(
            f"{root}: class folder(s) missing: {', '.join(missing)} "
            f"(expected {' and '.join(CLASS_FOLDERS)})"
        )
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    for name, label in CLASS_FOLDERS.items():
        for path in sorted((root / name).iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(path, label))
            elif path.is_file():
                skipped.append(Skipped(path, f"not an image file (suffix {path.suffix!r})"))
    for name, label in CLASS_FOLDERS.items():
        if not any(s.label == label for s in samples):
            raise DatasetError(f"{root / name}: no images")
    return LabelledFolder(root, samples, skipped)


class BadImage(ValueError):
    """One image cannot be used; the message names the file and why."""


def load_grey(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file as 2-D uint8 grey, refusing corrupt, colour or mis-sized files."""
    try:
        image = decode_image_file(path)
    except ValueError as exc:
        raise BadImage(str(exc)) from None
    if image.ndim == 3 and image.shape[2] >= 3:
        channels = image[:, :, :3].astype(np.int16)
        spread = max(
            float(np.abs(channels[:, :, 0] - channels[:, :, 1]).mean()),
            float(np.abs(channels[:, :, 1] - channels[:, :, 2]).mean()),
        )
        if spread > COLOUR_TOLERANCE:
            raise BadImage(
                f"{path}: colour image (channels differ by {spread:.1f} grey levels on average); "
                "the station is trained on grey images"
            )
        image = image[:, :, 0]
    elif image.ndim == 3:
        image = image[:, :, 0]
    if expected_size is not None and image.shape[:2] != (expected_size[1], expected_size[0]):
        raise BadImage(
            f"{path}: {image.shape[1]}x{image.shape[0]} pixels, expected "
            f"{expected_size[0]}x{expected_size[1]}"
        )
    return image


def manifest_sha256(samples: list[Sample], root: Path) -> str:
    """One hash over every used file's relative path and content: which data made a model."""
    digest = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: s.path.as_posix()):
        file_hash = hashlib.sha256(sample.path.read_bytes()).hexdigest()
        digest.update(f"{file_hash}  {sample.path.relative_to(root).as_posix()}\n".encode())
    return digest.hexdigest()


# --- near-duplicate groups -------------------------------------------------

GROUPING_SIMILARITY = 0.97
"""Cosine similarity (of standardised signatures) above which two images are one part.

Chosen by looking at pairs on the casting data: above 0.97 they are the same
casting turned, flipped or shifted; at 0.965 most still are. On the 6,633
training images this gives 1,018 groups, the largest holding 291 images.
Erring towards bigger groups only makes the validation split harder.
"""

_WINDOW = np.outer(np.hanning(128), np.hanning(128)).astype(np.float32)


def rotation_invariant_signature(grey: np.ndarray) -> np.ndarray:
    """Describe a top view so that turned, flipped or shifted copies of one part look alike.

    A Fourier-Mellin descriptor: the magnitude of the 2-D spectrum does not
    change when the part shifts, and it turns with the part exactly about
    its centre (DC); unrolled into log-polar coordinates about DC, a turn
    becomes a cyclic shift along the angle axis, whose Fourier magnitude
    ignores it (a mirror image only reverses the axis). Normalising removes
    brightness and contrast changes. Copies turned by arbitrary angles with
    invented corners match less well than the dataset's own copies.
    """
    small = cv2.resize(grey, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32)
    small = (small - small.mean()) * _WINDOW
    spectrum = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(small)))).astype(np.float32)
    spectrum = cv2.GaussianBlur(spectrum, (0, 0), 1.0)
    # WARP_FILL_OUTLIERS: without it, points past the frame's edge keep uninitialised memory.
    polar = cv2.warpPolar(
        spectrum, (32, 128), (64.0, 64.0), 64.0, cv2.WARP_POLAR_LOG | cv2.WARP_FILL_OUTLIERS
    )
    signature = np.abs(np.fft.rfft(polar, axis=0))[:4].reshape(-1)
    signature = (signature - signature.mean()) / (signature.std() + 1e-6)
    return signature / np.linalg.norm(signature)


def near_duplicate_groups(
    signatures: np.ndarray, similarity: float = GROUPING_SIMILARITY
) -> np.ndarray:
    """Group index per image: connected components of the 'more similar than' graph."""
    z = standardised_signatures(signatures)
    pairs = []
    for start in range(0, len(z), 1024):
        block = z[start : start + 1024] @ z.T
        rows, cols = np.nonzero(block > similarity)
        pairs.extend((int(r), int(c)) for r, c in zip(rows + start, cols) if r < c)
    return connected_components(len(z), pairs)


def standardised_signatures(signatures: np.ndarray) -> np.ndarray:
    """Each dimension standardised across the set, then each row to unit length:
    every impeller shares the same overall shape, so raw signatures are nearly parallel."""
    z = (signatures - signatures.mean(0)) / (signatures.std(0) + 1e-9)
    return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-12)


def connected_components(count: int, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """Group index (0, 1, ...) per item of `count`, joining every linked pair."""
    parent = np.arange(count)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[find(i)] = find(j)
    roots = np.array([find(i) for i in range(count)])
    return np.unique(roots, return_inverse=True)[1]


def grouped_stratified_split(
    labels: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): whole groups go to one side, each class near `val_fraction`.

    A group is counted under its majority label; groups are visited in a
    seeded random order and given to validation while their class still
    needs images. Each class with more than one group has at least one in
    validation.
    """
    rng = np.random.default_rng(seed)
    group_ids = rng.permutation(np.unique(groups))
    target = {c: val_fraction * np.sum(labels == c) for c in (0, 1)}
    taken = {0: 0, 1: 0}
    val_groups = []
    majority_of = {g: int(round(labels[groups == g].mean())) for g in group_ids}
    for g in group_ids:
        size = int(np.sum(groups == g))
        if taken[majority_of[g]] + size <= target[majority_of[g]] * 1.02:
            val_groups.append(g)
            taken[majority_of[g]] += size
    for c in (0, 1):
        # A small folder (a fold of a few samples) can leave a class out of validation,
        # and the threshold would then be chosen blind to it: give it its smallest group,
        # as long as training keeps another.
        own = [g for g in group_ids if majority_of[g] == c]
        if taken[c] == 0 and len(own) > 1:
            val_groups.append(min(own, key=lambda g: int(np.sum(groups == g))))
    is_val = np.isin(groups, val_groups)
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]
