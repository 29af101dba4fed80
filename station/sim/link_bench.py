"""`station link-bench`: round trip over a real pty, and codec speed.

The round trip is a VERDICT sent by the host session until its ACK is
back, through pyserial, the kernel's pty and the simulated Mega's thread:
the same path as a USB serial port minus the wire itself.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from station.link import messages as m
from station.link.framing import FrameReader, encode_frame
from station.link.session import MegaSession
from station.service.heap import startup_heap_frozen
from station.sim.mega_pty import SimulatedMega

BENCH_CONFIG = m.Configure(m.TimingMode.MILLISECONDS, 60_000, 100, 1000, 2000, 100, 2000, 0)


@dataclass
class LinkBench:
    round_trips: int
    rtt_ms_p50: float
    rtt_ms_p99: float
    rtt_ms_max: float
    retransmits: int
    encode_frames_per_s: float
    decode_frames_per_s: float

    def as_text(self) -> str:
        return (
            f"verdict -> ACK over a pty ({self.round_trips} round trips): "
            f"p50 {self.rtt_ms_p50:.3f} ms, p99 {self.rtt_ms_p99:.3f} ms, "
            f"max {self.rtt_ms_max:.3f} ms, {self.retransmits} retransmits\n"
            f"codec: encode {self.encode_frames_per_s:,.0f} frames/s, "
            f"decode {self.decode_frames_per_s:,.0f} frames/s (VERDICT, one core)"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def run_link_bench(round_trips: int) -> LinkBench:
    with SimulatedMega() as mega:
        session = MegaSession(mega.port, BENCH_CONFIG)
        session.start()
        try:
            session.stats.rtt_s.clear()
            with startup_heap_frozen():  # as `station run` does
                for _ in range(round_trips):
                    part_id = mega.photo_eye()
                    session.send_verdict(part_id, reject=False)
            p50, p99 = session.stats.rtt_ms_percentiles()
            worst = max(session.stats.rtt_s) * 1000
            retransmits = session.stats.retransmits
        finally:
            session.close()
    encode_rate, decode_rate = _codec_rates()
    return LinkBench(
        round_trips,
        p50,
        p99,
        worst,
        retransmits,
        encode_rate,
        decode_rate,
    )


def _codec_rates(frames: int = 50_000) -> tuple[float, float]:
    msgs = [m.Verdict(i, i & 1) for i in range(frames)]
    start = time.perf_counter()
    wires = [encode_frame(i % 255 + 1, msg) for i, msg in enumerate(msgs)]
    encode_s = time.perf_counter() - start
    stream = b"".join(wires)
    start = time.perf_counter()
    decoded = FrameReader().feed(stream)
    decode_s = time.perf_counter() - start
    assert len(decoded) == frames
    return frames / encode_s, frames / decode_s
