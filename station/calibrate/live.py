"""`station calibrate camera|roi --serve`: the live camera on the operator's page.

While the technician turns the focus ring, moves the light or places a part,
the page shows every few frames with the crop the classifier would see and
the same brightness, contrast and focus figures (and limits) the step checks.
When they stop it (Ctrl-C), the step runs as without `--serve`, on the
latest frames.

The frames are read on a thread of their own and measured at most
`MEASURE_PER_S` times a second: a measurement is what the page shows, and it
shows no more than that.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from station.calibrate.camera import ImageQuality, QualityLimits, measure_quality
from station.camera.frames import BadFrame, CameraError, Frame, FrameSource
from station.vision.locate import PartNotFound, locate_part
from station.web.snapshot import JudgedView, LineSnapshot

MEASURE_PER_S = 5.0


class LiveCamera:
    def __init__(
        self,
        make_source: Callable[[], FrameSource],
        step: str,
        crop_px: int,
        min_area_px: int,
        limits: QualityLimits,
        keep: int,
    ):
        self.make_source = make_source
        self.step = step
        self.crop_px = crop_px
        self.min_area_px = min_area_px
        self.limits = limits
        self.frames: deque[Frame] = deque(maxlen=keep)
        """The latest `keep` frames: what the step checks once the technician stops."""
        self.count = 0
        self.bad_frames = 0
        self.error: str | None = None
        self.ended = False
        self.snapshot: LineSnapshot | None = None
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-camera", daemon=True)

    def start(self) -> LiveCamera:
        self._thread.start()
        return self

    def stop(self) -> list[Frame]:
        """Stop reading; the latest frames, oldest first."""
        self._stop.set()
        self._thread.join(timeout=5)
        return list(self.frames)

    def _run(self) -> None:
        source = self.make_source()
        try:
            source.open()
            last_measured = 0.0
            while not self._stop.is_set():
                try:
                    frame = source.read()
                except BadFrame as exc:
                    self.bad_frames += 1
                    self.error = str(exc)
                    continue
                if frame is None:
                    self.ended = True
                    self.error = f"{source.name}: no more frames"
                    break
                self.count += 1
                self.frames.append(frame)
                now = time.monotonic()
                if now - last_measured >= 1.0 / MEASURE_PER_S:
                    last_measured = now
                    self._publish(frame)
        except CameraError as exc:
            self.error = str(exc)
            self.ended = True
        finally:
            source.close()
            if self.frames:
                self._publish(self.frames[-1])

    def _publish(self, frame: Frame) -> None:
        quality = measure_quality([frame], self.crop_px, self.min_area_px)
        try:
            r = locate_part(frame.image, self.crop_px, self.min_area_px).roi
            roi: tuple[int, int, int, int] | None = (r.x, r.y, r.width, r.height)
            seen = f"part in view, crop {self.crop_px} px"
        except PartNotFound as exc:
            roi, seen = None, str(exc)
        self.snapshot = LineSnapshot(
            taken_at=time.time(),
            started_at=self.started_at,
            counters={},
            link={"up": False, "epoch": None, "port": None, "firmware": None},
            camera={
                "healthy": not self.ended,  # a bad frame is shown as the last error only
                "fps": None,
                "frames": self.count,
                "bad_frames": self.bad_frames,
                "stalls": 0,
                "reopens": 0,
                "last_error": self.error,
            },
            model={"version": None, "threshold": None, "calibration_crc": None},
            images={"used_bytes": 0, "quota_bytes": 0, "dropped": 0},
            latest=JudgedView(self.count, frame.image, roi, seen, None, None, time.time()),
            mode=f"calibrate {self.step}",
            calibration=_figures(quality, self.limits, self.crop_px, seen),
        )


def _figures(quality: ImageQuality, limits: QualityLimits, crop_px: int, seen: str) -> dict:
    return {
        "brightness": round(quality.brightness, 1),
        "brightness_limits": list(limits.brightness),
        "contrast": round(quality.contrast, 1),
        "min_contrast": limits.min_contrast,
        "focus": None if quality.focus is None else round(quality.focus, 1),
        "min_focus": limits.min_focus,
        "crop_px": crop_px,
        "part": seen,
        "problems": quality.problems(limits),
    }
