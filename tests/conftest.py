"""Shared fixtures: the committed sample images, the full dataset when present, bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "casting_sample"
ONE_CASTING = {"cast_ok_0_1.jpeg", "cast_ok_0_1003.jpeg"}
"""Two sample photos of one casting in the dataset itself (the same scratches on
the flange, turned): the matcher found them, and they were checked by eye."""
FULL_DATASET = REPO.parent / "shared" / "datasets" / "casting" / "train"


@pytest.fixture
def full_dataset() -> Path:
    if not FULL_DATASET.is_dir():
        pytest.skip(
            f"full casting dataset not found at {FULL_DATASET} (it sits beside the repo "
            "as ../shared/datasets/casting on the team's machines and CI)"
        )
    return FULL_DATASET


@pytest.fixture
def sample_images() -> list[Path]:
    return sorted(SAMPLE_DIR.glob("*_front/*.jpeg"))


@pytest.fixture
def damaged_folder(tmp_path: Path) -> Path:
    """The sample folder plus one of each kind of bad file the station must survive."""
    root = tmp_path / "damaged"
    shutil.copytree(SAMPLE_DIR, root)
    good = root / "ok_front" / "cast_ok_0_1.jpeg"
    (root / "ok_front" / "truncated.jpeg").write_bytes(good.read_bytes()[:2000])
    (root / "def_front" / "readme.txt").write_text("not an image")
    (root / "def_front" / "empty.jpeg").write_bytes(b"")
    grey = cv2.imread(str(good), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(root / "ok_front" / "small.png"), cv2.resize(grey, (200, 200)))
    colour = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    colour[:, :, 2] = np.clip(colour[:, :, 2].astype(int) + 60, 0, 255).astype(np.uint8)
    cv2.imwrite(str(root / "def_front" / "colour.png"), colour)
    return root
