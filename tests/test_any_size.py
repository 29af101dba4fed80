"""Images of any size through `station evaluate` and `station replay`, framed one way.

A camera at another resolution, framed tighter or wider, is normal on a line: a photo
framed on the part is classified whole, a wider view is cropped around the part, and
both commands give the same score for the same file. Real files, real OpenCV, LiteRT.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SAMPLE_DIR

from station.cli import main
from station.vision.locate import PartNotFound, frame_photo

DEF = SAMPLE_DIR / "def_front" / "cast_def_0_0.jpeg"
OK = SAMPLE_DIR / "ok_front" / "cast_ok_0_1.jpeg"


def _belt(part: np.ndarray, left: int, top: int = 30) -> np.ndarray:
    rng = np.random.default_rng(3)
    frame = rng.normal(32, 6, size=(360, 640)).clip(0, 255).astype(np.uint8)
    h, w = part.shape
    x0, x1 = max(left, 0), min(left + w, 640)
    frame[top : top + h, x0:x1] = part[:, x0 - left : x1 - left]
    return frame


@pytest.fixture
def sizes(tmp_path: Path) -> Path:
    """The same two castings at 512 px, 224 px, on a 640x360 belt, and cut by the edge."""
    root = tmp_path / "sizes"
    for path, label in ((DEF, "def_front"), (OK, "ok_front")):
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        folder = root / label
        folder.mkdir(parents=True)
        stem = path.stem
        cv2.imwrite(str(folder / f"{stem}_300.png"), grey)
        cv2.imwrite(str(folder / f"{stem}_512.png"), cv2.resize(grey, (512, 512), cv2.INTER_CUBIC))
        cv2.imwrite(str(folder / f"{stem}_224.png"), cv2.resize(grey, (224, 224), cv2.INTER_AREA))
        cv2.imwrite(str(folder / f"{stem}_belt.png"), _belt(grey, 200))
    cv2.imwrite(str(root / "def_front" / "cut_by_edge.png"), _belt(grey, 480))
    return root


def test_frame_photo_takes_a_framed_photo_whole_and_crops_a_wider_view():
    grey = cv2.imread(str(DEF), cv2.IMREAD_GRAYSCALE)
    assert frame_photo(grey, None) is None
    assert frame_photo(cv2.resize(grey, (512, 512)), 300) is None
    roi = frame_photo(_belt(grey, 200), None)
    assert (roi.x, roi.y, roi.width, roi.height) == (200, 30, 300, 300)
    with pytest.raises(PartNotFound, match="cut by the frame edge"):
        frame_photo(_belt(grey, 480), None)


def test_evaluate_and_replay_score_every_size_the_same_way(sizes, tmp_path):
    out = tmp_path / "evaluation"
    result = CliRunner().invoke(
        main, ["evaluate", "--data", str(sizes), "--plots", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["n"] == 8 and report["missed_defects"] == 0 and report["false_rejects"] == 0
    (skipped,) = report["skipped_files"]
    assert "cut_by_edge.png" in skipped["file"] and "cut by the frame edge" in skipped["reason"]
    with (out / "scores.csv").open() as f:
        evaluated = {row["file"]: row for row in csv.DictReader(f)}
    assert evaluated["def_front/cast_def_0_0_belt.png"]["crop"] == "200,30,300"
    assert evaluated["def_front/cast_def_0_0_512.png"]["crop"] == "whole"
    photo, belt = (
        float(evaluated[f"ok_front/cast_ok_0_1_{k}.png"]["score"]) for k in ("300", "belt")
    )
    assert photo == belt, "the part cropped from a belt frame is the photo, pixel for pixel"

    replay_out = tmp_path / "replay"
    result = CliRunner().invoke(main, ["replay", str(sizes), "--out", str(replay_out), "--json"])
    assert result.exit_code == 0, result.output
    with (replay_out / "parts.csv").open() as f:
        replayed = {row["name"]: row for row in csv.DictReader(f)}
    for name, row in evaluated.items():
        assert float(replayed[name]["score"]) == pytest.approx(float(row["score"]), abs=1e-6)
    assert replayed["def_front/cut_by_edge.png"]["failsafe_reason"] == "part_not_found"


def test_escapes_and_false_rejects_are_saved_with_the_crop_drawn(sizes, tmp_path):
    """Each belt frame copied under the other label: the OK part filed as defective is an
    escape, the defective one filed as OK a false reject. Both are saved whole, the crop
    drawn in the colour of the verdict (green pass, red reject)."""
    (sizes / "def_front" / "ok_part_filed_defective.png").write_bytes(
        (sizes / "ok_front" / "cast_ok_0_1_belt.png").read_bytes()
    )
    (sizes / "ok_front" / "defective_part_filed_ok.png").write_bytes(
        (sizes / "def_front" / "cast_def_0_0_belt.png").read_bytes()
    )
    out = tmp_path / "evaluation"
    result = CliRunner().invoke(
        main, ["evaluate", "--data", str(sizes), "--plots", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["escapes"] == ["def_front/ok_part_filed_defective.png"]
    assert report["false_rejects"] == 1
    for folder, name, verdict_colour in (
        ("escapes", "def_front__ok_part_filed_defective.png", 1),  # green: passed
        ("false_rejects", "ok_front__defective_part_filed_ok.png", 2),  # red: rejected
    ):
        drawn = cv2.imread(str(out / folder / name))
        assert drawn.shape == (360, 640, 3)
        box_edge = drawn[30:330, 200]  # the crop's left edge
        assert (box_edge[:, verdict_colour] > 120).mean() > 0.9, folder
        assert (box_edge[:, 3 - verdict_colour] < 80).mean() > 0.9, folder


def test_a_folder_with_no_usable_image_is_an_error_not_a_traceback(tmp_path):
    for label in ("def_front", "ok_front"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "empty.jpeg").write_bytes(b"")
    result = CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path)])
    assert result.exit_code == 1
    assert "no usable image (2 skipped)" in result.output and "Traceback" not in result.output
