"""Vision trigger: see a part cross a line in the frame.

Lines with no photo-eye run on it. Photo-eye lines run it as a second witness
of every part: while the link is down the Mega cannot report parts, and after
the reconnect (which reboots it) it has forgotten them, as it has the PARTs
still queued in it when the link went; the camera saw them all.


Each new frame's blobs are compared with the previous frame's: a blob whose
centre is past the trigger line, with a blob short of it a plausible step
back, is a part that just crossed; the time it crossed is interpolated
between the two frames. The crossing frame shows the part near the middle
of the view, so it is the frame that is judged; a reject is sent as
VISION_REJECT with the delay to the gate (see LineStation).
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2

from station.calibration import Calibration
from station.camera.frames import FrameBuffer
from station.classifier.preprocess import to_grey
from station.config import VisionTriggerConfig
from station.vision.locate import find_blobs
from station.vision.sighting import FrameGap, VisionLag, VisionSighting

log = logging.getLogger(__name__)

LAG_SHARE = 0.25
"""A frame looked at later than this share of the trigger-to-gate time after it was taken is
reported (VisionLag says what half and all of it cost)."""
LAG_REPORT_EVERY_S = 10.0
MAX_GAP_FRAMES = 3.0
"""Two frames further apart than this many of the camera's usual intervals, and than
MIN_GAP_S, are not compared. A crossing is read from where a blob was and where it is;
after a long gap the blob short of the line may be another part, and the crossing,
interpolated across the gap, is timed anywhere in it (a 1.5 s camera stall: up to 1.5 s
early, the pusher firing at another part). A dropped frame or two still compare: a part
moves 0.19 of the frame in 3 frames at the virtual line's speed, under the 0.34 a crossing
allows."""
MIN_GAP_S = 0.1
"""Frames are stamped when read, so a reader that fell behind reads buffered frames a
millisecond apart; with the usual interval learnt from those, every normal frame would be
a gap and the trigger would see nothing. No gap under this is one."""


def gap_limit_s(usual_s: float) -> float:
    """The longest time between two frames that are still compared."""
    return max(MAX_GAP_FRAMES * usual_s, MIN_GAP_S)


WITNESS_SCALE = 0.5
"""A photo-eye line's witness looks at frames at half size: it runs on every frame of the
camera's (60 fps: 1.36 ms a frame at full size, 0.46 at half, on the project's machine), and a
centre 2 px out in 640 is 0.5 ms of belt travel. A vision line's trigger keeps full size."""


class LineCrossing:
    """Finds parts crossing the trigger line; shared by the live trigger and video replay."""

    def __init__(self, config: VisionTriggerConfig, min_area_px: int, scale: float = 1.0):
        self.config = config
        self.scale = scale
        self.min_area_px = round(min_area_px * scale * scale)

    def centres(self, image) -> list[float]:
        """Blob centres along the belt: 0..1 across the frame, increasing downstream."""
        grey = to_grey(image)
        if self.scale != 1.0:
            size = (round(grey.shape[1] * self.scale), round(grey.shape[0] * self.scale))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        width = grey.shape[1]
        centres = []
        for x, _, w, _, _ in find_blobs(grey, self.min_area_px):
            c = (x + w / 2) / width
            centres.append(c if self.config.direction == "left_to_right" else 1 - c)
        return centres

    def crossing(self, previous: list[float], current: list[float]) -> float | None:
        """Where between the two frames (0..1) a part's centre crossed the line, or None.

        A blob past the line with a blob short of it a plausible step back is a part
        that just crossed. The fraction lets the caller time the crossing between
        the frames: at 60 fps the frame after the crossing is up to 17 ms late,
        which is as much as the pusher's whole strike window.
        """
        line = self.config.line_x_fraction
        for c in current:
            for p in previous:
                if line - 0.34 < p < line <= c and c - p < 0.34:
                    return (line - p) / (c - p)
        return None


@dataclass
class FrameSpacing:
    """The camera's usual frame interval, learnt from its frames (the median of the last 16),
    and whether two frames are close enough to compare (`gap_limit_s`)."""

    _gaps: deque = field(default_factory=lambda: deque(maxlen=16))

    def comparable(self, earlier: float, later: float) -> FrameGap | None:
        """None if the frames taken at `earlier` and `later` may be compared, else the gap."""
        gap = later - earlier
        usual = statistics.median(self._gaps) if self._gaps else None
        self._gaps.append(gap)
        if usual is None or gap <= gap_limit_s(usual):
            return None
        return FrameGap(gap, gap_limit_s(usual), later)


