"""The camera loop with its watchdog: frames into a FrameBuffer, stalls repaired.

A camera fails in two ways: `read()` raises (unplugged, stream dropped), or
`read()` simply never returns (a hung driver, a frozen stream). The reader
thread handles the first by closing and reopening. A watchdog thread handles
the second: when no frame has arrived for `stall_timeout_s` it abandons the
stuck reader and starts a fresh one on a freshly made source, without
restarting the service (as frigate restarts a stalled ffmpeg). While the
camera is down, parts get no frame and are rejected by the station.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from station.camera.frames import BadFrame, CameraError, FrameBuffer, FrameSource

log = logging.getLogger(__name__)


@dataclass
class FeedStats:
    frames: int = 0
    bad_frames: int = 0
    errors: int = 0
    stalls: int = 0
    reopens: int = 0


class CameraFeed:
    def __init__(
        self,
        make_source: Callable[[], FrameSource],
        buffer: FrameBuffer,
        stall_timeout_s: float = 1.0,
        reopen_interval_s: float = 1.0,
        on_problem: Callable[[str, str], None] | None = None,
    ):
        self.make_source = make_source
        self.buffer = buffer
        self.stall_timeout_s = stall_timeout_s
        self.reopen_interval_s = reopen_interval_s
        self.on_problem = on_problem or (lambda kind, detail: None)
        self.stats = FeedStats()
        self.ended = threading.Event()
        """Set when a finite source (file, folder) has given its last frame."""
        self._generation = 0
        self._lock = threading.Lock()
        self._last_frame = time.monotonic()
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self) -> None:
        self._last_frame = time.monotonic()
        self._spawn_reader()
        self._watchdog = threading.Thread(target=self._watch, name="camera-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._generation += 1
        if self._watchdog:
            self._watchdog.join(timeout=2)

    @property
    def frame_age_s(self) -> float:
        return time.monotonic() - self._last_frame

    def healthy(self) -> bool:
        return self.frame_age_s < self.stall_timeout_s

    def _spawn_reader(self) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
        threading.Thread(
            target=self._read_loop, args=(generation,), name=f"camera-{generation}", daemon=True
        ).start()

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    def _read_loop(self, generation: int) -> None:
        while self._current(generation):
            source = self.make_source()
            try:
                source.open()
            except CameraError as exc:
                self._problem("camera_error", str(exc))
                self._stop.wait(self.reopen_interval_s)
                continue
            try:
                if self._pump(source, generation):
                    self.ended.set()
                    return
            except CameraError as exc:
                self._problem("camera_error", str(exc))
                self._stop.wait(self.reopen_interval_s)
            finally:
                source.close()
            if self._current(generation):
                self.stats.reopens += 1
                log.info("reopening %s", source.name)

    def _pump(self, source: FrameSource, generation: int) -> bool:
        """Read until the source ends (True) or this reader is abandoned (False)."""
        while self._current(generation):
            try:
                frame = source.read()
            except BadFrame as exc:
                self.stats.bad_frames += 1
                self._problem("bad_frame", str(exc))
                continue
            if frame is None:
                return True
            if not self._current(generation):
                return False  # a stalled read came back after the watchdog replaced us
            self._last_frame = time.monotonic()
            self.stats.frames += 1
            self.buffer.push(frame)
        return False

    def _watch(self) -> None:
        while not self._stop.wait(self.stall_timeout_s / 4):
            if self.ended.is_set():
                return
            if self.frame_age_s > self.stall_timeout_s:
                self.stats.stalls += 1
                self._problem(
                    "camera_stall",
                    f"no frame for {self.frame_age_s:.1f} s; starting a fresh reader",
                )
                self._last_frame = time.monotonic()  # give the new reader a full timeout
                self._spawn_reader()

    def _problem(self, kind: str, detail: str) -> None:
        self.stats.errors += 1
        log.error("%s: %s", kind, detail)
        self.on_problem(kind, detail)
