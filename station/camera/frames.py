"""What every frame source gives: timestamped frames, and one error type.

A source is anything with `open()`, `read()` and `close()`: an OpenCV
camera, a video file, a folder of images, or the virtual conveyor's camera.
The station, replay and calibration only ever see this interface, so a
newcomer can add a GigE camera without touching the rest.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class CameraError(RuntimeError):
    """The source cannot be opened or stopped giving frames; the message names it."""


class BadFrame(CameraError):
    """One frame could not be decoded; the source itself may still be fine."""


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    timestamp: float
    """Host monotonic seconds at which the frame was exposed (best estimate)."""
    index: int
    source: str
    meta: dict = field(default_factory=dict, compare=False)
    """Anything the source knows about the frame (a file name, a label)."""


class FrameSource(Protocol):
    name: str

    def open(self) -> None:
        """Open the device or file; raises CameraError naming it."""

    def read(self) -> Frame | None:
        """The next frame; None at the end of a finite source. Raises CameraError or BadFrame."""

    def close(self) -> None: ...


class FrameBuffer:
    """The last few seconds of frames, looked up by time.

    The photo-eye says when a part passed; the frame that shows it may not
    have arrived yet when the PART event does, so `wait_first_after` waits
    for it.
    """

    def __init__(self, keep_s: float = 3.0, max_frames: int = 1000):
        self.keep_s = keep_s
        self._frames: deque[Frame] = deque(maxlen=max_frames)
        self._cond = threading.Condition()

    def push(self, frame: Frame) -> None:
        with self._cond:
            self._frames.append(frame)
            while self._frames and frame.timestamp - self._frames[0].timestamp > self.keep_s:
                self._frames.popleft()
            self._cond.notify_all()

    def latest(self) -> Frame | None:
        with self._cond:
            return self._frames[-1] if self._frames else None

    def rate(self, now: float, window_s: float = 2.0) -> float:
        """Frames per second over the last `window_s` (0 when none came)."""
        with self._cond:
            recent = [f.timestamp for f in self._frames if now - f.timestamp <= window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def wait_newer(self, than: float, timeout_s: float) -> list[Frame]:
        """Frames stamped after `than`, oldest first; waits up to `timeout_s` for one."""
        with self._cond:
            newer = [f for f in self._frames if f.timestamp > than]
            if not newer and self._cond.wait(timeout_s):
                newer = [f for f in self._frames if f.timestamp > than]
            return newer

    def wait_first_after(self, when: float, until: float, max_lag_s: float) -> Frame | None:
        """The first frame exposed at or after `when` (monotonic s).

        None if none came by `until`, or if the first one is more than `max_lag_s`
        late: after a camera stall the next frame shows a later part, not this one.

        The first rather than the nearest: waiting to see whether the next frame is
        nearer would add a frame period to every verdict, and the locator centres
        the crop on the part wherever it is in the frame.
        """
        with self._cond:
            while True:
                for frame in self._frames:
                    if frame.timestamp >= when:
                        return frame if frame.timestamp - when <= max_lag_s else None
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
