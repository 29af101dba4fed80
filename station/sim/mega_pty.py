"""A simulated Mega (MegaCore) behind a pty, reached exactly like /dev/ttyACM0.

Opening the port resets the simulated Mega, as DTR resets a real one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from station.link import messages as m
from station.sim.mega_core import GateConfig, MegaCore, ServoPulse
from station.sim.usb_port import PtyPort


class SimClock:
    """Milliseconds for the simulated Mega: real time, or stepped by a test."""

    def __init__(self, stepped: bool = False):
        self.stepped = stepped
        self._start = time.monotonic()
        self._ms = 0

    def now_ms(self) -> int:
        if self.stepped:
            return self._ms
        return int((time.monotonic() - self._start) * 1000)

    def ms_at(self, monotonic_s: float) -> int:
        """The clock's millisecond at a host monotonic instant (real-time clock only)."""
        return int((monotonic_s - self._start) * 1000)

    def monotonic_at(self, ms: float) -> float:
        return self._start + ms / 1000

    def advance(self, ms: int) -> None:
        if not self.stepped:
            raise RuntimeError("advance() is for a stepped clock")
        self._ms += ms


BOOT_DELAY_MS = 20
"""Opening the port resets the simulated Mega at once; its sketch starts this much later.
A real Mega 2560 spends about a second in its bootloader (the firmware harness runs the
real one); here the delay only has to outlast pyserial's input flush on open, which
would otherwise swallow the boot announcement the host waits for."""


class SimulatedMega:
    """MegaCore + PtyPort + a service thread (I/O and a tick every millisecond or so).

    `core` makes each boot's core; anything with MegaCore's interface will do (the
    tests run the firmware's own C core behind the same pty, tests/c_core.py)."""

    def __init__(
        self,
        link_path: Path | None = None,
        clock: SimClock | None = None,
        core: Callable[..., MegaCore] = MegaCore,
    ):
        self.clock = clock or SimClock()
        self.usb = PtyPort(link_path)
        self.eeprom: GateConfig | None = None
        self.make_core = core
        self.core = core(self.clock.now_ms(), m.ResetCause.POWER_ON)
        self.boots = 1
        self.pulses: list[ServoPulse] = []
        """Every servo pulse of every boot so far, cut short where a reset cut it."""
        self.last_trigger_ms = 0
        """millis() of the last photo-eye trigger: what its PART event carries."""
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._booting_until: int | None = None
        """While set, the port was just opened: the Mega is in reset and deaf."""

    @property
    def port(self) -> str:
        return self.usb.port

    def start(self) -> "SimulatedMega":
        self.usb.plug()
        self._thread = threading.Thread(target=self._serve, name="sim-mega", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        self.usb.unplug()

    def __enter__(self) -> "SimulatedMega":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def unplug(self) -> None:
        self.usb.unplug()

    def plug(self) -> None:
        self.usb.plug()

    def reset(self, cause: int = m.ResetCause.EXTERNAL) -> None:
        """Reboot: RAM state is lost, the servo goes to rest, the configuration stays in EEPROM."""
        with self.lock:
            now = self.clock.now_ms()
            self._collect_pulses(cut_at=now)
            self.eeprom = self.core.config if self.core.configured else self.eeprom
            self.core = self.make_core(now, cause, self.eeprom)
            self.boots += 1

    def _collect_pulses(self, cut_at: int | None) -> None:
        for pulse in self.core.servo_log:
            if cut_at is not None:
                pulse.end_ms = min(pulse.end_ms, cut_at)  # PWM stops at reset: back to rest
            self.pulses.append(pulse)
        self.core.servo_log = []

    def all_pulses(self) -> list[ServoPulse]:
        """Every pulse so far, in order (the servo log of the current boot included)."""
        with self.lock:
            return self.pulses + list(self.core.servo_log)

    def photo_eye(self, at: float | None = None) -> int:
        """A part broke the beam, at host monotonic time `at` (default now).

        A real Mega latches the edge in an interrupt: the caller passes the true edge
        time, so a simulation thread that runs late does not make the part late."""
        with self.lock:
            now = self.clock.now_ms() if at is None or self.clock.stepped else self.clock.ms_at(at)
            self.last_trigger_ms = self.core.millis(now)
            return self.core.photo_eye(now)

    def servo_out(self) -> bool:
        """True while the servo is away from rest: the pusher is sweeping the belt."""
        with self.lock:
            if self._booting_until is not None:
                return False  # in reset: the servo line is low, the pusher at rest
            return self.core.servo_us != self.core.config.servo_rest_us

    def set_encoder(self, count: int) -> None:
        with self.lock:
            self.core.encoder = count

    def step(self, ms: int) -> None:
        """Stepped clock only: advance time 1 ms at a time so every deadline is met exactly."""
        for _ in range(ms):
            with self.lock:
                self.clock.advance(1)
                self._tick()

    def _serve(self) -> None:
        while not self._stop.is_set():
            opened, data = self.usb.poll(0.001)
            with self.lock:
                now = self.clock.now_ms()
                if opened:  # opening the port pulses DTR: the servo stops at once
                    self._collect_pulses(cut_at=now)
                    # A stepped clock moves only when the test says: boot at once there.
                    self._booting_until = now + (0 if self.clock.stepped else BOOT_DELAY_MS)
                if self._booting_until is not None:
                    if now < self._booting_until:
                        continue
                    self._booting_until = None
                    self.reset(m.ResetCause.EXTERNAL)
                if data:
                    self.core.receive(data, self.clock.now_ms())
                if self.clock.stepped:
                    self.usb.write(self.core.take_output())
                else:
                    self._tick()

    def _tick(self) -> None:
        self.core.tick(self.clock.now_ms())
        self.usb.write(self.core.take_output())
