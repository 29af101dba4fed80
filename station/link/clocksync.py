"""Map the Mega's millis() onto the host's monotonic clock.

A PART event says when the part broke the beam in the Mega's own time; the
host needs that instant on its own clock to pick the camera frame. Every
frame from the Mega that carries its clock (heartbeats, PART, GATE) is a
sample (host receive time, mcu time); the sample that arrived fastest has
the smallest host-minus-mcu difference, so the offset is taken from that one
(the lower envelope, as NTP filters do). A short window lets the estimate
follow the drift of the Mega's oscillator; differences are taken modulo
2^32, so millis() wrapping after 49 days does no harm.
"""

from __future__ import annotations

from collections import deque


def _signed32(delta: int) -> int:
    delta &= 0xFFFFFFFF
    return delta - 0x1_0000_0000 if delta >= 0x8000_0000 else delta


class ClockSync:
    def __init__(self, window_s: float = 2.0):
        self.window_s = window_s
        self._samples: deque[tuple[int, float]] = deque()
        """(sample number, host_s), oldest first: the window."""
        self._best: deque[tuple[int, float, int, float]] = deque()
        """(sample number, host_s, mcu_ms, offset) with offsets increasing: the window's
        minimum offset is always at the head (a sliding-window minimum, O(1) a sample)."""
        self._count = 0
        self._base_mcu = 0

    def reset(self) -> None:
        """A new boot of the Mega: its millis() restarted, old samples mean nothing."""
        self._samples.clear()
        self._best.clear()

    def observe(self, mcu_ms: int, host_s: float) -> None:
        """A sample: Mega time `mcu_ms` read at host monotonic `host_s`, never earlier than
        the last sample's (the window drops the oldest first, in arrival order)."""
        if not self._samples:
            self._base_mcu = mcu_ms
        # host - mcu, both counted from this boot's first sample: the least is the fastest.
        offset = host_s - _signed32(mcu_ms - self._base_mcu) / 1000
        self._count += 1
        self._samples.append((self._count, host_s))
        while self._best and self._best[-1][3] >= offset:
            self._best.pop()
        self._best.append((self._count, host_s, mcu_ms, offset))
        while len(self._samples) > 1 and host_s - self._samples[0][1] > self.window_s:
            gone, _ = self._samples.popleft()
            if self._best[0][0] == gone:
                self._best.popleft()

    def to_host(self, mcu_ms: int) -> float | None:
        """Host monotonic seconds at Mega time `mcu_ms`, or None before any sample."""
        if not self._best:
            return None
        _, best_host, best_mcu, _ = self._best[0]
        return best_host + _signed32(mcu_ms - best_mcu) / 1000
