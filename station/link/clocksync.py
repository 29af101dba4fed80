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
        self._samples: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        """A new boot of the Mega: its millis() restarted, old samples mean nothing."""
        self._samples.clear()

    def observe(self, mcu_ms: int, host_s: float) -> None:
        self._samples.append((host_s, mcu_ms))
        while len(self._samples) > 1 and host_s - self._samples[0][0] > self.window_s:
            self._samples.popleft()

    def to_host(self, mcu_ms: int) -> float | None:
        """Host monotonic seconds at Mega time `mcu_ms`, or None before any sample."""
        if not self._samples:
            return None
        ref_host, ref_mcu = self._samples[-1]
        # host - mcu for each sample, relative to the newest one: the least is the fastest.
        best_host, best_mcu = min(
            self._samples, key=lambda s: s[0] - ref_host - _signed32(s[1] - ref_mcu) / 1000
        )
        return best_host + _signed32(mcu_ms - best_mcu) / 1000
