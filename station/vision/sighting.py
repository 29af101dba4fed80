"""What the vision trigger reports: a part crossed the trigger line.

Plain data (no OpenCV), so the part tracker can take it without
depending on how parts are found in a frame.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VisionSighting:
    """A part crossed the trigger line at `trigger_time`; `frame` shows it.

    `backup`: seen on a photo-eye line while the link was down, when the
    Mega's PART events cannot reach the host. `frame` is opaque here (a
    camera Frame on the line; None on the stepped line, which renders on
    demand): it is handed back in the tracker's JudgeFrame and Decided.
    """

    trigger_time: float
    frame_time: float
    backup: bool = False
    frame: object = None
