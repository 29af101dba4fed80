"""A simulated Mega behind a real pseudo-terminal, reached exactly like /dev/ttyACM0.

The host opens the slave path with pyserial. Opening it resets the
simulated Mega, as DTR resets a real one. `unplug()` and `plug()` make the
port vanish and come back under the same stable name (a symlink, like the
udev rule's /dev/reject-mega).
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time
import tty
from pathlib import Path
from typing import Callable

from station.link import messages as m
from station.sim.mega_core import GateConfig, MegaCore


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

    def advance(self, ms: int) -> None:
        if not self.stepped:
            raise RuntimeError("advance() is for a stepped clock")
        self._ms += ms


class SimulatedMega:
    """MegaCore + pty + a service thread (I/O every millisecond or so)."""

    def __init__(self, link_path: Path | None = None, clock: SimClock | None = None):
        self.clock = clock or SimClock()
        self.link_path = Path(link_path) if link_path else None
        self.eeprom: GateConfig | None = None
        self.core = MegaCore(self.clock.now_ms(), m.ResetCause.POWER_ON)
        self.boots = 1
        self.lock = threading.RLock()
        self._master: int | None = None
        self.slave_name = ""
        self._host_open = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_tick: Callable[[MegaCore, int], None] | None = None

    @property
    def port(self) -> str:
        """The path the host should open: the stable link if there is one, else the pty."""
        return str(self.link_path) if self.link_path else self.slave_name

    def start(self) -> "SimulatedMega":
        self.plug()
        self._thread = threading.Thread(target=self._serve, name="sim-mega", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        self.unplug()

    def __enter__(self) -> "SimulatedMega":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the USB cable -------------------------------------------------------

    def plug(self) -> None:
        with self.lock:
            master, slave = os.openpty()
            tty.setraw(master)
            self.slave_name = os.ttyname(slave)
            os.close(slave)  # the host opens it by name; EIO on read means "no host"
            os.set_blocking(master, False)
            self._master = master
            self._host_open = False
            if self.link_path:
                tmp = self.link_path.with_suffix(".tmp")
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(self.slave_name)
                tmp.replace(self.link_path)

    def unplug(self) -> None:
        """The USB cable is pulled: the host's reads fail and the device path disappears."""
        with self.lock:
            if self._master is not None:
                os.close(self._master)
                self._master = None
            if self.link_path:
                self.link_path.unlink(missing_ok=True)
            self._host_open = False

    # --- resets ---------------------------------------------------------------

    def reset(self, cause: int = m.ResetCause.EXTERNAL) -> None:
        """Reboot: RAM state is lost, the servo goes to rest, the configuration stays in EEPROM."""
        with self.lock:
            self.eeprom = self.core.config if self.core.configured else self.eeprom
            self.core = MegaCore(self.clock.now_ms(), cause, self.eeprom)
            self.boots += 1

    # --- inputs from the line ------------------------------------------------------

    def photo_eye(self) -> int:
        with self.lock:
            return self.core.photo_eye(self.clock.now_ms())

    def set_encoder(self, count: int) -> None:
        with self.lock:
            self.core.encoder = count

    def step(self, ms: int) -> None:
        """Stepped clock only: advance time 1 ms at a time so every deadline is met exactly."""
        for _ in range(ms):
            with self.lock:
                self.clock.advance(1)
                self._tick()

    # --- service thread -----------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                master = self._master
            if master is None:
                time.sleep(0.005)
                continue
            try:
                readable, _, _ = select.select([master], [], [], 0.001)
            except (OSError, ValueError):
                continue
            with self.lock:
                if self._master != master:
                    continue
                if readable:
                    self._read(master)
                if not self.clock.stepped:
                    self._tick()
                else:
                    self._flush()

    def _read(self, master: int) -> None:
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            return  # select raced with the host; nothing to read after all
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            if self._host_open:
                self._host_open = False  # the host closed the port
            time.sleep(0.002)
            return
        if not self._host_open:
            self._host_open = True
            self.reset(m.ResetCause.EXTERNAL)  # opening the port pulses DTR
        self.core.receive(data, self.clock.now_ms())

    def _tick(self) -> None:
        now = self.clock.now_ms()
        if self.on_tick:
            self.on_tick(self.core, now)
        self.core.tick(now)
        self._flush()

    def _flush(self) -> None:
        out = self.core.take_output()
        if out and self._master is not None and self._host_open:
            try:
                os.write(self._master, out)
            except OSError:
                pass  # the host vanished mid-write; the frame is lost, as on a real cable
