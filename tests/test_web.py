"""The operator's page: its API on a real audit database (Flask's test client), then
the whole page served by a running virtual line over real HTTP."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.audit import AuditLog, AuditReader
from station.tracker import OperatorAck
from station.web import server
from station.web.export import export_reviewed
from station.web.server import create_app, load_token
from station.web.shifts import shift_start
from station.web.snapshot import (
    JudgedView,
    LineSnapshot,
    PartsInJudgement,
    ReviewPart,
    WebRequest,
)

SAMPLES = Path(__file__).parent / "data" / "casting_sample"
TOKEN = "t0ken-for-the-tests-0123456789"


def _sample(label: str) -> Path:
    folder = SAMPLES / ("def_front" if label == "defective" else "ok_front")
    return sorted(folder.glob("*.jpeg"))[0]


class MainLoop:
    """Stands in for LineStation's inbox: carries out each action at once on the real
    audit (a review) or writes the acknowledgement, and keeps what it was asked."""

    def __init__(self, audit: AuditLog):
        self.audit = audit
        self.actions: list[object] = []

    def submit(self, request: WebRequest) -> WebRequest:
        self.actions.append(request.action)
        if isinstance(request.action, ReviewPart):
            a = request.action
            request.done.set_result(self.audit.review(a.uid, a.truth, a.reviewer))
        else:
            self.audit.alarm("acknowledged", f"alarms acknowledged by {request.action.name}")
            request.done.set_result(True)
        return request


@pytest.fixture
def site(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    audit = AuditLog(tmp_path / "audit.sqlite", "model-x", 0x1234)
    now = time.monotonic()
    for uid, label in ((1, "defective"), (2, "ok"), (3, "defective")):
        audit.new_part(uid, 1, uid, "photo_eye", uid * 200, now - 10 + uid)
        image = cv2.imread(str(_sample(label)))
        path = images / f"{uid:09d}.png"
        cv2.imwrite(str(path), image)
        verdict = "reject" if label == "defective" else "pass"
        audit.update(
            uid,
            verdict=verdict,
            score=0.9 if verdict == "reject" else 0.1,
            verdict_time=now - 9 + uid,
            image_path=str(path),
        )
    audit.update(3, failsafe_reason="classifier_timeout", score=None)
    audit.alarm("camera_stall", "no frame for 1.0 s")
    frame = cv2.imread(str(_sample("defective")))
    canvas = np.zeros((360, 640, 3), np.uint8)
    canvas[30:330, 170:470] = frame
    snapshot = LineSnapshot(
        taken_at=time.time(),
        started_at=time.time() - 60,
        counters={"parts": 3, "passed": 1, "rejected": 2, "failsafe_rejects": 1},
        link={"up": True, "epoch": 1},
        camera={"healthy": True, "fps": 60.0},
        model={"version": "model-x", "threshold": 0.35},
        images={"used_bytes": 1, "quota_bytes": 2},
        latest=JudgedView(1, canvas, (170, 30, 300, 300), "reject", 0.9, None, time.time()),
    )
    loop = MainLoop(audit)
    loop.judging = PartsInJudgement()
    app = create_app(
        snapshot=lambda: snapshot,
        submit=loop.submit,
        reader=AuditReader(audit.path),
        images_dir=images,
        token=TOKEN,
        shift_start=lambda now: now - 3600,
        judging=loop.judging,
        rate_per_s=200,
    )
    return app.test_client(), audit, loop, snapshot


def _writes(audit: AuditLog) -> tuple[int, int]:
    db = sqlite3.connect(audit.path)
    counts = (
        db.execute("SELECT COUNT(*) FROM reviews").fetchone()[0],
        db.execute("SELECT COUNT(*) FROM alarms").fetchone()[0],
    )
    db.close()
    return counts


def test_status_is_the_snapshot_and_the_shift_counts_come_from_the_audit(site):
    client, _audit, _loop, snapshot = site
    status = client.get("/api/status").get_json()
    assert status["since_start"] == snapshot.counters
    shift = status["since_shift_start"]
    assert (shift["parts"], shift["passed"], shift["rejected"], shift["failsafe_rejects"]) == (
        3,
        1,
        2,
        1,
    )
    assert shift["failsafe_by_reason"] == {"classifier_timeout": 1}
    assert status["latest"]["uid"] == 1 and "image" not in status["latest"]


def test_the_live_frame_shows_the_crop_box_without_drawing_on_the_line_s_frame(site):
    client, _audit, _loop, snapshot = site
    before = snapshot.latest.image.copy()
    response = client.get("/api/live.jpg")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(response.data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (360, 640, 3)
    b, g, r = image[180, 170].astype(int)  # on the box's left edge: red for a reject
    assert r > 150 and g < 100 and b < 100, (b, g, r)
    assert np.array_equal(snapshot.latest.image, before)


def test_the_live_image_is_the_part_the_status_named_even_after_a_newer_one(site, tmp_path):
    """The page captions part N from /api/status, then asks for live.jpg?uid=N; a newer
    part judged in between must not put another part's picture under that caption."""
    _client, audit, loop, first = site
    dark = first.latest.image.copy()
    dark[:] = 0
    newer = dataclasses.replace(
        first,
        taken_at=first.taken_at + 1,
        latest=JudgedView(2, dark, None, "pass", 0.1, None, time.time()),
    )
    current = {"snapshot": first}
    app = create_app(
        snapshot=lambda: current["snapshot"],
        submit=loop.submit,
        reader=AuditReader(audit.path),
        images_dir=tmp_path,
        token=TOKEN,
        shift_start=lambda now: now - 3600,
    )
    client = app.test_client()
    named = client.get("/api/status").get_json()["latest"]["uid"]
    current["snapshot"] = newer

    def brightness(url: str) -> float:
        data = client.get(url).data
        return float(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE).mean())

    assert named == 1
    assert brightness(f"/api/live.jpg?uid={named}") > 20  # part 1's photo, not part 2's black
    assert brightness("/api/live.jpg") < 10  # without a uid: the latest
    assert brightness("/api/live.jpg?uid=999") < 10  # a part no status named: the latest


