"""What the operator's page shows, handed over by the line's main loop.

The main loop builds a `LineSnapshot` a few times a second and replaces the
previous one (one reference assignment); the web server's threads only ever
read the latest. Nothing is locked across a request, and nothing a request
does can hold up the line. Plain data: no OpenCV, no server.
"""

from __future__ import annotations

import threading
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
    mode: str = "line"
    """'line' on a running station; what else the page is showing (a replay, a
    calibration step) otherwise."""
    calibration: dict | None = None
    """`calibrate camera|roi --serve`: the picture's figures against their limits."""


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


class PartsInJudgement:
    """Which parts are between 'frame found' and 'verdict sent', so the page can wait.

    The page's Python work and the judge take turns at the interpreter lock:
    measured over 600 parts, four polling clients stretched frame-to-verdict
    p99 from 16.5 to 30 ms although they used under 5% of a core. Each part
    holds this for about 10 ms; a page request that arrives meanwhile waits
    until no part is in judgement (or `wait_quiet`'s limit) before it runs.
    Written by the judge worker and the main loop, read by the web threads.
    """

    def __init__(self) -> None:
        self._uids: set[int] = set()
        self._lock = threading.Lock()
        self._quiet = threading.Event()
        self._quiet.set()

    def begin(self, uid: int) -> None:
        with self._lock:
            self._uids.add(uid)
            self._quiet.clear()

    def end(self, uid: int) -> None:
        """Safe to call for a part that never began, or twice."""
        with self._lock:
            self._uids.discard(uid)
            if not self._uids:
                self._quiet.set()

    def wait_quiet(self, limit_s: float) -> bool:
        """True once no part is in judgement; False if `limit_s` passed first."""
        return self._quiet.wait(limit_s)
