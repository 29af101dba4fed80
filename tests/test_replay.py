"""`station replay` on real files: images, a recording made by the virtual line, a video.

Real OpenCV decoding, real LiteRT, the simulated Mega spoken to in the real
wire format. The only mock stands guard: replay must never open a serial
port, and a test fails if it tries.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SAMPLE_DIR

from station.cli import main
from station.link import messages as m
from station.sim.stepped_mega import SteppedMega

REQUIRED = {"parts", "rejects", "missed_defects", "false_rejects", "latency_ms_p99"}


def _forbid_serial_ports(mocker) -> None:
    mocker.patch("serial.Serial", side_effect=AssertionError("replay opened a serial port"))


@pytest.fixture(autouse=True)
def no_serial_port(mocker):
    """Replay talks to a simulated Mega in-process; opening any port is a bug."""
    _forbid_serial_ports(mocker)


def _replay(*args: str) -> tuple[int, dict | str]:
    result = CliRunner().invoke(main, ["replay", *args, "--json"])
    if result.exit_code != 0:
        return result.exit_code, result.output
    return 0, json.loads(result.output.strip().splitlines()[-1])


def _rows(out: Path) -> list[dict]:
    with (out / "parts.csv").open() as f:
        return list(csv.DictReader(f))


def _belt_frame(part: np.ndarray, centre_x: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    frame = rng.normal(32, 6, size=(360, 640)).clip(0, 255).astype(np.uint8)
    h, w = part.shape
    left, top = centre_x - w // 2, (360 - h) // 2
    x0, x1 = max(left, 0), min(left + w, 640)
    if x1 > x0:
        frame[top : top + h, x0:x1] = part[:, x0 - left : x1 - left]
    return frame


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """The samples, plus a belt-sized frame, a colour copy, and two files that cannot be read."""
    root = tmp_path / "mixed"
    shutil.copytree(SAMPLE_DIR, root)
    defect = root / "def_front" / "cast_def_0_1000.jpeg"
    grey = cv2.imread(str(defect), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(root / "def_front" / "on_belt.png"), _belt_frame(grey, 320))
    cv2.imwrite(str(root / "def_front" / "colour.png"), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    (root / "ok_front" / "truncated.jpeg").write_bytes(defect.read_bytes()[:3000])
    (root / "ok_front" / "empty.jpeg").write_bytes(b"")
    return root


def test_image_folder_replays_every_part_and_names_each_bad_file(mixed_folder, tmp_path):
    out = tmp_path / "out"
    code, summary = _replay(str(mixed_folder), "--out", str(out))
    assert code == 0, summary
    assert REQUIRED <= set(summary)
    assert summary["parts"] == 14 and summary["labelled"] == 14
    assert summary["missed_defects"] == 0 and summary["false_rejects"] == 0
    assert summary["bad_inputs"] == 2
    bad = {Path(b["file"]).name: b["reason"] for b in summary["bad_input_files"]}
    assert "cut short" in bad["truncated.jpeg"] and "empty" in bad["empty.jpeg"]
    rows = {Path(r["name"]).name: r for r in _rows(out)}
    assert len(rows) == 14
    # The belt frame is located and cropped, the colour copy made grey: same part, same score.
    crop = float(rows["cast_def_0_1000.jpeg"]["score"])
    assert float(rows["colour.png"]["score"]) == pytest.approx(crop, abs=1e-6)
    assert float(rows["on_belt.png"]["score"]) == pytest.approx(crop, abs=1e-3)
    for row in rows.values():  # the simulated Mega acted on each verdict
        assert row["gate_action"] == ("fired" if row["verdict"] == "reject" else "passed")
        assert row["gate_reason"] == "verdict"
    assert summary["gate_mismatches"] == 0
    assert Path(summary["plots"]["confusion_matrix"]).is_file()
    assert Path(summary["plots"]["score_histogram"]).is_file()
    assert not (out / "disagreements").exists()


@pytest.fixture(scope="module")
def sample_scores() -> dict[str, float]:
    """The shipped model's score of each sample photo, `def_front/x.jpeg` -> score."""
    from station.classifier import Classifier
    from station.dataset import load_grey

    classifier = Classifier()
    return {
        path.relative_to(SAMPLE_DIR).as_posix(): classifier.score(load_grey(path))
        for path in sorted(SAMPLE_DIR.glob("*_front/*.jpeg"))
    }


