"""The serial link to the Arduino Mega, in three layers (see firmware/arduino_mega/PROTOCOL.md).

- `messages`: every message declared once as a dataclass; payload encode/decode;
- `framing`: COBS + seq + CRC-16 frames, and a stream reader that resynchronises;
- `transport`: opening a device path, a pty or a pyserial URL;
- `session`: handshake, ack/retransmit, heartbeat, reconnect, statistics.
"""
