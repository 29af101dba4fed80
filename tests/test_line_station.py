"""The line service's shell: nothing kills its loop, and its watchdog tells the truth.

The tracker, the audit (real SQLite) and the systemd socket (a real datagram socket)
are real; the link, the camera feed and the judge are stand-ins (pytest-mock) because
the unit under test is the loop around them, not them.
"""

from __future__ import annotations

import queue
import socket
import sqlite3
import time

import pytest

from station.audit import AuditLog
from station.calibration import Deadlines
from station.camera.feed import CameraFeed
from station.link import messages as m
from station.link.endpoint import LinkState, MegaEvent
from station.link.session import LinkError, MegaSession
from station.service.line_station import LineStation
from station.service.metrics import LineMetrics
from station.service.records import PartRecords
from station.service.systemd_notify import SystemdNotifier
from station.tracker import PartTracker, TrackerSettings

DEADLINES = Deadlines(160, 1030, 1060, 1135, 1285)


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)
    yield path, sock
    sock.close()


def _station(tmp_path, mocker, notify_path, audit: AuditLog | None = None):
    audit = audit or AuditLog(tmp_path / "audit.sqlite", "model-x", 0x1234)
    tracker = PartTracker(
        TrackerSettings(DEADLINES, heartbeat_timeout_s=1.0, pulse_s=0.08),
        epoch_base=audit.next_epoch() - 1,
        first_uid=1,  # the first part's uid: the test may have taken it already
    )
    link = mocker.Mock(spec=MegaSession)
    link.command.return_value = m.Ack(1, m.Error.OK)
    feed = mocker.Mock(spec=CameraFeed)
    feed.progress_age_s.return_value = 0.0
    feed.healthy.return_value = True
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "2000000"})
    records = PartRecords(audit, LineMetrics())
    station = LineStation(
        tracker,
        link,
        queue.Queue(),
        mocker.Mock(),
        feed,
        mocker.Mock(),
        audit,
        records,
        LineMetrics(),
        notifier=notifier,
    )
    return station, link, audit


def _part(epoch: int, part_id: int) -> MegaEvent:
    now = time.monotonic()
    return MegaEvent(epoch, m.Part(part_id, 0, 1000 * part_id), now, now)


def test_an_event_that_raises_fails_its_part_safe_and_the_loop_goes_on(
    tmp_path, mocker, notify_socket
):
    """The first INSERT fails (the database is locked): the error is alarmed with the part
    and the event, the part is rejected at the Mega, and the next part is handled as usual."""
    station, link, audit = _station(tmp_path, mocker, notify_socket[0])
    real_insert = audit.new_part
    mocker.patch.object(audit, "new_part", side_effect=_first_fails(real_insert))
    station.handle(LinkState(True, 1, "handshake done"))
    station.handle(_part(1, 1))
    assert station.errors == 1
    kinds = dict(audit.db.execute("SELECT kind, detail FROM alarms").fetchall())
    assert (
        "part 1: MegaEvent -> NewRow: OperationalError: database is locked"
        in kinds["internal_error"]
    )
    link.command.assert_called_with(m.Verdict(1, 1), due_at=None)
    assert station.tracker.parts[1].failsafe == "internal_error"
    station.handle(_part(1, 2))
    assert station.errors == 1
    row = audit.db.execute("SELECT part_id, trigger_source FROM parts WHERE uid = 2").fetchone()
    assert row == (2, "photo_eye")


def _first_fails(real):
    calls = []

    def insert(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return real(*args, **kwargs)

    return insert


def test_a_command_the_link_cannot_deliver_is_a_fail_safe_not_a_crash(
    tmp_path, mocker, notify_socket
):
    station, link, audit = _station(tmp_path, mocker, notify_socket[0])
    station.handle(LinkState(True, 1, "handshake done"))
    station.handle(_part(1, 1))
    link.command.side_effect = LinkError("no answer to Verdict after 101 tries")
    station.tracker.parts[1].deadline = 0.0
    station._step(timeout=0)
    assert station.errors == 0
    row = audit.db.execute("SELECT verdict, failsafe_reason FROM parts WHERE uid = 1").fetchone()
    assert row == ("reject", "classifier_timeout")


def test_the_watchdog_is_fed_only_while_loop_judge_and_camera_make_progress(
    tmp_path, mocker, notify_socket
):
    path, sock = notify_socket
    station, _, _ = _station(tmp_path, mocker, path)
    station._housekeeping()
    assert sock.recv(200) == b"WATCHDOG=1"
    assert sock.recv(200).startswith(b"STATUS=link DOWN, camera ok")

    station.worker.busy_since = time.monotonic() - 5  # the classifier hangs on one part
    station._last_ping = 0.0
    station._housekeeping()
    status = sock.recv(200)
    assert status.startswith(b"STATUS=") and b"STUCK: judge busy on one part" in status
    station.worker.busy_since = None

    station.feed.progress_age_s.return_value = 3.0  # the camera supervisor itself is hung
    station._last_ping = 0.0
    station._housekeeping()
    assert b"camera supervisor silent 3.0 s" in sock.recv(200)
    with pytest.raises(socket.timeout):
        sock.recv(200)  # no WATCHDOG=1 while anything is stuck: systemd restarts us
    station.feed.progress_age_s.return_value = 0.0

    # The vision trigger (a vision line's trigger, a photo-eye line's witness) hangs.
    station.trigger_progress_age_s = lambda now: 2.5
    station._last_ping = 0.0
    station._housekeeping()
    assert b"vision trigger silent 2.5 s" in sock.recv(200)
    with pytest.raises(socket.timeout):
        sock.recv(200)


def test_a_part_announced_just_after_a_stop_is_asked_for_is_audited(
    tmp_path, mocker, notify_socket
):
    """SIGTERM between two parts: the PART of one that crossed the eye just before it is
    still on its way. The loop must hear it and note it, not end with no row for it (1
    virtual-line run in 6 did so on a loaded machine)."""
    import threading

    station, link, audit = _station(tmp_path, mocker, notify_socket[0])
    station.handle(LinkState(True, 1, "handshake done"))
    station.listen_after_stop_s = 1.0  # the part comes 0.15 s after the stop: well inside
    station.request_stop()
    late = threading.Timer(0.15, lambda: station.inbox.put(_part(1, 1)))
    late.start()
    station.run(drain_timeout_s=2.0)
    late.join()
    row = audit.db.execute("SELECT part_id, failsafe_reason FROM parts WHERE uid = 1").fetchone()
    assert row is not None, "the part the Mega announced has no audit row"
    assert row[0] == 1
