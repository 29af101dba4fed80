"""Opening the byte pipe: a serial device, a pty path, or a pyserial URL such as loop://."""

from __future__ import annotations

import serial

BAUD_RATE = 115200


class PortError(OSError):
    """The port cannot be opened or has gone away; the message names it."""


def open_port(port: str, read_timeout_s: float = 0.02) -> serial.SerialBase:
    """Open `port` for the link. A device path is locked so a second station cannot share it."""
    is_url = "://" in port
    try:
        return serial.serial_for_url(
            port,
            baudrate=BAUD_RATE,
            timeout=read_timeout_s,
            write_timeout=1.0,
            **({} if is_url else {"exclusive": True}),
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        raise PortError(f"{port}: cannot open ({exc})") from None