def _in_widest_gap(scores: list[float]) -> float:
    """A threshold in the middle of the widest gap between these scores, so that some lie
    on each side of it whatever model is shipped (no score assumed)."""
    ordered = sorted(set(scores))
    assert len(ordered) > 1, f"the samples all score {ordered}: no threshold splits them"
    gap, low = max((b - a, a) for a, b in zip(ordered, ordered[1:]))
    assert gap > 1e-6, f"sample scores {ordered} too close to split them reliably"
    return low + gap / 2


def test_another_threshold_shows_its_missed_defects_with_their_images(tmp_path, sample_scores):
    defects = {n: s for n, s in sample_scores.items() if n.startswith("def_front/")}
    threshold = _in_widest_gap(list(defects.values()))
    out = tmp_path / "out"
    code, summary = _replay(str(SAMPLE_DIR), "--threshold", repr(threshold), "--out", str(out))
    assert code == 0, summary
    expected = sorted(n for n, s in defects.items() if s < threshold)
    assert summary["threshold"] == threshold
    assert summary["missed_defects"] == len(expected)
    missed = sorted(
        r["name"] for r in _rows(out) if r["label"] == "defective" and r["verdict"] == "pass"
    )
    assert missed == expected
    saved = sorted((out / "disagreements" / "missed_defects").glob("*.png"))
    assert len(saved) == len(expected)
    assert cv2.imread(str(saved[0])).shape == (300, 300, 3)


def test_against_lists_the_parts_whose_verdict_flips(tmp_path, sample_scores):
    """Against the same model at a lower threshold, some OK parts (those scored between
    the two thresholds) flip from pass to reject, and only those."""
    oks = [s for n, s in sample_scores.items() if n.startswith("ok_front/")]
    lower = _in_widest_gap(oks)
    out = tmp_path / "out"
    model = "station/models/default"
    code, summary = _replay(
        str(SAMPLE_DIR), "--against", model, "--against-threshold", repr(lower), "--out", str(out)
    )
    assert code == 0, summary
    rows = _rows(out)
    flipped = [r for r in rows if r["verdict"] != r["verdict_b"]]
    expected = [r for r in rows if r["verdict"] == "pass" and sample_scores[r["name"]] >= lower]
    assert flipped == expected and flipped
    assert all(r["flip"] == "True" for r in flipped)
    assert summary["flips"]["pass_to_reject"] == len(flipped)
    assert summary["flips"]["reject_to_pass"] == 0  # a lower threshold only rejects more
    assert summary["against"]["threshold"] == lower
    assert summary["against"]["false_rejects"] == len(flipped)
    assert len(list((out / "flips" / "pass_to_reject").glob("*.png"))) == len(flipped)
    assert {f["name"] for f in summary["flips"]["parts"]} == {r["name"] for r in flipped}


def test_a_virtual_line_recording_replays_to_the_same_scores(tmp_path, mocker):
    mocker.stopall()  # the virtual line that makes the recording runs on a real pty
    record = tmp_path / "recording"
    run = CliRunner().invoke(
        main,
        ["run", "--virtual-line", "--parts", "16", "--record", str(record), "--json"]
        + ["--out", str(tmp_path / "line")],
    )
    assert run.exit_code == 0, run.output
    line = json.loads(run.output.strip().splitlines()[-1])
    assert line["recorded_parts_labelled"] == 16
    index = (record / "recording.yaml").read_text()
    assert "format: 1" in index and "station: virtual-line" in index
    sidecars = sorted(record.glob("*/*.json"))
    meta = json.loads(sidecars[0].read_text())
    assert meta["gate_action"] in ("fired", "passed") and meta["label"] in ("defective", "ok")
    assert meta["model_version"].startswith("impeller_net") and meta["roi"][2] == 300, meta
    con = sqlite3.connect(line["audit_database"])
    audited = con.execute(
        "SELECT trigger_time, frame_time, verdict_time FROM parts WHERE uid = ?", (meta["uid"],)
    ).fetchone()
    con.close()
    # The audit's times, on its one clock offset, so the two agree after a clock step.
    assert (meta["trigger_time"], meta["frame_time"], meta["verdict_time"]) == audited

    _forbid_serial_ports(mocker)
    out = tmp_path / "out"
    code, summary = _replay(str(record), "--out", str(out))
    assert code == 0, summary
    assert summary["kind"] == "recording" and summary["parts"] == 16
    assert summary["changed_from_recording"] == 0 and summary["missed_defects"] == 0
    for row in _rows(out):  # PNG is lossless: the replay scores exactly what the line did
        assert float(row["score"]) == float(row["recorded_score"])

    # Damage: one frame corrupt, one sidecar gone. Both named, the rest replays.
    pngs = sorted(record.glob("*/*.png"))
    pngs[0].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    pngs[1].with_suffix(".json").unlink()
    code, summary = _replay(str(record), "--out", str(tmp_path / "out2"))
    assert code == 0, summary
    assert summary["parts"] == 14 and summary["bad_inputs"] == 2
    reasons = " ".join(b["reason"] for b in summary["bad_input_files"])
    assert pngs[0].name in reasons and "missing" in reasons


