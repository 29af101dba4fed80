"""Live figures: Prometheus on localhost, a one-line summary for the journal.

The counters are the plant engineer's questions: how many parts, how many
rejected, how many of those were fail-safe and why, how many triggers were
missed, how often the camera failed, and how long a verdict takes.
"""

from __future__ import annotations

from collections import Counter, deque

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client import Counter as PromCounter

PAGE_LATENCY_WINDOW = 2000
"""The operator's page's live p50/p99 are over the last this many verdicts."""
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class LineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._parts = PromCounter(
            "station_parts", "Parts seen, by final gate action", ["action"], registry=r
        )
        self._failsafe = PromCounter(
            "station_failsafe_rejects",
            "Rejects without a judgement, by reason",
            ["reason"],
            registry=r,
        )
        self._missed = PromCounter(
            "station_missed_triggers", "Parts the Mega counted but never reported", registry=r
        )
        self._camera = PromCounter(
            "station_camera_errors", "Camera failures, stalls and bad frames", ["kind"], registry=r
        )
        self._faults = PromCounter("station_mega_faults", "Mega faults", ["fault"], registry=r)
        self._frame_to_verdict = Histogram(
            "station_frame_to_verdict_seconds",
            "Frame time to verdict sent",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._trigger_to_verdict = Histogram(
            "station_trigger_to_verdict_seconds",
            "Photo-eye trigger to verdict sent",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.counts: Counter[str] = Counter()
        self.failsafe: Counter[str] = Counter()
        self.camera_errors: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.frame_to_verdict_s: deque[float] = deque(maxlen=100_000)
        self.trigger_to_verdict_s: deque[float] = deque(maxlen=100_000)
        self._server = None

    def serve(self, listen: str) -> None:
        """Start the /metrics endpoint on host:port (bound to that host only)."""
        host, _, port = listen.rpartition(":")
        self._server, _ = start_http_server(
            int(port), addr=host or "127.0.0.1", registry=self.registry
        )

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    # --- events -------------------------------------------------------------------

    def part_triggered(self) -> None:
        self.counts["parts"] += 1

    def verdict_sent(
        self, reject: bool, failsafe: str | None, frame_s: float | None, trigger_s: float | None
    ) -> None:
        self.counts["reject" if reject else "pass"] += 1
        if failsafe:
            self.failsafe[failsafe] += 1
            self._failsafe.labels(failsafe).inc()
        if frame_s is not None:
            self.frame_to_verdict_s.append(frame_s)
            self._frame_to_verdict.observe(frame_s)
        if trigger_s is not None:
            self.trigger_to_verdict_s.append(trigger_s)
            self._trigger_to_verdict.observe(trigger_s)

    def pass_revoked(self) -> None:
        """A pass verdict the link loss turned into a fail-safe reject (counted again as one)."""
        self.counts["pass"] -= 1

    def gated(self, action: str, mega_failsafe: str | None) -> None:
        self.counts[f"gate_{action}"] += 1
        self._parts.labels(action).inc()
        if mega_failsafe:
            self.failsafe[f"mega_{mega_failsafe}"] += 1
            self._failsafe.labels(f"mega_{mega_failsafe}").inc()

    def missed_triggers(self, count: int) -> None:
        self.counts["missed_triggers"] += count
        self._missed.inc(count)

    def camera_problem(self, kind: str) -> None:
        self.camera_errors[kind] += 1
        self._camera.labels(kind).inc()

    def fault(self, name: str) -> None:
        self.faults[name] += 1
        self._faults.labels(name).inc()

    # --- summaries ------------------------------------------------------------------

    @staticmethod
    def percentiles_ms(samples: deque[float]) -> tuple[float | None, float | None]:
        if not samples:
            return None, None
        ms = np.asarray(samples) * 1000
        return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))

    def page_counters(self, latency_window: int = PAGE_LATENCY_WINDOW) -> dict:
        """The counters for the operator's page (and `/api/status`), under the names of the
        virtual line's --json summary; p50/p99 over the last `latency_window` verdicts."""
        c = self.counts
        p50, p99 = self.percentiles_ms(_last(self.trigger_to_verdict_s, latency_window))
        f50, f99 = self.percentiles_ms(_last(self.frame_to_verdict_s, latency_window))
        station_failsafe = {k: n for k, n in self.failsafe.items() if not k.startswith("mega_")}
        return {
            "parts": c["parts"],
            "passed": c["pass"],
            "rejected": c["reject"],
            # The station's fail-safe verdicts, as in the audit's failsafe_reason; the
            # Mega's own (no verdict in time...) are its gate reasons, counted apart.
            "failsafe_rejects": sum(station_failsafe.values()),
            "failsafe_by_reason": station_failsafe,
            "mega_failsafe_by_reason": {
                k.removeprefix("mega_"): n
                for k, n in self.failsafe.items()
                if k.startswith("mega_")
            },
            "gate_fired": c["gate_fired"],
            "gate_passed": c["gate_passed"],
            "missed_triggers": c["missed_triggers"],
            "camera_errors": dict(self.camera_errors),
            "mega_faults": dict(self.faults),
            "verdict_latency_ms_p50": p50,
            "verdict_latency_ms_p99": p99,
            "frame_to_verdict_ms_p50": f50,
            "frame_to_verdict_ms_p99": f99,
        }

    def summary_line(self) -> str:
        c = self.counts
        p50, p99 = self.percentiles_ms(self.trigger_to_verdict_s)
        f50, f99 = self.percentiles_ms(self.frame_to_verdict_s)
        failsafe = ",".join(f"{k}={v}" for k, v in sorted(self.failsafe.items())) or "0"
        return (
            f"parts={c['parts']} pass={c['pass']} reject={c['reject']} failsafe[{failsafe}] "
            f"gate fired={c['gate_fired']} passed={c['gate_passed']} "
            f"missed_triggers={c['missed_triggers']} "
            f"camera_errors={sum(self.camera_errors.values())} "
            f"frame->verdict p50/p99={_ms(f50)}/{_ms(f99)} ms "
            f"trigger->verdict p50/p99={_ms(p50)}/{_ms(p99)} ms"
        )


def _last(samples: deque[float], n: int) -> list[float]:
    """The newest `n` of a deque, as a list, by index: safe while another thread appends
    (iterating would raise 'deque mutated during iteration')."""
    count = len(samples)
    return [samples[i] for i in range(max(0, count - n), count)]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
