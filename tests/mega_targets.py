"""Mega targets for the link conformance suite: one suite, several implementations.

A target gives a port path the host opens, line inputs (photo-eye), and what
the servo did, in the Mega's own clock. `python-sim` is station.sim;
`firmware-simavr` is the real sketch (firmware/arduino_mega) compiled with
avr-gcc and run on a simulated ATmega2560 by sim/harness.c.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

import serial
from c_core import CMegaCore

from station.link import messages as m
from station.link.framing import Frame, FrameReader, encode_frame
from station.sim.mega_core import MegaCore
from station.sim.mega_pty import SimulatedMega
from station.sim.usb_port import PtyPort

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware" / "arduino_mega"
BOOTLOADER_HEX = Path(
    "/usr/share/arduino/hardware/arduino/avr/bootloaders/stk500v2/stk500boot_v2_mega2560.hex"
)
"""The Mega 2560's factory bootloader, from Debian's arduino-core-avr."""
REST_US = 1000


@dataclass(frozen=True)
class Pulse:
    start_ms: int
    end_ms: int
    width_us: int
    late_ms: int = 0
    """How late the simulation's own thread started it (python-sim under CPU load)."""


class PythonMegaTarget:
    """The Python twin (station.sim.mega_core) behind a pty, in a service thread."""

    name = "python-sim"
    core = MegaCore

    def __init__(self, tmp_path: Path):
        self.sim = SimulatedMega(link_path=tmp_path / "reject-mega", core=self.core).start()

    @property
    def port(self) -> str:
        return self.sim.port

    def photo_eye(self) -> int:
        return self.sim.photo_eye()

    def pulses(self) -> list[Pulse]:
        with self.sim.lock:
            return [
                Pulse(p.start_ms, p.end_ms, p.width_us, p.late_ms) for p in self.sim.core.servo_log
            ]

    def servo_at_rest(self) -> bool:
        with self.sim.lock:
            return self.sim.core.servo_us == self.sim.core.config.servo_rest_us

    @property
    def usb(self):
        return self.sim.usb

    def unplug(self) -> None:
        self.sim.unplug()

    def plug(self) -> None:
        self.sim.plug()

    def reset(self) -> None:
        self.sim.reset(m.ResetCause.WATCHDOG)

    def close(self) -> None:
        self.sim.stop()


class CCoreTarget(PythonMegaTarget):
    """The firmware's own C core (station_core.c, built for this machine, driven through
    ctypes) behind the same pty and service thread: the conformance suite proves the C
    logic and the Python twin equal without simavr's timing in the way."""

    name = "c-core"
    core = CMegaCore


def build_firmware() -> str | None:
    """Build the sketch and the harness; None when done, else why it cannot run here.

    A missing toolchain skips the firmware tests on a developer's machine, but where
    STATION_REQUIRE_FIRMWARE is set (.ci/run sets it) it is a failure: CI must never
    pass by skipping the firmware."""
    missing = [t for t in ("avr-gcc", "make", "gcc") if not shutil.which(t)]
    reason = None
    if missing:
        reason = f"{', '.join(missing)} not installed (tools/setup installs the firmware toolchain)"
    elif not Path("/usr/include/simavr/sim_avr.h").exists():
        reason = "libsimavr-dev not installed (tools/setup installs it)"
    if reason and os.environ.get("STATION_REQUIRE_FIRMWARE"):
        raise RuntimeError(f"STATION_REQUIRE_FIRMWARE is set: {reason}")
    if reason:
        return reason
    result = subprocess.run(
        ["make", "-s", "-C", str(FIRMWARE_DIR), "all", "harness"], capture_output=True, text=True
    )
    if result.returncode:
        raise RuntimeError(f"firmware build failed:\n{result.stdout}\n{result.stderr}")
    return None


