"""The one preprocessing function, shared by training and the line.

Training, evaluation, replay and `station run` all call `preprocess`, so the
model never sees pixels prepared two different ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Roi:
    """Region of interest in frame pixels: the crop the classifier sees."""

    x: int
    y: int
    width: int
    height: int


def to_grey(image: np.ndarray) -> np.ndarray:
    """Return a 2-D uint8 grey image from a grey, BGR or BGRA uint8 image."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"cannot convert an image of shape {image.shape} to grey")


def crop(image: np.ndarray, roi: Roi | None) -> np.ndarray:
    """The part's crop of a uint8 image, grey: what the network and the pit check look at."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    grey = to_grey(image)
    if roi is not None:
        h, w = grey.shape
        if roi.x < 0 or roi.y < 0 or roi.x + roi.width > w or roi.y + roi.height > h:
            raise ValueError(f"ROI {roi} does not fit in a {w}x{h} frame")
        grey = grey[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width]
    return grey


def preprocess(image: np.ndarray, input_size: int, roi: Roi | None = None) -> np.ndarray:
    """Grey, crop to the part, resize, scale: uint8 image -> float32 (size, size, 1) in [0, 1].

    INTER_AREA is used for the resize because it averages pixels when
    shrinking, so a 2-pixel blow hole survives as a darker patch instead of
    being skipped by nearest/bilinear sampling.
    """
    grey = crop(image, roi)
    if grey.shape != (input_size, input_size):
        grey = cv2.resize(grey, (input_size, input_size), interpolation=cv2.INTER_AREA)
    return (grey.astype(np.float32) * (1.0 / 255.0))[:, :, np.newaxis]
