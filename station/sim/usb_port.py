"""The host's end of a USB serial cable, made of a pseudo-terminal.

The host opens `port` with pyserial exactly as it opens /dev/ttyACM0. This
side sees what a USB-serial chip sees: when the host opens the port (on a
real Mega, DTR pulses and resets the board) and the bytes it writes. Opens
are counted with inotify on the pty's device node, so a close followed at
once by an open is still two events (a pty master alone cannot tell: it
sees "no host" only while no one has the port open, which a quick reopen
hides, and then a board that should have reset would not).
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

from inotify_simple import INotify
from inotify_simple import flags as inotify_flags


class PtyPort:
    def __init__(self, link_path: Path | None = None):
        self.link_path = Path(link_path) if link_path else None
        self.slave_name = ""
        self._master: int | None = None
        self._opens: INotify | None = None
        """Open and close events on the pty's device node."""
        self._host_opens = 0
        """Opens not yet closed: the host has the port open while this is above 0."""
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
            os.close(slave)  # the host opens it by name
            os.set_blocking(master, False)
            self._master = master
            self._opens = INotify()
            self._opens.add_watch(
                self.slave_name,
                inotify_flags.OPEN | inotify_flags.CLOSE_WRITE | inotify_flags.CLOSE_NOWRITE,
            )
            self._host_opens = 0
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
            if self._opens is not None:
                self._opens.close()
                self._opens = None
            if self.link_path:
                self.link_path.unlink(missing_ok=True)
            self._host_opens = 0

    def poll(self, timeout_s: float) -> tuple[bool, bytes]:
        """Wait up to `timeout_s` for the host. Returns (host opened the port since the
        last poll, bytes it wrote)."""
        master = self._master
        if master is None:
            time.sleep(timeout_s)
            return False, b""
        opened = self._take_opens()
        try:
            readable, _, _ = select.select([master], [], [], 0 if opened else timeout_s)
        except (OSError, ValueError):
            return opened, b""  # unplugged under our feet
        opened = self._take_opens() or opened
        if not readable:
            return opened, b""
        with self.lock:
            if self._master != master:
                return opened, b""
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                return opened, b""  # select raced with the host
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                time.sleep(0.002)  # no host has the port open: a pty master reads EIO
                return opened, b""
            if self.line_noise:
                data = self.line_noise(data)
            return opened, data

    def _take_opens(self) -> bool:
        """Count the host's opens and closes since the last call; True if it opened."""
        with self.lock:
            if self._opens is None:
                return False
            opened = False
            for event in self._opens.read(timeout=0):
                if event.mask & inotify_flags.OPEN:
                    self._host_opens += 1
                    opened = True
                else:
                    self._host_opens = max(0, self._host_opens - 1)
            return opened

    def write(self, data: bytes) -> None:
        """Bytes to the host; lost if no host has the port open, as on a real cable."""
        with self.lock:
            if data and self._master is not None and self._host_opens > 0:
                try:
                    os.write(self._master, data)
                except OSError:
                    pass
