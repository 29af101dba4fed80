"""The host's end of a USB serial cable, made of a pseudo-terminal.

The host opens `port` with pyserial exactly as it opens /dev/ttyACM0. This
side sees what a USB-serial chip sees: when the host opens the port (on a
real Mega, DTR pulses and resets the board) and the bytes it writes.
`unplug()` and `plug()` make the device vanish and come back under the same
stable name (a symlink, like the udev rule's /dev/reject-mega).
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


class PtyPort:
    def __init__(self, link_path: Path | None = None):
        self.link_path = Path(link_path) if link_path else None
        self.slave_name = ""
        self._master: int | None = None
        self._host_open = False
        self.lock = threading.RLock()
        self.line_noise: Callable[[bytes], bytes] | None = None
        """Tests set this to corrupt or drop bytes from the host, as a bad cable would."""

    @property
    def port(self) -> str:
        """The path the host should open: the stable link if there is one, else the pty."""
        return str(self.link_path) if self.link_path else self.slave_name

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
        """The cable is pulled: the host's reads fail and the device path disappears."""
        with self.lock:
            if self._master is not None:
                os.close(self._master)
                self._master = None
            if self.link_path:
                self.link_path.unlink(missing_ok=True)
            self._host_open = False

    def poll(self, timeout_s: float) -> tuple[bool, bytes]:
        """Wait up to `timeout_s` for the host. Returns (host just opened the port, bytes)."""
        master = self._master
        if master is None:
            time.sleep(timeout_s)
            return False, b""
        try:
            readable, _, _ = select.select([master], [], [], timeout_s)
        except (OSError, ValueError):
            return False, b""  # unplugged under our feet
        if not readable:
            # With no host, a pty master is always readable (EIO, "hung up"); quiet means a
            # host has the port open, whether or not it has written: that is when DTR resets
            # a real Mega.
            with self.lock:
                if self._master != master or self._host_open:
                    return False, b""
                self._host_open = True
                return True, b""
        with self.lock:
            if self._master != master:
                return False, b""
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                return False, b""  # select raced with the host
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                self._host_open = False  # no host has the port open
                time.sleep(0.002)
                return False, b""
            opened = not self._host_open
            self._host_open = True
            if self.line_noise:
                data = self.line_noise(data)
            return opened, data

    def write(self, data: bytes) -> None:
        """Bytes to the host; lost if no host has the port open, as on a real cable."""
        with self.lock:
            if data and self._master is not None and self._host_open:
                try:
                    os.write(self._master, data)
                except OSError:
                    pass
