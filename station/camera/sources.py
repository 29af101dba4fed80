"""The real frame sources: an OpenCV camera, a video file, a folder of images.

(The virtual conveyor's camera lives with the conveyor in `station/sim/`.)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from station.camera.frames import BadFrame, CameraError, Frame

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v"}
log = logging.getLogger(__name__)

LABEL_FOLDERS = {"def_front": "defective", "ok_front": "ok"}


class OpenCVCamera:
    """A V4L2 device (index or /dev/videoN) or a stream URL, through cv2.VideoCapture."""

    def __init__(
        self,
        device: int | str,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        exposure: float | None = None,
    ):
        self.device = int(device) if isinstance(device, str) and device.isdigit() else device
        self.name = f"camera {self.device}"
        self.settings = {
            cv2.CAP_PROP_FRAME_WIDTH: width,
            cv2.CAP_PROP_FRAME_HEIGHT: height,
            cv2.CAP_PROP_FPS: fps,
            cv2.CAP_PROP_EXPOSURE: exposure,
        }
        self._cap: cv2.VideoCapture | None = None
        self._index = 0

    def open(self) -> None:
        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"{self.name}: cannot open (unplugged, busy, or no such device)")
        for prop, value in self.settings.items():
            if value is not None and not cap.set(prop, float(value)):
                # Not fatal: many drivers ignore some settings. Say so once, at open.
                log.warning("%s: the driver did not accept %s=%s", self.name, prop, value)
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise CameraError(f"{self.name}: not open")
        ok, image = self._cap.read()
        stamp = time.monotonic()
        if not ok or image is None:
            raise CameraError(f"{self.name}: no frame (device gone or stream ended)")
        self._index += 1
        return Frame(image, stamp, self._index, self.name)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class VideoFile:
    """A recorded video. Paced: frames come at the file's rate, stamped with the clock."""

    def __init__(self, path: Path, paced: bool = False):
        self.path = Path(path)
        self.name = str(self.path)
        self.paced = paced
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._fps = 0.0
        self.frame_count = 0
        self._start = 0.0

    def open(self) -> None:
        if not self.path.is_file():
            raise CameraError(f"{self.path}: video file not found")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"{self.path}: not a video OpenCV can decode")
        self._fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._cap = cap
        self._start = time.monotonic()

    def read(self) -> Frame | None:
        if self._cap is None:
            raise CameraError(f"{self.path}: not open")
        ok, image = self._cap.read()
        if not ok or image is None:
            if self.frame_count and self._index < self.frame_count:
                raise CameraError(
                    f"{self.path}: ended after frame {self._index} of {self.frame_count} "
                    "(truncated or damaged)"
                )
            return None
        offset = self._index / self._fps
        self._index += 1
        if self.paced:
            delay = self._start + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stamp = time.monotonic()
        else:
            stamp = offset
        return Frame(image, stamp, self._index, self.name, {"frame": self._index})

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolder:
    """Every image under a folder, in name order; labels from def_front/ok_front when present.

    A file that does not decode raises BadFrame naming it; the next read goes on
    with the next file.
    """

    def __init__(self, root: Path, fps: float = 10.0, paced: bool = False):
        self.root = Path(root)
        self.name = str(self.root)
        self.fps = fps
        self.paced = paced
        self.files: list[Path] = []
        self._next = 0
        self._start = 0.0

    def open(self) -> None:
        if not self.root.is_dir():
            raise CameraError(f"{self.root}: image folder not found")
        self.files = sorted(
            p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.files:
            raise CameraError(f"{self.root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._next = 0
        self._start = time.monotonic()

    def read(self) -> Frame | None:
        if self._next >= len(self.files):
            return None
        index = self._next
        path = self.files[index]
        self._next += 1
        offset = index / self.fps
        if self.paced:
            delay = self._start + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            offset = time.monotonic()
        meta = {"file": str(path.relative_to(self.root)), "label": label_of(path)}
        try:
            image = decode_image_file(path)
        except ValueError as exc:
            raise BadFrame(str(exc)) from None
        return Frame(image, offset, index + 1, self.name, meta)

    def close(self) -> None:
        pass


def decode_image_file(path: Path) -> np.ndarray:
    """Decode an 8-bit image file; ValueError naming the file if it is empty, corrupt or cut short.

    OpenCV decodes a JPEG cut short without complaint (the missing rows come
    out grey), so a JPEG must end with its end-of-image marker.
    """
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0:
        raise ValueError(f"{path}: empty file")
    if raw[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in raw[-64:].tobytes():
        raise ValueError(f"{path}: JPEG cut short (no end-of-image marker)")
    image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ValueError(f"{path}: cannot be decoded as an image (corrupt or not an image)")
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: {image.dtype} pixels, expected 8-bit")
    return image


def label_of(path: Path) -> str | None:
    """'defective' or 'ok' from a def_front/ok_front folder in the path, else None."""
    for part in reversed(path.parts[:-1]):
        if part in LABEL_FOLDERS:
            return LABEL_FOLDERS[part]
    return None
