"""The firmware as it will be flashed: host unit tests, and timing on a simulated ATmega2560.

Times here are simavr's simulated microseconds, never the wall clock.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time

import pytest
import serial
from mega_targets import (
    BOOTLOADER_HEX,
    FIRMWARE_DIR,
    FirmwareMegaTarget,
    RawHost,
    build_firmware,
)

from station.link import messages as m
from station.link.framing import FrameError, FrameReader, encode_frame
from station.link.session import LinkState, MegaEvent, MegaSession

ENCODER_STEP_US = 200


@pytest.fixture(scope="module")
def firmware():
    reason = build_firmware()
    if reason:
        pytest.skip(reason)


def test_host_unit_tests_pass(firmware):
    result = subprocess.run(
        ["make", "-s", "-C", str(FIRMWARE_DIR), "test"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    checks, failed = map(int, re.search(r"(\d+) checks, (\d+) failed", result.stdout).groups())
    assert checks > 2000 and failed == 0


def test_firmware_fits_the_mega(firmware):
    out = subprocess.run(
        [
            "avr-size",
            "--format=avr",
            "--mcu=atmega2560",
            str(FIRMWARE_DIR / "build/arduino_mega.elf"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    flash = int(re.search(r"Program:\s+(\d+) bytes", out).group(1))
    ram = int(re.search(r"Data:\s+(\d+) bytes", out).group(1))
    assert flash < 256 * 1024 // 4, "a quarter of the flash is plenty for this sketch"
    assert ram < 8 * 1024 // 2, "keep half the RAM free for the stack"


def _gates(link: MegaSession, count: int, timeout: float = 10.0) -> list[m.Gate]:
    gates, end = [], time.monotonic() + timeout
    while len(gates) < count and time.monotonic() < end:
        try:
            notice = link.events.get(timeout=0.1)
        except queue.Empty:
            continue
        if not isinstance(notice, MegaEvent):
            continue  # link up/down notices
        event = notice.message
        if isinstance(event, m.Part):
            link.send_verdict(event.part_id, reject=True)
        elif isinstance(event, m.Gate):
            gates.append(event)
    assert len(gates) == count
    return gates


@pytest.fixture
def target(firmware, tmp_path):
    mega = FirmwareMegaTarget(tmp_path)
    yield mega
    mega.close()


def test_rejects_fire_within_2_ms_of_due_time(target):
    """Millisecond mode: fire at beam break + gate offset, measured on the servo pin."""
    offset_ms = 250
    config = m.Configure(m.TimingMode.MILLISECONDS, offset_ms, 60, 1000, 2000, 40, 1000, 1)
    with MegaSession(target.port, config) as link:
        assert isinstance(link.events.get(timeout=1), LinkState)
        for _ in range(8):
            target.photo_eye()
            target.sleep_sim(0.1)  # parts further apart than a pulse, or their fires merge
        _gates(link, 8)
        time.sleep(0.2)
    starts, eyes = target.fire_starts_us(), target.eye_us
    assert len(starts) == len(eyes) == 8
    errors_us = [start - eye - offset_ms * 1000 for start, eye in zip(starts, eyes)]
    print(
        f"\nfire-time error, ms mode: worst {max(map(abs, errors_us))} us "
        f"over {len(errors_us)} parts"
    )
    assert all(abs(e) <= 2000 for e in errors_us), errors_us


def test_encoder_mode_fires_within_2_ms_of_due_position(target):
    """Encoder mode at 5,000 counts/s. The servo signal can change only once the pulse on
    the line has ended (at most one rest pulse, 1 ms = 5 counts here), so the bound is
    the +-2 ms of the issue; the error in counts is printed for the record."""
    offset_counts = 600
    config = m.Configure(m.TimingMode.ENCODER_COUNTS, offset_counts, 100, 1000, 2000, 40, 2000, 2)
    with MegaSession(target.port, config) as link:
        assert isinstance(link.events.get(timeout=1), LinkState)
        target.encoder_steps(4000)  # the belt moves: 5,000 counts/s
        time.sleep(0.05)
        for _ in range(3):
            target.photo_eye()
            target.sleep_sim(0.1)
        gates = _gates(link, 3)
        time.sleep(0.2)
    assert len(target.encoder_start_us) == 1
    assert all(g.action == m.GateAction.FIRED for g in gates)
    errors = []
    for eye, start in zip(target.eye_us, target.fire_starts_us()):
        # The belt moves one count every ENCODER_STEP_US: from beam break to fire must be
        # offset_counts steps.
        errors.append((start - eye) / ENCODER_STEP_US - offset_counts)
    worst = max(map(abs, errors))
    print(
        f"\nfire-position error, encoder mode: worst {worst:.2f} counts "
        f"({worst * ENCODER_STEP_US:.0f} us)"
    )
    assert len(errors) == 3 and all(abs(e) * ENCODER_STEP_US <= 2000 for e in errors), errors


def test_a_full_transmit_buffer_drops_whole_frames_never_part_of_one(target, tmp_path):
    """Flood the sketch with GET_STATUS faster than its UART can answer (each 35-byte
    STATUS takes 3 ms at 115200 baud, a 6-byte request 0.5 ms): its 256-byte transmit
    ring fills. Every byte the host then receives must still decode as whole frames."""
    host = RawHost(target.port)
    try:
        host.request(m.Hello(m.PROTOCOL_VERSION), timeout=5)
        for _ in range(150):
            host.send(m.GetStatus())
        host.serial.flush()
        errors, statuses = [], 0
        end = time.monotonic() + 3
        while time.monotonic() < end:
            for item in host.reader.feed(host.serial.read(4096)):
                if isinstance(item, FrameError):
                    errors.append(item)
                elif isinstance(item.message, m.Status):
                    statuses += 1
    finally:
        host.close()
    print(f"\nflood: 150 GET_STATUS, {statuses} STATUS received whole, {len(errors)} bad frames")
    assert statuses > 20
    assert errors == [], errors[:3]


FIRE_LATE_AT_MOST_US = 700
"""A fire starts at the part's exact time, noticed at the next loop pass: at most one
pass late (250 to 370 us when the pass answers a command). A fire quantised to whole
milliseconds, or one that waits for a rest pulse on the wire, is up to 1 ms late and
fails this bound (both were so before issue 15; firmware README, "Timing under load")."""


def test_an_eeprom_write_never_delays_a_pulse(target):
    """A CONFIGURE that changes most of the stored record lands 30 ms before a part's
    fire time. Writing the record blocked the loop for 3.4 ms a byte (up to 76 ms);
    now it is written a byte per loop in the background, and the pulse is on time."""
    offset_ms = 300
    first = m.Configure(m.TimingMode.MILLISECONDS, offset_ms, 50, 1000, 2000, 80, 1000, 0x11111111)
    changed = m.Configure(
        m.TimingMode.MILLISECONDS, 40_000, 5_000, 1000, 2000, 80, 9_000, 0xEEEEEEEE
    )
    host = RawHost(target.port)
    try:
        host.request(m.Hello(m.PROTOCOL_VERSION), timeout=5)
        assert host.request(first) == m.Ack(host.seq, m.Error.OK)
        target.photo_eye()
        assert host.request(m.Verdict(1, 1)).error == m.Error.OK
        target.sleep_until_sim_us(target.eye_us[0] + 270_000)
        assert host.request(changed).error == m.Error.OK
        host.pump(0.5)
    finally:
        host.close()
    starts, eyes = target.fire_starts_us(), target.eye_us
    assert len(starts) == len(eyes) == 1
    error_us = starts[0] - eyes[0] - offset_ms * 1000
    print(f"\nfire-time error with an EEPROM write in progress: {error_us} us")
    assert -50 <= error_us <= FIRE_LATE_AT_MOST_US


def test_timing_under_full_link_load_and_eeprom_writes(target):
    """Issue 15's timing figures, measured on the simulated servo pin: 20 parts fire (no
    verdict: NO_VERDICT at the gate) while another thread floods the link at the full
    115200 baud with GET_STATUS and HEARTBEAT and rewrites the EEPROM record with a
    CONFIGURE every 40 ms. Prints the fire-time error and the pulse-width jitter."""
    offset_ms, pulse_ms = 300, 40  # a pulse shorter than the gap, even on a slow simavr
    host = RawHost(target.port)
    host.request(m.Hello(m.PROTOCOL_VERSION), timeout=5)
    host.request(
        m.Configure(m.TimingMode.MILLISECONDS, offset_ms, 50, 1000, 2000, pulse_ms, 500, 1)
    )
    stop = threading.Event()

    def flood() -> None:
        """Frames back to back at 115200 baud (11.52 bytes a ms): a pty has no baud rate."""
        k, sent, began = 0, 0, time.monotonic()
        while not stop.is_set():
            k += 1
            if k % 12 == 0:  # about every 40 ms: a record that differs in 6 bytes
                timeout = 500 + (k // 12 % 2) * 100
                msg = m.Configure(1, offset_ms, 50, 1000, 2000, pulse_ms, timeout, k)
            else:
                msg = m.GetStatus() if k % 2 else m.HostHeartbeat(k)
            sent += len(encode_frame(k % 255 + 1, msg))
            host.send(msg)
            ahead = sent / 11.52e3 - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        for _ in range(20):
            target.photo_eye()
            target.sleep_sim(0.15)
        end = time.monotonic() + 15  # simavr may run slower than real time on a busy CI
        while len(target.fire_starts_us()) < 20 and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        stop.set()
        flooder.join(timeout=2)
        host.close()
    starts, eyes = target.fire_starts_us(), target.eye_us
    assert len(eyes) == 20 and len(starts) == 20, (len(eyes), len(starts))
    errors_us = [s - e - offset_ms * 1000 for s, e in zip(starts, eyes)]
    widths = [w for _, w in target.frames if abs(w - 2000) < 200]
    print(
        f"\nunder full link load and EEPROM writes, 20 fires: fire-time error "
        f"{min(errors_us)}..{max(errors_us)} us (worst {max(map(abs, errors_us))} us); "
        f"{len(widths)} reject frames, width {min(widths)}..{max(widths)} us "
        f"(jitter {max(widths) - min(widths)} us)"
    )
    assert min(errors_us) >= -50, (errors_us, eyes, starts)  # never before the part is there
    assert max(errors_us) <= FIRE_LATE_AT_MOST_US, (errors_us, eyes, starts)
    assert max(widths) - min(widths) <= 10  # the timer makes the pulse: 0 us measured


@pytest.fixture
def factory_mega(firmware, tmp_path):
    """The sketch behind the Mega's real stk500v2 bootloader, as a board leaves the factory."""
    assert BOOTLOADER_HEX.is_file(), f"{BOOTLOADER_HEX} missing (tools/setup installs it)"
    mega = FirmwareMegaTarget(tmp_path, bootloader=True)
    yield mega
    mega.close()


