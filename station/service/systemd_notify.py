"""sd_notify(3) without libsystemd: READY, WATCHDOG, STATUS and STOPPING datagrams.

systemd passes a socket path in $NOTIFY_SOCKET (a leading '@' means the
abstract namespace). Outside systemd the variable is unset and every call
is a no-op, so `station run` behaves the same from a terminal.
"""

from __future__ import annotations

import os
import socket


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 else None
        """systemd's WatchdogSec, when the unit sets one: ping at least twice per period."""
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            # Never block the main loop: a busy or stuck systemd gets the next ping instead
            # (a datagram socket's queue is short, 10 by default, and sendto waits when full).
            self._sock.setblocking(False)

    def notify(self, *lines: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError:
            pass  # queue full, systemd gone or not listening: nothing useful to do

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")