class FirmwareMegaTarget:
    """The real firmware in simavr, behind a PtyPort that plays the USB cable.

    Opening the port sends the harness "start" (first time) or "reset ext"
    (later), as DTR does on a real board; the firmware's UART pty is bridged
    to the host's pty by a thread. Servo pulses come from the harness in
    simulated microseconds.
    """

    name = "firmware-simavr"

    def __init__(self, tmp_path: Path, bootloader: bool = False):
        command = [
            str(FIRMWARE_DIR / "build/simavr_harness"),
            str(FIRMWARE_DIR / "build/arduino_mega.elf"),
        ]
        if bootloader:
            command.append(str(BOOTLOADER_HEX))
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        mcu_pty = None
        for line in self.proc.stdout:
            if line.startswith("@PORT "):
                mcu_pty = line.split()[1]
            if line.startswith("@READY"):
                break
        assert mcu_pty, "the harness printed no @PORT"
        self.mcu = os.open(mcu_pty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.mcu)
        self.usb = PtyPort(tmp_path / "reject-mega")
        self.usb.plug()
        self.started = False
        self.next_part = 1
        self.servo: list[tuple[int, int]] = []  # (sim us, width us) at every width change
        self.eye_us: list[int] = []  # sim us of every beam break
        self.frames: list[tuple[int, int]] = []  # (sim us, width us) of every non-rest frame
        self.encoder_start_us: list[int] = []
        self.lock = threading.Lock()
        self._sim_time_us: int | None = None
        self._time_seen = threading.Event()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._bridge, daemon=True),
            threading.Thread(target=self._read_harness, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def port(self) -> str:
        return self.usb.port

    def _command(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _bridge(self) -> None:
        """Carry bytes between the host's pty and the firmware's UART until close().

        close() sets the stop flag and then quits the harness, so a step already
        under way can find the UART pty gone (EIO) or the harness's stdin closed
        (broken pipe): that is the end, not a fault. The same errors before close()
        are a fault, and are raised.
        """
        to_mcu = bytearray()  # bytes the simulated UART has not taken yet (it reads at 115200)
        try:
            while not self._stop.is_set():
                self._bridge_step(to_mcu)
        except (OSError, ValueError):
            if not self._stop.is_set():
                raise

    def _bridge_step(self, to_mcu: bytearray) -> None:
        opened, data = self.usb.poll(0.001)
        if opened:
            self._command("reset ext" if self.started else "start")
            self.started = True
            self.next_part = 1
        to_mcu += data or b""
        if to_mcu:
            try:
                del to_mcu[: os.write(self.mcu, to_mcu)]
            except BlockingIOError:
                pass  # full: the host is sending faster than the wire; keep the rest
        try:
            self.usb.write(os.read(self.mcu, 4096))
        except BlockingIOError:
            pass

    def _read_harness(self) -> None:
        for line in self.proc.stdout:
            kind, *values = line.split()
            with self.lock:
                if kind == "@SERVO":
                    self.servo.append((int(values[0]), int(values[1])))
                elif kind == "@PULSE":
                    self.frames.append((int(values[0]), int(values[1])))
                elif kind == "@EYE":
                    self.eye_us.append(int(values[0]))
                elif kind == "@TIME":
                    self._sim_time_us = int(values[0])
                    self._time_seen.set()
                elif kind == "@ENC_START":
                    self.encoder_start_us.append(int(values[0]))

    def encoder_steps(self, steps: int) -> None:
        """Turn the encoder forward `steps` quadrature counts, one every 200 us."""
        self._command(f"enc {steps}")

    def fire_starts_us(self) -> list[int]:
        """The first frame of each reject: a non-rest frame with a rest frame (or
        nothing) before it. Not from @SERVO width changes: under load the width of
        one reject's frames jitters by more than that line's 10 us threshold."""
        with self.lock:
            frames = [t for t, _width in self.frames]
        return [t for i, t in enumerate(frames) if i == 0 or t - frames[i - 1] > 22_000]

    def photo_eye(self) -> int:
        """A beam break; returns once the simulated MCU has seen it (simavr may run slower
        than the wall clock on a busy machine, and queued breaks would bunch up)."""
        with self.lock:
            seen = len(self.eye_us)
        self._command("eye")
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with self.lock:
                if len(self.eye_us) > seen:
                    break
            time.sleep(0.002)
        else:
            raise TimeoutError("the harness never made the beam break")
        part_id, self.next_part = self.next_part, self.next_part + 1
        return part_id

    def sim_us(self) -> int:
        """The simulated MCU's time now, in microseconds."""
        self._time_seen.clear()
        self._command("time")
        if not self._time_seen.wait(5):
            raise TimeoutError("the harness did not report its time")
        return self._sim_time_us

    def sleep_sim(self, seconds: float) -> None:
        """Wait `seconds` of simulated time (the wall clock may run faster or slower)."""
        self.sleep_until_sim_us(self.sim_us() + int(seconds * 1e6))

    def sleep_until_sim_us(self, when_us: int) -> None:
        end = time.monotonic() + 60
        while self.sim_us() < when_us:
            if time.monotonic() > end:
                raise TimeoutError(f"simulated time did not reach {when_us} us")
            time.sleep(0.01)

    def pulses(self) -> list[Pulse]:
        """Each stretch at a non-rest width, from its first edge to the return to rest."""
        with self.lock:
            changes = list(self.servo)
        out: list[Pulse] = []
        for (t0, width), (t1, _) in zip(changes, changes[1:]):
            if abs(width - REST_US) <= 10:
                continue
            if out and abs(out[-1].width_us - width) <= 10 and out[-1].end_ms == t0 // 1000:
                out[-1] = Pulse(out[-1].start_ms, t1 // 1000, out[-1].width_us)  # same pulse
            else:
                out.append(Pulse(t0 // 1000, t1 // 1000, width))
        return out

    def servo_at_rest(self) -> bool:
        with self.lock:
            return bool(self.servo) and abs(self.servo[-1][1] - REST_US) <= 10

    def unplug(self) -> None:
        self.usb.unplug()

    def plug(self) -> None:
        self.usb.plug()

    def reset(self) -> None:
        self._command("reset wdt")
        self.next_part = 1

    def hang(self) -> None:
        """The sketch hangs with interrupts on, as a firmware bug would: only the real
        watchdog (simavr's) gets the board back."""
        self._command("hang")
        self.next_part = 1

    def close(self) -> None:
        self._stop.set()
        try:
            self._command("quit")
            self.proc.wait(timeout=3)
        except (BrokenPipeError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
        for thread in self._threads:
            thread.join(timeout=2)
        os.close(self.mcu)
        self.usb.unplug()


class RawHost:
    """A bare host on the wire: exact frames in, every frame out, nothing automatic."""

    def __init__(self, port: str):
        self.serial = serial.Serial(port, 115200, timeout=0.01)
        self.reader = FrameReader()
        self.seq = 0
        self.received: list[Frame] = []
        self.wait_for_boot()

    def wait_for_boot(self, timeout: float = 5.0) -> m.Identify:
        """Opening the port reset the Mega: wait for its boot announcement before talking
        (bytes sent into the reset or the bootloader are lost, or worse; PROTOCOL.md)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for frame in self.pump(0.02):
                if isinstance(frame.message, m.Identify) and frame.message.acked_seq == 0:
                    return frame.message
        raise TimeoutError("no boot announcement after opening the port")

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
