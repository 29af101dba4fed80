"""`station replay --serve`: the operator's page over a replay, through the real CLI,
real HTTP, real SQLite and the real export, as an engineer reviewing a recording would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_web import _free_port, _http

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "tests" / "data" / "casting_sample"
STATION = [sys.executable, "-m", "station"]


@pytest.fixture
def source(tmp_path) -> Path:
    """The 12 sample photos and one file that is not an image."""
    folder = tmp_path / "source"
    shutil.copytree(SAMPLES, folder, ignore=shutil.ignore_patterns("*.md", "SHA256SUMS"))
    (folder / "def_front" / "broken.jpeg").write_bytes(b"\xff\xd8 not a jpeg")
    return folder


def _wait_for_the_end(base: str, replay: subprocess.Popen, limit_s: float = 90.0) -> dict:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        assert replay.poll() is None, replay.stderr.read().decode()
        try:
            code, body = _http(base + "/api/status")
        except OSError:
            code = None
        if code == 200 and json.loads(body)["mode"].endswith("(finished)"):
            return json.loads(body)
        time.sleep(0.2)
    raise AssertionError("the replay's page never said the replay had finished")


def test_a_replay_is_served_reviewed_and_exported(source, tmp_path):
    out = tmp_path / "replay"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    replay = subprocess.Popen(
        [*STATION, "replay", str(source), "--serve", f"127.0.0.1:{port}", "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        status = _wait_for_the_end(base, replay)
        token = (out / "web-token").read_text().strip()
        assert os.stat(out / "web-token").st_mode & 0o077 == 0
        summary = json.loads((out / "summary.json").read_text())
        counters = status["since_start"]
        assert counters["parts"] == 12 == counters["passed"] + counters["rejected"]
        assert (counters["rejected"], counters["passed"]) == (summary["rejects"], summary["passes"])
        assert summary["bad_inputs"] == 1
        assert status["camera"]["bad_frames"] == 1
        assert "broken.jpeg" in status["camera"]["last_error"]
        alarms = json.loads(_http(base + "/api/alarms")[1])
        assert any("broken.jpeg" in alarm["detail"] for alarm in alarms["recent"])

        recent = json.loads(_http(base + "/api/parts/recent")[1])
        assert len(recent) == 12
        # each row names the file it came from and its label, for the reviewer
        assert (
            sorted(p["note"] for p in recent)[0]
            == "def_front/cast_def_0_0.jpeg (labelled defective)"
        )
        reject = next(p for p in recent if p["verdict"] == "reject")
        passed = next(p for p in recent if p["verdict"] == "pass")
        # every pass of a replay is kept, so a pass can be looked at and reviewed
        assert _http(f"{base}/api/parts/{passed['uid']}/thumb.jpg")[0] == 200
        review = f"{base}/api/parts/{reject['uid']}/review"
        assert _http(review, {"name": "eve", "truth": "defective"})[0] == 403
        assert _http(review, {"name": "eve", "truth": "defective"}, token)[0] == 200
        review = f"{base}/api/parts/{passed['uid']}/review"
        assert _http(review, {"name": "eve", "truth": "ok"}, token)[0] == 200
        assert _http(base + "/api/alarms/ack", {"name": "eve"}, token)[0] == 200
    finally:
        replay.send_signal(signal.SIGTERM)
        try:
            replay.wait(timeout=15)
        finally:
            replay.kill()
    assert replay.returncode == 0, replay.stderr.read().decode()

    exported = tmp_path / "reviewed"
    subprocess.run(
        [
            *STATION,
            "export-reviewed",
            "--database",
            str(out / "audit.sqlite"),
            "--out",
            str(exported),
            "--config",
            str(REPO / "calibration" / "virtual-line.station.yaml"),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    assert len(list((exported / "def_front").glob("*.png"))) == 1
    assert len(list((exported / "ok_front").glob("*.png"))) == 1
    from station.audit import AuditReader

    _active, alarms = AuditReader(out / "audit.sqlite").alarms()
    assert any(a["detail"].startswith("alarms acknowledged by eve") for a in alarms)


def test_a_pass_the_simulated_mega_turns_late_is_counted_as_the_line_counts_it(tmp_path):
    """A verdict that reaches the stepped Mega too late becomes a fail-safe reject after
    it was counted as a pass: the page's counters and the audit row follow, as on the line."""
    from station.audit import AuditReader
    from station.judgement import Judgement
    from station.replay.page import ReplayTrail
    from station.replay.replay import PartResult

    trail = ReplayTrail(tmp_path, "rec", "model-x", 0.35, 0x1234, images_quota_mb=10)
    result = PartResult(0, "ok_front/a.png", "ok", 0.1, "pass", None, "", 1.0)
    trail.judged(result, Judgement(False, 0.1, None, "", None, None, 0.001))
    assert (trail.snapshot.counters["passed"], trail.snapshot.counters["rejected"]) == (1, 0)
    result.verdict, result.failsafe_reason = "reject", "late"
    result.gate_action, result.gate_reason = "fired", "verdict"
    trail.gated([result])
    counters = trail.snapshot.counters
    assert (counters["parts"], counters["passed"], counters["rejected"]) == (1, 0, 1)
    assert counters["failsafe_by_reason"] == {"late": 1}
    trail.close()
    row = AuditReader(tmp_path / "audit.sqlite").recent_parts(1)[0]
    assert (row["verdict"], row["failsafe_reason"], row["gate_action"]) == (
        "reject",
        "late",
        "fired",
    )
