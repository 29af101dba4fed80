"""The vision trigger on the stepped clock: a line with no photo-eye, soaked.

On such a line only the camera knows that a part is coming (README, "Lines with
no photo-eye"). The live trigger (`vision/vision_trigger.py`) compares each
frame's blob centres with the previous frame's and interpolates when a centre
crossed the trigger line. Here the camera's frames are the same 1/fps grid the
stepped line's judge takes its frames from, and the crossing is decided by the
live trigger's own `LineCrossing.crossing` on the two frames the trigger would
compare: the last frame before the part's centre reaches the line and the first
one at or after it, skipping frames a stalled camera never delivered. Frames
further apart than the live trigger's `gap_limit_s` are not compared, so a
stall that swallows a crossing hides the part, as it does on the line.

Where the centres come from: the belt's geometry (the part's true centre; the
blob finder's is within half a pixel of it), or, with rendered frames, the live
trigger's `LineCrossing.centres` on the two frames rendered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from station.config import VirtualLineConfig, VisionTriggerConfig
from station.sim.conveyor import PartOnBelt, VirtualConveyor
from station.vision.vision_trigger import LAG_SHARE, LagWatch, LineCrossing, gap_limit_s

TRIGGER_MS = 2
"""The live trigger's work on one frame (blobs on a 640x360 frame: about 1 ms, README)."""


@dataclass(frozen=True)
class SteppedSighting:
    """What the trigger reports for one part: when its centre crossed (interpolated) and the
    frame it was seen in, both in belt ms."""

    crossed_ms: float
    frame_ms: float


class SteppedTrigger:
    def __init__(
        self,
        config: VisionTriggerConfig,
        line: VirtualLineConfig,
        conveyor: VirtualConveyor,
        min_area_px: int,
        render: Callable[[float], np.ndarray] | None = None,
    ):
        """`render(t_s)`: the belt frame at t (rendered mode); None: centres from geometry."""
        self.config = config
        self.line = line
        self.conveyor = conveyor
        self.crossing = LineCrossing(config, min_area_px)
        self.render = render
        self.period_ms = 1000 / line.fps
        self.lag = LagWatch(LAG_SHARE * config.camera_to_gate_ms / 1000)

    def looks_at(self, frame_ms: float, stall: tuple[float, float] | None) -> float:
        """When the trigger has looked at the frame taken at `frame_ms` (belt ms): TRIGGER_MS
        after it, or, the trigger stalled over [start, end), after the frames buffered
        since the start, each TRIGGER_MS (it catches up at 500 frames/s)."""
        done = frame_ms + TRIGGER_MS
        if stall is None or frame_ms + TRIGGER_MS < stall[0]:
            return done
        start, end = stall
        backlog = math.floor((frame_ms - start) / self.period_ms) + 1
        return max(done, end + backlog * TRIGGER_MS)

    def line_ms(self, part: PartOnBelt) -> float:
        """When the part's centre reaches the trigger line (belt ms)."""
        c = self.line
        fraction = self.config.line_x_fraction
        if self.config.direction == "right_to_left":
            fraction = 1 - fraction
        x_mm = c.camera_x_mm + (fraction - 0.5) * c.frame_width / c.px_per_mm
        return self.conveyor.time_centred_at(part, x_mm) * 1000

    def sees(
        self, part: PartOnBelt, camera_down: Callable[[float], bool]
    ) -> SteppedSighting | None:
        """The trigger's report of `part`, or None if it never sees it cross.

        The pairs of delivered frames round the crossing are compared in time order, as
        the trigger goes frame by frame; the first that crosses is the report. With
        rendered frames a centre rounded to the pixel can move the crossing one pair
        earlier or later than the geometry says, so the pairs up to the one that starts
        at the first frame after the crossing are tried (three, with no stall). Called at
        the first frame after the crossing: the third pair's later frame is still to
        come, and a stall that starts within the 17 ms before it is not foreseen."""
        first_after = math.ceil(self.line_ms(part) / self.period_ms - 1e-9)
        earlier = self._frame(first_after - 2, -1, camera_down)
        while round(earlier / self.period_ms) <= first_after:  # a later pair is another part's
            later = self._frame(round(earlier / self.period_ms) + 1, +1, camera_down)
            if later - earlier <= gap_limit_s(self.period_ms / 1000) * 1000:  # FrameSpacing
                fraction = self.crossing.crossing(self._centres(earlier), self._centres(later))
                if fraction is not None:
                    return SteppedSighting(earlier + fraction * (later - earlier), later)
            earlier = later
        return None

    def _frame(self, k: int, step: int, camera_down: Callable[[float], bool]) -> float:
        """The nearest delivered frame from grid index k in direction `step` (a stall's
        frames are never delivered; 10 s of them is further than any stall)."""
        for _ in range(round(10 * self.line.fps)):
            t = k * self.period_ms
            if not camera_down(t):
                return t
            k += step
        raise RuntimeError(f"the camera delivered no frame within 10 s of {t:.0f} ms")

    def _centres(self, frame_ms: float) -> list[float]:
        if self.render is not None:
            return self.crossing.centres(self.render(frame_ms / 1000))
        return [self._centre(p, frame_ms) for p in self._wholly_in_view(frame_ms)]

    def _centre(self, part: PartOnBelt, frame_ms: float) -> float:
        """Across the frame, 0..1, downstream increasing (as LineCrossing.centres)."""
        c = self.line
        px = (self.conveyor.centre_mm(part, frame_ms / 1000) - c.camera_x_mm) * c.px_per_mm
        x = 0.5 + px / c.frame_width
        return x if self.config.direction == "left_to_right" else 1 - x

    def _wholly_in_view(self, frame_ms: float) -> list[PartOnBelt]:
        """Parts cut by the frame's edge are left out: the blob finder would report the
        visible piece, but on a belt of this pitch its centre is further from the line than
        the trigger's step back, so it changes no crossing (`--render` measures the blobs)."""
        c = self.line
        kept = []
        for part in self.conveyor.parts_in_view(frame_ms / 1000):
            offset_mm = self.conveyor.centre_mm(part, frame_ms / 1000) - c.camera_x_mm
            half_px = part.image.shape[1] / 2
            centre_px = offset_mm * c.px_per_mm + c.frame_width / 2
            if half_px <= centre_px <= c.frame_width - half_px:
                kept.append(part)
        return kept
