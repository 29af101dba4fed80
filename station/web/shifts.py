"""When the current shift began, from the local start times in the station file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from station.config import parse_shift_starts


def shift_start(shifts: list[str]) -> Callable[[float], float]:
    """now (UNIX s) -> UNIX s of the latest shift start at or before it, local time.
    `shifts`: the station file's web.shifts, "HH:MM" (ValueError names a bad one)."""
    starts = parse_shift_starts(shifts)

    def latest(now: float) -> float:
        moment = dt.datetime.fromtimestamp(now).astimezone()
        candidates = [
            dt.datetime.combine(moment.date() - dt.timedelta(days=back), t, moment.tzinfo)
            for back in (0, 1)
            for t in starts
        ]
        return max(c for c in candidates if c <= moment).timestamp()

    return latest