def test_actions_need_the_token_and_a_refused_one_writes_nothing(site):
    client, audit, loop, _snapshot = site
    before = _writes(audit)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        answer = client.post("/api/alarms/ack", json={"name": "ana"}, headers=headers)
        assert answer.status_code == 403 and "token" in answer.get_json()["error"]
        answer = client.post(
            "/api/parts/1/review", json={"name": "ana", "truth": "ok"}, headers=headers
        )
        assert answer.status_code == 403
    assert _writes(audit) == before and loop.actions == []
    good = {"Authorization": f"Bearer {TOKEN}"}
    answer = client.post("/api/alarms/ack", json={"name": "ana"}, headers=good)
    assert answer.status_code == 200 and loop.actions == [OperatorAck("ana")]
    active, recent = AuditReader(audit.path).alarms()
    assert active == [] and recent[0]["detail"] == "alarms acknowledged by ana"


def test_a_review_is_recorded_once_valid_and_names_what_is_wrong_otherwise(site):
    client, audit, _loop, _snapshot = site
    good = {"Authorization": f"Bearer {TOKEN}"}
    bad = [
        ({"name": "ana", "truth": "maybe"}, 400, "truth"),
        ({"truth": "ok"}, 400, "name"),
        ({"name": "x" * 65, "truth": "ok"}, 400, "name"),
    ]
    for body, code, word in bad:
        answer = client.post("/api/parts/2/review", json=body, headers=good)
        assert answer.status_code == code and word in answer.get_json()["error"]
    answer = client.post("/api/parts/99/review", json={"name": "ana", "truth": "ok"}, headers=good)
    assert answer.status_code == 404
    assert _writes(audit)[0] == 0
    answer = client.post(
        "/api/parts/2/review", json={"name": "ana", "truth": "defective"}, headers=good
    )
    assert answer.status_code == 200
    part = client.get("/api/parts/2").get_json()
    assert part["reviews"][0]["truth"] == "defective" and part["image"] is True


