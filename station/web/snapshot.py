"""What the operator's page shows, handed over by the line's main loop.

The main loop builds a `LineSnapshot` a few times a second and replaces the
previous one (one reference assignment); the web server's threads only ever
read the latest. Nothing is locked across a request, and nothing a request
does can hold up the line. Plain data: no OpenCV, no server.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class JudgedView:
    """The latest judged frame, for the line view."""

    uid: int
    image: np.ndarray
    """The camera frame as judged (never modified after the camera made it)."""
    roi: tuple[int, int, int, int] | None
    """The crop the classifier saw: x, y, width, height in frame pixels."""
    verdict: str
    score: float | None
    failsafe: str | None
    at: float
    """UNIX s of the verdict."""


@dataclass(frozen=True)
class LineSnapshot:
    taken_at: float
    """UNIX s."""
    started_at: float
    """UNIX s at which the station started taking parts."""
    counters: dict
    """Since start-up, under the names of `station run --virtual-line --json`."""
    link: dict
    camera: dict
    model: dict
    images: dict
    latest: JudgedView | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ReviewPart:
    """An engineer's word on what part `uid` truly was (written by the main loop)."""

    uid: int
    truth: str
    reviewer: str


@dataclass
class WebRequest:
    """An action from the page for the main loop; `done` gets its result."""

    action: object
    done: Future = field(default_factory=Future)