@dataclass
class LagWatch:
    """When the trigger is behind its camera: at most one VisionLag every `every_s`.

    Frames taken before `watching_from` are not judged: the trigger starts after the
    link's handshake (a Mega reboots when its port is opened), and its first look takes
    in the frames the camera buffered meanwhile, seconds old, in a few milliseconds."""

    limit_s: float
    every_s: float = LAG_REPORT_EVERY_S
    watching_from: float = float("-inf")
    _last_report: float = float("-inf")

    def check(self, frame_time: float, now: float) -> VisionLag | None:
        """A frame taken at `frame_time` is being looked at `now` (monotonic s)."""
        if frame_time < self.watching_from:
            return None
        lag = now - frame_time
        if lag <= self.limit_s or now - self._last_report < self.every_s:
            return None
        self._last_report = now
        return VisionLag(lag, self.limit_s, frame_time)


class VisionTrigger:
    def __init__(
        self,
        frames: FrameBuffer,
        inbox: queue.Queue,
        config: VisionTriggerConfig,
        calibration: Calibration,
        backup: bool = False,
    ):
        self.frames = frames
        self.inbox = inbox
        min_area = calibration.camera.min_part_area_px
        if backup:
            # The witness times a part by `camera.trigger_delay_ms`, which `calibrate timing`
            # measures at the frame's centre; a vision line's own trigger line plays no part.
            centred = config.model_copy(update={"line_x_fraction": 0.5})
            self.crossings = LineCrossing(centred, min_area, WITNESS_SCALE)
        else:
            self.crossings = LineCrossing(config, min_area)
        self.backup = backup
        """Photo-eye lines: the witness whose sightings find the parts the Mega cannot report."""
        self.sightings = 0
        self.lag = LagWatch(LAG_SHARE * config.camera_to_gate_ms / 1000)
        self.spacing = FrameSpacing()
        self.on_problem: Callable[[str, str], None] = lambda kind, detail: None
        """Told of a frame the trigger could not look at (the line service alarms it)."""
        self._last_progress = time.monotonic()
        self._last_problem = float("-inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vision-trigger", daemon=True)

    def start(self) -> None:
        self._last_progress = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def progress_age_s(self, now: float) -> float:
        """Since the thread last went round its loop (at least every 0.1 s, frames or not):
        the service's watchdog check. A vision line has no other trigger, and a photo-eye
        line no other witness of the parts the Mega cannot report."""
        return 0.0 if self._stop.is_set() else now - self._last_progress

    def _run(self) -> None:
        self.lag.watching_from = time.monotonic()
        last = float("-inf")
        previous: list[float] = []
        while not self._stop.is_set():
            self._last_progress = time.monotonic()
            for frame in self.frames.wait_newer(last, 0.1):
                before, last = last, frame.timestamp
                try:
                    previous = self._look(frame, before, previous)
                except Exception as exc:  # noqa: BLE001 - one bad frame must not end the thread
                    previous = []
                    self._problem(frame, exc)

    def _look(self, frame, before: float, previous: list[float]) -> list[float]:
        """One frame: report lag, a gap, a crossing. Returns its blob centres."""
        if late := self.lag.check(frame.timestamp, time.monotonic()):
            self.inbox.put(late)
        if before > float("-inf") and (gap := self.spacing.comparable(before, frame.timestamp)):
            previous = []  # see MAX_GAP_FRAMES and MIN_GAP_S
            if not self.backup:
                self.inbox.put(gap)
        current = self.crossings.centres(frame.image)
        fraction = self.crossings.crossing(previous, current)
        if fraction is not None:
            self.sightings += 1
            crossed_at = before + fraction * (frame.timestamp - before)
            self.inbox.put(VisionSighting(crossed_at, frame.timestamp, self.backup, frame))
        return current

    def _problem(self, frame, exc: Exception) -> None:
        """Logged with its traceback and alarmed at most once every LAG_REPORT_EVERY_S: a
        camera sending nothing but bad frames must not fill the journal 60 times a second."""
        now = time.monotonic()
        if now - self._last_problem < LAG_REPORT_EVERY_S:
            log.debug("vision trigger: frame %s could not be looked at: %s", frame.index, exc)
        else:
            self._last_problem = now
            log.exception("vision trigger: frame %s could not be looked at", frame.index)
            self.on_problem(
                "vision_trigger_error",
                f"frame {frame.index} could not be looked at ({type(exc).__name__}: {exc}); "
                "crossings across it are not seen",
            )
