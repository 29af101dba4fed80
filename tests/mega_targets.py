"""Mega targets for the link conformance suite: one suite, several implementations.

A target gives a port path the host opens, line inputs (photo-eye), and what
the servo did, in the Mega's own clock. `python-sim` is station.sim; the
firmware in simavr (issue 4) plugs in here with the same interface.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import serial

from station.link import messages as m
from station.link.framing import Frame, FrameReader, encode_frame
from station.sim.mega_pty import SimulatedMega


@dataclass(frozen=True)
class Pulse:
    start_ms: int
    end_ms: int
    width_us: int


class PythonMegaTarget:
    name = "python-sim"

    def __init__(self, tmp_path: Path):
        self.sim = SimulatedMega(link_path=tmp_path / "reject-mega").start()

    @property
    def port(self) -> str:
        return self.sim.port

    def photo_eye(self) -> int:
        return self.sim.photo_eye()

    def pulses(self) -> list[Pulse]:
        with self.sim.lock:
            return [Pulse(p.start_ms, p.end_ms, p.width_us) for p in self.sim.core.servo_log]

    def servo_at_rest(self) -> bool:
        with self.sim.lock:
            return self.sim.core.servo_us == self.sim.core.config.servo_rest_us

    def unplug(self) -> None:
        self.sim.unplug()

    def plug(self) -> None:
        self.sim.plug()

    def reset(self) -> None:
        self.sim.reset(m.ResetCause.WATCHDOG)

    def close(self) -> None:
        self.sim.stop()


class RawHost:
    """A bare host on the wire: exact frames in, every frame out, nothing automatic."""

    def __init__(self, port: str):
        self.serial = serial.Serial(port, 115200, timeout=0.01)
        self.reader = FrameReader()
        self.seq = 0
        self.received: list[Frame] = []

    def send(self, msg: m.Message, seq: int | None = None) -> int:
        if seq is None:
            self.seq = self.seq % 255 + 1
            seq = self.seq
        self.serial.write(encode_frame(seq, msg))
        return seq

    def pump(self, seconds: float, ack_events: bool = True) -> list[Frame]:
        """Read for `seconds`; acknowledge reliable events if asked. Returns new frames."""
        new: list[Frame] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for item in self.reader.feed(self.serial.read(256)):
                if isinstance(item, Frame):
                    new.append(item)
                    if ack_events and item.message.RELIABLE:
                        self.serial.write(encode_frame(0, m.AckEvent(item.seq)))
        self.received += new
        return new

    def request(self, msg: m.Message, timeout: float = 2.0) -> m.Message:
        seq = self.send(msg)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for frame in self.pump(0.02):
                if frame.message.IS_REPLY and frame.message.acked_seq == seq:
                    return frame.message
        raise TimeoutError(f"no reply to {msg}")

    def close(self) -> None:
        self.serial.close()