def _write_video(path: Path, parts: list[np.ndarray], step_px: int = 40) -> int:
    """Each part crosses the frame left to right; returns the frames written."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 360))
    frames = 0
    for part in parts:
        for centre in range(-150, 640 + 150, step_px):
            writer.write(cv2.cvtColor(_belt_frame(part, centre), cv2.COLOR_GRAY2BGR))
            frames += 1
    writer.release()
    return frames


def test_a_video_replays_one_part_per_line_crossing_and_reports_truncation(tmp_path, sample_images):
    parts = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sample_images[:4]]
    video = tmp_path / "belt.avi"
    _write_video(video, parts)
    code, summary = _replay(str(video), "--out", str(tmp_path / "out"))
    assert code == 0, summary
    assert summary["kind"] == "video" and summary["parts"] == 4
    assert summary["failsafe_rejects"] == 0 and summary["bad_inputs"] == 0
    names = [p.parent.name for p in sample_images[:4]]
    verdicts = [r["verdict"] for r in _rows(tmp_path / "out")]
    assert verdicts == ["reject" if n == "def_front" else "pass" for n in names]

    cut = tmp_path / "cut.avi"
    cut.write_bytes(video.read_bytes()[: int(video.stat().st_size * 0.6)])
    code, summary = _replay(str(cut), "--out", str(tmp_path / "out2"))
    assert code == 0, summary
    assert 1 <= summary["parts"] < 4
    assert summary["bad_inputs"] == 1
    assert "truncated" in summary["bad_input_files"][0]["reason"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "nothing-here", "no such file or folder"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no images"),
        (lambda p: (p / "notes.txt").write_text("x") and p / "notes.txt", "not a recording"),
    ],
)
def test_a_source_that_cannot_be_replayed_is_named(tmp_path, make, message):
    source = make(tmp_path)
    code, output = _replay(str(source), "--out", str(tmp_path / "out"))
    assert code == 1
    assert message in output and str(source) in output


def test_stepped_mega_rejects_a_part_whose_verdict_is_late():
    configure = m.Configure(1, 1000, 100, 1000, 2000, 80, 1000, 7)
    mega = SteppedMega(configure)
    on_time = mega.photo_eye(0)
    assert mega.verdict(200, on_time, reject=False) == "OK"
    late = mega.photo_eye(300)
    assert mega.verdict(300 + 950, late, reject=False) == "LATE"
    mega.settle()
    assert (mega.gates[on_time].action, mega.gates[on_time].reason) == ("passed", "verdict")
    assert (mega.gates[late].action, mega.gates[late].reason) == ("fired", "no_verdict")
    assert mega.gates[late].mcu_time_ms == 1300


def test_a_replay_is_the_same_every_run_even_faster_than_a_verdict_takes(tmp_path):
    """At 20 parts/s the next part reaches the eye (50 ms) before the last one's verdict
    is due (trigger delay + judging, ~170 ms): verdicts are queued and sent in time order
    on the stepped clock, which never reads the wall clock, so two runs agree row for row.
    (The clock once stepped by measured judging time and went backwards, 1 run in 4.)"""
    runs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        code, summary = _replay(
            str(SAMPLE_DIR),
            "--rate",
            "20",
            "--against",
            "station/models/default",
            "--out",
            str(out),
        )
        assert code == 0, summary
        rows = _rows(out)
        for row in rows:
            row.pop("latency_ms"), row.pop("b_latency_ms", None)
        runs.append(rows)
    assert runs[0] == runs[1] and len(runs[0]) == 12
    assert all(r["gate_action"] for r in runs[0]), "every part reached the gate"
    assert {r["gate_reason"] for r in runs[0]} == {"verdict"}
