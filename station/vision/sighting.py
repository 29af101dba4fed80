"""What the vision trigger reports: a part crossed the trigger line.

Plain data (no OpenCV), so the part tracker can take it without
depending on how parts are found in a frame.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VisionSighting:
    """A part crossed the trigger line at `trigger_time`; `frame` shows it.

    `backup`: seen on a photo-eye line by the camera witness, which finds the
    parts whose PART the Mega cannot report (the link down, or gone with its
    event queue). `frame` is opaque here (a
    camera Frame on the line; None on the stepped line, which renders on
    demand): it is handed back in the tracker's JudgeFrame and Decided.
    """

    trigger_time: float
    frame_time: float
    backup: bool = False
    frame: object = None


@dataclass(frozen=True)
class VisionLag:
    """The vision trigger looked at a frame `lag_s` after it was taken, past `limit_s`:
    the line PC is not keeping up with its camera.

    Why it is reported: on a line with no photo-eye only the camera knows that a part is
    coming. A part the trigger sees half its trigger-to-gate time late is failed safe (a
    reject, good or not); one it sees a whole trigger-to-gate time late reaches the gate
    before any verdict, and the Mega, never told of it, lets it pass. The report comes
    before either, so that someone can find what is taking the PC's time.
    """

    lag_s: float
    limit_s: float
    frame_time: float


@dataclass(frozen=True)
class FrameGap:
    """The vision trigger got no frame for `gap_s` (past `limit_s`, a few of the camera's
    usual intervals): it did not compare the frames on either side of the gap.

    Why: a part moves too far in a long gap to be told from the next one, and a crossing
    read across it could be timed anywhere in the gap, firing the pusher at another part.
    On a line with no photo-eye the parts that crossed meanwhile pass unseen, so it is
    reported even when it is too short for the camera's watchdog."""

    gap_s: float
    limit_s: float
    frame_time: float
