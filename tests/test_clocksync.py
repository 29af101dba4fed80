"""Mapping the Mega's millis() onto the host's clock: the fastest sample in the window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from station.link.clocksync import ClockSync, _signed32


def _brute_force(samples: list[tuple[float, int]], window_s: float, mcu_ms: int) -> float:
    """The definition: among the samples of the last `window_s`, the one whose host time
    minus Mega time is least arrived fastest; map through it."""
    newest = samples[-1][0]
    kept = [s for s in samples if newest - s[0] <= window_s] or samples[-1:]
    ref_host, ref_mcu = kept[-1]
    host, mcu = min(kept, key=lambda s: s[0] - ref_host - _signed32(s[1] - ref_mcu) / 1000)
    return host + _signed32(mcu_ms - mcu) / 1000


@given(
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 40)), min_size=1, max_size=60),
    st.integers(0, 2**32 - 1),
)
def test_the_sliding_minimum_is_the_fastest_sample_in_the_window(steps, start):
    """Samples every 0..400 ms with 0..40 ms of transit delay, the Mega's clock possibly
    wrapping past 2^32: the O(1) window minimum maps like the brute-force definition.
    A sample is stamped when the host reads it, so its host time never goes back: two sent
    in the same millisecond, the second faster, still arrive in order (before 2026-12-05
    this test let the second arrive first, which no link does, and failed when hypothesis
    tried it)."""
    clock, samples = ClockSync(window_s=2.0), []
    t_ms, mcu, host = 1000, start, 0.0
    for gap, delay in steps:
        t_ms += gap
        mcu = (mcu + gap) & 0xFFFFFFFF
        host = max(host, (t_ms + delay) / 1000)
        clock.observe(mcu, host)
        samples.append((host, mcu))
        probe = (mcu + 37) & 0xFFFFFFFF
        assert abs(clock.to_host(probe) - _brute_force(samples, 2.0, probe)) < 1e-9


def test_a_reset_forgets_the_last_boot():
    clock = ClockSync()
    clock.observe(5000, 10.0)
    assert clock.to_host(5100) == 10.1
    clock.reset()
    assert clock.to_host(100) is None
    clock.observe(100, 20.0)
    assert clock.to_host(150) == 20.05
