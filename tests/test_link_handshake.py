"""The connect handshake after the port is opened (which resets the Mega), on an injected
clock: the host endpoint and the simulated Mega's core wired byte for byte, a millisecond a
step, no port and no thread.

Why it matters: until the handshake is done the rebooted Mega holds none of the parts it
held, and the host can re-arm them only then. A part due at the gate meanwhile passes
unfired (the 10^6-part soak of 2026-12-05: 19 defective parts, in the reconnects whose boot
announcement was lost on the wire and the host waited out BOOT_QUIET_S).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from station.config import load_station_config
from station.link import messages as m
from station.link.endpoint import BOOT_QUIET_S, HostEndpoint, LinkState
from station.link.framing import FrameReader, encode_frame
from station.sim.mega_core import GateConfig, MegaCore

STATION_YAML = Path(__file__).resolve().parent.parent / "calibration/virtual-line.station.yaml"


@dataclass
class Handshake:
    up_ms: int | None
    """When the link came up (None: not within the run)."""
    first_spoke_ms: int | None
    sent: list[str] = field(default_factory=list)
    """The host's messages, in order, by class name."""


def _link_up_after(
    mega_booted_ms: int,
    announcement_lost: bool,
    eeprom: GateConfig | None = None,
    until_ms: int = 5000,
) -> Handshake:
    """Open the port at 0 ms (the Mega boots at `mega_booted_ms`: 0 for the reset the open
    makes, long before for a board that did not reset; `eeprom`: the calibration it kept)
    and step both sides 1 ms at a time until the link is up."""
    _, calibration = load_station_config(STATION_YAML)
    host = HostEndpoint(calibration.configure_message())
    mega = MegaCore(mega_booted_ms, m.ResetCause.EXTERNAL, eeprom)
    if announcement_lost or mega_booted_ms < 0:
        mega.take_output()  # the announcement never reaches the host (or went long ago)
    host.opened(0.0)
    seen = Handshake(None, None)
    wire = FrameReader()
    for now_ms in range(until_ms):
        mega.tick(now_ms)
        host.receive(mega.take_output(), now_ms / 1000)
        host.tick(now_ms / 1000)
        said = host.take_output()
        if said:
            seen.first_spoke_ms = now_ms if seen.first_spoke_ms is None else seen.first_spoke_ms
            seen.sent += [type(f.message).__name__ for f in wire.feed(said)]
            mega.receive(said, now_ms)
        for notice in host.take_notices():
            if isinstance(notice, LinkState) and notice.up:
                seen.up_ms = now_ms
                return seen
    return seen


def _calibration_kept_in_eeprom(crc_offset: int = 0) -> GateConfig:
    """What a Mega keeps in EEPROM after a handshake with the virtual line's calibration
    (`crc_offset`: a calibration other than the one the host will send)."""
    _, calibration = load_station_config(STATION_YAML)
    mega = MegaCore(0, m.ResetCause.POWER_ON)
    mega.receive(encode_frame(1, calibration.configure_message()), 0)
    assert mega.configured
    return replace(mega.config, calibration_crc=mega.config.calibration_crc + crc_offset)


def test_the_handshake_starts_on_the_boot_announcement():
    link = _link_up_after(0, announcement_lost=False)
    assert link.up_ms is not None and link.up_ms < 50


def test_a_lost_boot_announcement_costs_no_more_than_the_heartbeat_after_it():
    """The sketch sends its first heartbeat right after the announcement; its millis() are
    younger than the open, so it is the new boot: HELLO goes at once, not after 3 s."""
    link = _link_up_after(0, announcement_lost=True)
    assert link.up_ms is not None and link.up_ms < 50, link.up_ms


def test_a_heartbeat_of_a_board_that_did_not_reset_does_not_cut_the_boot_quiet_short():
    """A board running since before the open may instead be a bootloader waiting for a
    programmer behind stale bytes: the host keeps quiet for BOOT_QUIET_S all the same."""
    link = _link_up_after(-60_000, announcement_lost=True)
    assert link.first_spoke_ms is not None, "the host never spoke"
    assert link.first_spoke_ms >= BOOT_QUIET_S * 1000, link.first_spoke_ms
    assert link.up_ms is not None


def test_a_fresh_board_is_sent_the_calibration_and_checked():
    link = _link_up_after(0, announcement_lost=False)
    assert link.sent == ["Hello", "GetStatus", "Configure", "Hello", "ResetFault"]


def test_a_board_that_kept_our_calibration_is_up_two_round_trips_sooner():
    """After a reboot the Mega holds none of its parts until the link is up (the host
    re-arms them then): the photo-eye soak of 10^6 parts, seed 13, lost 2 defective parts
    whose pulse a reset cut, re-armed about 20 ms after it, too late. A boot whose EEPROM
    holds our calibration needs neither CONFIGURE nor the HELLO that checks it."""
    full = _link_up_after(0, announcement_lost=False)
    kept = _link_up_after(0, announcement_lost=False, eeprom=_calibration_kept_in_eeprom())
    assert kept.sent == ["Hello", "GetStatus", "ResetFault"]
    assert kept.up_ms is not None and full.up_ms is not None and kept.up_ms < full.up_ms


def test_a_board_that_kept_another_calibration_is_sent_ours():
    other = _calibration_kept_in_eeprom(crc_offset=1)
    link = _link_up_after(0, announcement_lost=False, eeprom=other)
    assert link.sent == ["Hello", "GetStatus", "Configure", "Hello", "ResetFault"]
