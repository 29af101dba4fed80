"""The camera loop under supervision: frames into a FrameBuffer, stalls repaired.

A camera fails in two ways: `read()` raises (unplugged, stream dropped), or
`read()` simply never returns (a hung driver, a frozen stream). The reader
thread handles the first by closing and reopening. A supervisor thread
handles the second: when no frame has arrived for `stall_timeout_s` it
closes the stuck source from outside (releasing the device, so that a new
open can succeed: a V4L2 device held by a hung reader stays busy), then
starts a fresh reader on a freshly made source, as frigate restarts a
stalled ffmpeg. Reopens back off (reopen_interval_s, doubling up to
`max_backoff_s`); every attempt is alarmed and counted. While the camera is
down, parts get no frame and are rejected by the station (`no_frame`).

`progress_age_s` is what the service's watchdog reads: frames, or at least
reopen attempts, must keep coming; a supervisor that itself hangs stops the
systemd pings and gets the service restarted.
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
    """Attempts to open the source again after the first open."""


class CameraFeed:
    def __init__(
        self,
        make_source: Callable[[], FrameSource],
        buffer: FrameBuffer,
        stall_timeout_s: float = 1.0,
        reopen_interval_s: float = 1.0,
        on_problem: Callable[[str, str], None] | None = None,
        max_backoff_s: float = 30.0,
    ):
        self.make_source = make_source
        self.buffer = buffer
        self.stall_timeout_s = stall_timeout_s
        self.reopen_interval_s = reopen_interval_s
        self.max_backoff_s = max_backoff_s
        self.on_problem = on_problem or (lambda kind, detail: None)
        self.stats = FeedStats()
        self.last_error: str | None = None
        """The latest problem, with its local time, for the operator's page."""
        self.ended = threading.Event()
        """Set when a finite source (file, folder) has given its last frame."""
        self._generation = 0
        self._lock = threading.Lock()
        self._source: FrameSource | None = None
        self._failures = 0
        """Consecutive opens or reads that failed: the back-off exponent."""
        self._last_frame = time.monotonic()
        self._last_progress = time.monotonic()
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None

    def start(self) -> None:
        self._last_frame = self._last_progress = time.monotonic()
        self._spawn_reader()
        self._supervisor = threading.Thread(
            target=self._supervise, name="camera-supervisor", daemon=True
        )
        self._supervisor.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._generation += 1
        self._release_source()
        if self._supervisor:
            self._supervisor.join(timeout=2)

    @property
    def frame_age_s(self) -> float:
        return time.monotonic() - self._last_frame

    def progress_age_s(self, now: float) -> float:
        """Since the last frame or reopen attempt (the service watchdog's camera check)."""
        return 0.0 if self.ended.is_set() else now - self._last_progress

    def healthy(self) -> bool:
        return self.frame_age_s < self.stall_timeout_s

    def backoff_s(self) -> float:
        """The wait before the next reopen: doubling with each failure in a row."""
        return min(self.max_backoff_s, self.reopen_interval_s * 2 ** max(0, self._failures - 1))

    # --- the reader ------------------------------------------------------------------------

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
        first = True
        while self._current(generation):
            if not first:
                self.stats.reopens += 1
                wait = self.backoff_s()
                self._problem(
                    "camera_reopen", f"reopening in {wait:g} s (attempt {self._failures})"
                )
                if self._stop.wait(wait) or not self._current(generation):
                    return
            first = False
            self._last_progress = time.monotonic()
            source = self.make_source()
            try:
                source.open()
            except CameraError as exc:
                self._failures += 1
                self._problem("camera_error", str(exc))
                continue
            with self._lock:
                if not self._current(generation):
                    source.close()
                    return
                self._source = source
            try:
                if self._pump(source, generation):
                    self.ended.set()
                    return
            except CameraError as exc:
                if not self._current(generation):
                    return  # the supervisor closed a stuck device: its read gave up
                self._failures += 1
                self._problem("camera_error", str(exc))
            finally:
                self._release_source(source)

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
                return False  # a stalled read came back after the supervisor replaced us
            self._last_frame = self._last_progress = time.monotonic()
            self._failures = 0
            self.stats.frames += 1
            self.buffer.push(frame)
        return False

    def _release_source(self, source: FrameSource | None = None) -> None:
        """Close `source` (default: the current one) once, from whichever thread gets there."""
        with self._lock:
            if source is None:
                source = self._source
            if source is None or source is not self._source:
                return
            self._source = None
        try:
            source.close()
        except Exception as exc:  # noqa: BLE001 - a driver may fail to close; we still go on
            log.warning("closing %s failed: %s", getattr(source, "name", source), exc)

    # --- the supervisor ------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stop.wait(self.stall_timeout_s / 4):
            if self.ended.is_set():
                return
            if self.frame_age_s > self.stall_timeout_s and self._source is not None:
                self.stats.stalls += 1
                self._failures += 1
                self._problem(
                    "camera_stall",
                    f"no frame for {self.frame_age_s:.1f} s; closing the camera and reopening",
                )
                self._last_frame = self._last_progress = time.monotonic()
                with self._lock:
                    self._generation += 1  # the stuck reader's frames are ignored from now
                self._release_source()
                self.stats.reopens += 1  # the fresh reader opens a fresh source at once
                self._spawn_reader()

    def _problem(self, kind: str, detail: str) -> None:
        self.stats.errors += 1
        self.last_error = f"{time.strftime('%H:%M:%S')} {kind}: {detail}"
        log.error("%s: %s", kind, detail)
        self.on_problem(kind, detail)