def test_a_host_that_talks_into_the_bootloader_stops_the_sketch(factory_mega):
    """Why the host waits after opening the port: HELLO every 250 ms from the open (what the
    host did before) keeps the bootloader in programming mode; the sketch never announces."""
    port = serial.Serial(factory_mega.port, 115200, timeout=0.05)
    try:
        frames, reader, end = [], FrameReader(), time.monotonic() + 4
        while time.monotonic() < end:
            port.write(encode_frame(1, m.Hello(m.PROTOCOL_VERSION)))
            frames += [f for f in reader.feed(port.read(512)) if not isinstance(f, FrameError)]
            time.sleep(0.2)
    finally:
        port.close()
    assert not any(isinstance(f.message, m.Identify) for f in frames)


def test_the_link_comes_up_through_the_real_bootloader(factory_mega):
    """Open the port (DTR reset -> bootloader -> sketch), then hang the sketch with the
    port open: the real watchdog (interrupt, then reset) restarts the board through the
    bootloader, the sketch reports the true cause although the bootloader cleared MCUSR,
    and the host, which heard nothing for 1 s, reopens the port and handshakes again."""
    config = m.Configure(m.TimingMode.MILLISECONDS, 300, 50, 1000, 2000, 80, 1000, 7)
    # simavr may run slower than the wall clock on a busy machine: a quiet period of
    # 10 s keeps the host from talking into a slow bootloader, and the times are taken
    # on the simulated clock. The host speaks as soon as the sketch announces itself.
    with MegaSession(factory_mega.port, config, host_timeout_s=1.0, boot_quiet_s=10) as link:
        first = _next_state(link, up=True, timeout=30)
        after_open = factory_mega.sim_us() / 1e6  # the MCU's clock starts at the open
        factory_mega.hang()
        hung_at = factory_mega.sim_us()
        _next_state(link, up=False, timeout=30)
        seen: list = []
        second = _next_state(link, up=True, timeout=60, seen=seen)
        after_reset = (factory_mega.sim_us() - hung_at) / 1e6
        seen += _drain(link, seconds=1.0)
    faults = [n.message for n in seen if isinstance(n, MegaEvent)]
    print(
        f"\nwith the stk500v2 bootloader (simulated time): link up {after_open:.2f} s after "
        f"open, {after_reset:.2f} s after the sketch hung; reset cause reported "
        f"{m.ResetCause(first.identify.reset_cause).name}, "
        f"{m.ResetCause(second.identify.reset_cause).name}"
    )
    assert after_open <= 3.0  # the target; the bootloader takes most of it
    assert after_reset <= 8.0
    # The bootloader clears MCUSR: after the DTR reset the cause cannot be known ...
    assert first.identify.reset_cause == m.ResetCause.UNKNOWN
    # ... but a watchdog reset marks itself in RAM first, and the host is told.
    assert second.identify.reset_cause == m.ResetCause.WATCHDOG
    assert m.FaultEvent(m.Fault.WATCHDOG_RESET, m.ResetCause.WATCHDOG) in faults, faults


