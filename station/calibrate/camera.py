"""`calibrate camera` and `calibrate roi`: is the picture good enough, and where is the part.

Brightness and contrast are the grey mean and standard deviation of the
whole frame; focus is the variance of the Laplacian inside the part's crop
(a blurred part loses its edges, the belt's noise would hide that). The crop
is the part's bounding box, as tightly framed as the training images are
(`margin_pct` widens it), and the minimum blob area is half the part's, so
dirt is ignored and a part cut by the frame edge is still refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from station.camera.frames import BadFrame, CameraError, Frame, FrameSource
from station.classifier.preprocess import Roi, to_grey
from station.vision.locate import PartNotFound, find_blobs, locate_part


class NoPartInView(RuntimeError):
    """No whole part was seen in the frames grabbed; says how many were looked at."""


@dataclass(frozen=True)
class QualityLimits:
    brightness: tuple[float, float] = (30.0, 220.0)
    min_contrast: float = 20.0
    min_focus: float = 30.0


@dataclass(frozen=True)
class ImageQuality:
    brightness: float
    contrast: float
    focus: float | None
    """None when no part was in view to measure it on."""

    def problems(self, limits: QualityLimits) -> list[str]:
        low, high = limits.brightness
        found = []
        if not low <= self.brightness <= high:
            found.append(f"brightness {self.brightness:.0f} outside {low:.0f}..{high:.0f}")
        if self.contrast < limits.min_contrast:
            found.append(f"contrast {self.contrast:.1f} below {limits.min_contrast:.0f}")
        if self.focus is None:
            found.append("focus not measured: no whole part in view")
        elif self.focus < limits.min_focus:
            found.append(f"focus {self.focus:.0f} below {limits.min_focus:.0f} (blurred?)")
        return found


@dataclass(frozen=True)
class PartSighting:
    frame: Frame
    box: tuple[int, int, int, int]
    """x, y, width, height of the part's blob."""
    area: int


def grab(make_source: Callable[[], FrameSource], frames: int, timeout_s: float) -> list[Frame]:
    """Up to `frames` frames; CameraError if the camera gives none (names it)."""
    source = make_source()
    source.open()
    got: list[Frame] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < frames and time.monotonic() < deadline:
            try:
                frame = source.read()
            except BadFrame:
                continue
            if frame is None:
                break
            got.append(frame)
    finally:
        source.close()
    if not got:
        raise CameraError(f"{source.name}: no frame within {timeout_s:.0f} s")
    return got


def sightings(frames: list[Frame], min_area_px: int) -> list[PartSighting]:
    """Frames that show one whole part (not cut by the frame's edge)."""
    found = []
    for frame in frames:
        grey = to_grey(frame.image)
        blobs = find_blobs(grey, min_area_px)
        if not blobs:
            continue
        x, y, w, h, area = blobs[0]
        height, width = grey.shape
        if x > 0 and y > 0 and x + w < width and y + h < height:
            found.append(PartSighting(frame, (x, y, w, h), area))
    return found


def measure_quality(frames: list[Frame], crop_px: int, min_area_px: int) -> ImageQuality:
    greys = [to_grey(f.image) for f in frames]
    focus = []
    for frame, grey in zip(frames, greys):
        try:
            roi = locate_part(grey, crop_px, min_area_px).roi
        except PartNotFound:
            continue
        crop = grey[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width]
        focus.append(float(cv2.Laplacian(crop, cv2.CV_64F).var()))
    return ImageQuality(
        brightness=float(np.median([g.mean() for g in greys])),
        contrast=float(np.median([g.std() for g in greys])),
        focus=float(np.median(focus)) if focus else None,
    )


def measure_roi(seen: list[PartSighting], frame_shape: tuple[int, int], margin_pct: float):
    """(crop_px, min_part_area_px) from the parts seen."""
    if not seen:
        raise NoPartInView("no whole part in view")
    size = float(np.median([max(s.box[2], s.box[3]) for s in seen]))
    crop = int(np.ceil(size * (1 + margin_pct / 100) / 2) * 2)
    crop = min(crop, min(frame_shape[:2]))
    min_area = int(np.median([s.area for s in seen]) / 2)
    return crop, min_area


def snapshot(frame: Frame, crop_px: int, min_area_px: int, path: Path) -> Roi | None:
    """Save `frame` with the crop the classifier would see drawn on it (if a part is found)."""
    image = cv2.cvtColor(to_grey(frame.image), cv2.COLOR_GRAY2BGR)
    try:
        roi: Roi | None = locate_part(frame.image, crop_px, min_area_px).roi
    except PartNotFound as exc:
        roi = None
        cv2.putText(image, str(exc)[:70], (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1)
    if roi is not None:
        corner = (roi.x + roi.width - 1, roi.y + roi.height - 1)
        cv2.rectangle(image, (roi.x, roi.y), corner, (0, 200, 0), 2)
        label = f"crop {crop_px} px"
        cv2.putText(
            image, label, (roi.x + 4, roi.y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 200, 0)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return roi


def best_sighting(seen: list[PartSighting]) -> PartSighting:
    """The part nearest the middle of the frame: the one the classifier would be shown."""

    def off_centre(s: PartSighting) -> float:
        width = s.frame.image.shape[1]
        return abs(s.box[0] + s.box[2] / 2 - width / 2)

    return min(seen, key=off_centre)
