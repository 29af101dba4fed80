"""The connect handshake after the port is opened (which resets the Mega), on an injected
clock: the host endpoint and the simulated Mega's core wired byte for byte, a millisecond a
step, no port and no thread.

Why it matters: until the handshake is done the rebooted Mega holds none of the parts it
held, and the host can re-arm them only then. A part due at the gate meanwhile passes
unfired (the 10^6-part soak of 2026-12-05: 19 defective parts, in the reconnects whose boot
announcement was lost on the wire and the host waited out BOOT_QUIET_S).
"""

from __future__ import annotations

from pathlib import Path

from station.config import load_station_config
from station.link import messages as m
from station.link.endpoint import BOOT_QUIET_S, HostEndpoint, LinkState
from station.sim.mega_core import MegaCore

STATION_YAML = Path(__file__).resolve().parent.parent / "calibration/virtual-line.station.yaml"


def _link_up_after(mega_booted_ms: int, announcement_lost: bool, until_ms: int = 5000):
    """Open the port at 0 ms (the Mega boots at `mega_booted_ms`: 0 for the reset the open
    makes, long before for a board that did not reset) and step both sides 1 ms at a time:
    the ms the link came up (None if not by `until_ms`), and the ms the host first spoke."""
    _, calibration = load_station_config(STATION_YAML)
    host = HostEndpoint(calibration.configure_message())
    mega = MegaCore(mega_booted_ms, m.ResetCause.EXTERNAL)
    if announcement_lost or mega_booted_ms < 0:
        mega.take_output()  # the announcement never reaches the host (or went long ago)
    host.opened(0.0)
    first_spoke = None
    for now_ms in range(until_ms):
        mega.tick(now_ms)
        host.receive(mega.take_output(), now_ms / 1000)
        host.tick(now_ms / 1000)
        said = host.take_output()
        if said:
            first_spoke = now_ms if first_spoke is None else first_spoke
            mega.receive(said, now_ms)
        for notice in host.take_notices():
            if isinstance(notice, LinkState) and notice.up:
                return now_ms, first_spoke
    return None, first_spoke


def test_the_handshake_starts_on_the_boot_announcement():
    up_ms, _ = _link_up_after(0, announcement_lost=False)
    assert up_ms is not None and up_ms < 50


def test_a_lost_boot_announcement_costs_no_more_than_the_heartbeat_after_it():
    """The sketch sends its first heartbeat right after the announcement; its millis() are
    younger than the open, so it is the new boot: HELLO goes at once, not after 3 s."""
    up_ms, _ = _link_up_after(0, announcement_lost=True)
    assert up_ms is not None and up_ms < 50, up_ms


def test_a_heartbeat_of_a_board_that_did_not_reset_does_not_cut_the_boot_quiet_short():
    """A board running since before the open may instead be a bootloader waiting for a
    programmer behind stale bytes: the host keeps quiet for BOOT_QUIET_S all the same."""
    up_ms, first_spoke = _link_up_after(-60_000, announcement_lost=True)
    assert first_spoke is not None and first_spoke >= BOOT_QUIET_S * 1000, first_spoke
    assert up_ms is not None