def test_images_are_served_by_part_id_only(site, tmp_path):
    client, audit, _loop, _snapshot = site
    assert client.get("/api/parts/1/image").status_code == 200
    thumb = client.get("/api/parts/1/thumb.jpg")
    assert (
        thumb.status_code == 200
        and max(cv2.imdecode(np.frombuffer(thumb.data, np.uint8), cv2.IMREAD_COLOR).shape[:2])
        == 160
    )
    outside = tmp_path / "secret.png"
    cv2.imwrite(str(outside), np.zeros((8, 8), np.uint8))
    audit.update(2, image_path=str(outside))  # a row pointing outside the image store
    assert client.get("/api/parts/2/image").status_code == 404
    for path in (
        "/api/parts/..%2F..%2Fetc%2Fpasswd/image",
        "/api/parts/1/../../../etc/passwd",
        "/static/..%2Fserver.py",
        "/static/server.py",
        "/api/parts/7/image",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"root:" not in response.data and b"import" not in response.data


def test_a_10_mb_body_gets_413_and_a_flood_gets_429_with_nothing_written(site):
    client, audit, loop, _snapshot = site
    good = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    big = b'{"name": "' + b"a" * 10_000_000 + b'"}'
    answer = client.post("/api/alarms/ack", data=big, headers=good)
    assert answer.status_code == 413 and answer.get_json()["status"] == 413
    answers = [client.get("/api/status") for _ in range(1000)]
    codes = [a.status_code for a in answers]
    assert codes.count(429) > 0 and set(codes) <= {200, 429}
    refused = next(a for a in answers if a.status_code == 429).get_json()
    assert refused["status"] == 429 and "slow down" in refused["error"]
    assert loop.actions == [] and _writes(audit) == (0, 1)


def test_headers_forbid_framing_sniffing_and_caching_of_the_api(site):
    client, *_ = site
    page = client.get("/")
    assert page.status_code == 200 and b"/static/app.js" in page.data
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert client.get("/api/alarms").headers["Cache-Control"] == "no-store"
    assert client.get("/static/app.js").status_code == 200


def test_a_request_waits_while_a_part_is_in_judgement_and_never_for_ever(site, monkeypatch):
    """The page takes turns at the interpreter lock with the judge: it lets a part's
    frame-to-verdict go first, and a part stuck in judgement only slows it down."""
    client, _audit, loop, _snap = site
    monkeypatch.setattr(server, "YIELD_TO_LINE_S", 5.0)
    loop.judging.begin(7)
    loop.judging.begin(8)
    answered = threading.Event()
    threading.Thread(
        target=lambda: client.get("/api/status").status_code == 200 and answered.set(),
        daemon=True,
    ).start()
    loop.judging.end(7)
    assert not answered.wait(0.2), "answered while part 8 was still in judgement"
    loop.judging.end(8)
    loop.judging.end(8)  # twice, as a failed judgement and the loop both may
    assert answered.wait(2.0)

    monkeypatch.setattr(server, "YIELD_TO_LINE_S", 0.05)
    loop.judging.begin(9)  # a hung classifier: never ends
    assert client.get("/api/status").status_code == 200


def test_the_token_file_must_be_private_and_long(tmp_path):
    path = tmp_path / "token"
    path.write_text("short\n")
    os.chmod(path, 0o600)
    with pytest.raises(ValueError, match="at least 16"):
        load_token(path)
    path.write_text(TOKEN + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="readable by others"):
        load_token(path)
    os.chmod(path, 0o600)
    assert load_token(path) == TOKEN
    with pytest.raises(ValueError, match="token_file"):
        load_token(tmp_path / "missing")


def test_the_shift_began_at_the_latest_start_even_yesterday():
    starts = shift_start(["14:00", "06:00", "22:00"])
    at_3am = dt.datetime(2026, 11, 24, 3, 0).astimezone()
    assert dt.datetime.fromtimestamp(starts(at_3am.timestamp())) == dt.datetime(2026, 11, 23, 22, 0)
    noon = dt.datetime(2026, 11, 24, 12, 0).astimezone()
    assert dt.datetime.fromtimestamp(starts(noon.timestamp())) == dt.datetime(2026, 11, 24, 6)
    with pytest.raises(ValueError, match="25:00"):
        shift_start(["25:00"])


def test_export_reviewed_writes_labelled_crops_and_a_manifest(site, tmp_path):
    _client, audit, _loop, _snapshot = site
    audit.review(1, "defective", "ana")
    audit.review(2, "defective", "ana")
    audit.review(2, "ok", "ben")  # the latest review stands
    audit.update(3, image_path=None)
    audit.review(3, "defective", "ana")
    result = export_reviewed(audit.path, tmp_path / "reviewed", 300, 2000)
    assert result.exported == {"defective": 1, "ok": 1}
    assert [uid for uid, _ in result.skipped] == [3]
    crops = sorted((tmp_path / "reviewed").rglob("*.png"))
    assert [p.parent.name for p in crops] == ["def_front", "ok_front"]
    assert all(cv2.imread(str(p)).shape == (300, 300, 3) for p in crops)
    rows = (tmp_path / "reviewed" / "manifest.csv").read_text().splitlines()
    assert len(rows) == 4 and "ben" in rows[2] and "no saved image" in rows[3]


# --- the page on a running virtual line ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, body: dict | None = None, token: str | None = None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_page_on_a_running_virtual_line(tmp_path):
    from station.config import load_station_config
    from station.sim.virtual_line import run_virtual_line

    config, calibration = load_station_config(
        Path(__file__).parent.parent / "calibration" / "virtual-line.station.yaml"
    )
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    os.chmod(token_file, 0o600)
    port = _free_port()
    audit = config.audit.model_copy(
        update={"database": tmp_path / "audit.sqlite", "images_dir": tmp_path / "images"}
    )
    web = config.web.model_copy(update={"listen": f"127.0.0.1:{port}", "token_file": token_file})
    config = config.model_copy(update={"audit": audit, "web": web})
    base = f"http://127.0.0.1:{port}"
    seen: dict = {}

    def probe() -> None:
        """As a person at the page would, while the line runs (the line needs the main
        thread for its signal handlers)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                code, data = _http(base + "/api/status")
            except OSError:
                code = None
            if code == 200 and json.loads(data)["since_start"]["parts"] >= 10:
                seen["status"] = json.loads(data)
                break
            time.sleep(0.2)
        seen["live"] = _http(base + "/api/live.jpg")[0]
        seen["ack_without_token"] = _http(base + "/api/alarms/ack", {"name": "ana"})[0]
        seen["ack"] = _http(base + "/api/alarms/ack", {"name": "ana"}, TOKEN)[0]
        seen["10 MB"] = _http(base + "/api/alarms/ack", {"name": "a" * 10_000_000}, TOKEN)[0]
        recent = json.loads(_http(base + "/api/parts/recent")[1])
        judged = [p for p in recent if p["verdict"] in ("pass", "reject")][:2]
        seen["reviews"] = [
            _http(f"{base}/api/parts/{part['uid']}/review", {"name": "ana", "truth": t}, TOKEN)[0]
            for part, t in zip(judged, ("defective", "ok"))
        ]

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    summary = run_virtual_line(config, calibration, config.virtual_line, 40, [], tmp_path)
    prober.join(timeout=10)
    status = seen.get("status")
    assert status is not None, "the page never showed 10 parts"
    assert status["link"]["up"] and status["camera"]["healthy"]
    assert seen["live"] == 200
    assert seen["ack_without_token"] == 403 and seen["ack"] == 200
    assert seen["10 MB"] == 413
    assert seen["reviews"] == [200, 200]
    assert summary["lost"] == 0
    reader = AuditReader(tmp_path / "audit.sqlite")
    _active, alarms = reader.alarms()
    assert any(a["detail"] == "alarms acknowledged by ana" for a in alarms)
    assert len(reader.latest_reviews()) == 2
    with pytest.raises(OSError):
        _http(base + "/api/status")  # the page stops with the station


def test_a_taken_port_leaves_the_line_running_without_the_page(tmp_path):
    """The page is not part of the safety function: a port another program holds is
    alarmed and logged, and the station starts without it."""
    from station.config import load_station_config
    from station.sim.virtual_line import run_virtual_line

    config, calibration = load_station_config(
        Path(__file__).parent.parent / "calibration" / "virtual-line.station.yaml"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = config.model_copy(
            update={
                "audit": config.audit.model_copy(
                    update={"database": tmp_path / "a.sqlite", "images_dir": tmp_path / "img"}
                ),
                "web": config.web.model_copy(update={"listen": f"127.0.0.1:{port}"}),
            }
        )
        summary = run_virtual_line(config, calibration, config.virtual_line, 10, [], tmp_path)
    assert summary["lost"] == 0 and summary["routed_as_verdict"] == 10
    _active, alarms = AuditReader(tmp_path / "a.sqlite").alarms()
    assert any(a["kind"] == "web_unavailable" and str(port) in a["detail"] for a in alarms)