def test_a_hung_sketch_is_reset_by_the_watchdog_and_says_so(target):
    """Without the bootloader (MCUSR intact) the same: a hang ends in a watchdog reset
    (60 ms to the watchdog interrupt, 15 ms more to the reset), and the boot
    announcement says so."""
    host = RawHost(target.port)
    host.request(m.Hello(m.PROTOCOL_VERSION), timeout=5)
    target.hang()
    deadline = time.monotonic() + 20
    identify = None
    while identify is None and time.monotonic() < deadline:
        for frame in host.pump(0.2):
            if isinstance(frame.message, m.Identify):  # the boot announcement
                identify = frame.message
    assert identify is not None, "no boot announcement after the hang"
    host.close()
    assert identify.reset_cause == m.ResetCause.WATCHDOG


def _drain(link: MegaSession, seconds: float) -> list:
    notices, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            notices.append(link.events.get(timeout=0.05))
        except queue.Empty:
            pass
    return notices


def _next_state(link: MegaSession, up: bool, timeout: float, seen: list | None = None) -> LinkState:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            notice = link.events.get(timeout=0.1)
        except queue.Empty:
            continue
        if isinstance(notice, LinkState) and notice.up == up:
            return notice
        if seen is not None:
            seen.append(notice)
    raise AssertionError(f"no link {'up' if up else 'down'} within {timeout} s")
