"""Synthetic pits: painted where they belong, measured by a harness that can tell."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SAMPLE_DIR

from station.classifier.flange import FLANGE, rim_circle
from station.classifier.litert_classifier import Classifier
from station.classifier.model_card import ModelCard
from station.cli import main
from station.dataset import load_grey
from station.models import DEFAULT_MODEL_DIR
from station.sensitivity import (
    PIT_DARKNESS,
    held_out_ok_images,
    paint_pit,
    pit_sensitivity,
)

OK_PHOTOS = sorted((SAMPLE_DIR / "ok_front").glob("*.jpeg"))


@pytest.mark.parametrize("darkness", [PIT_DARKNESS, 0.86])
@pytest.mark.parametrize("diameter", [2, 4, 8])
def test_a_pit_is_dark_round_and_on_the_flange(diameter, darkness):
    grey = load_grey(OK_PHOTOS[0])
    painted, (x, y) = paint_pit(grey, diameter, np.random.default_rng(1), darkness)
    rim = rim_circle(grey)
    assert FLANGE[0] * rim.radius <= np.hypot(x - rim.x, y - rim.y) <= FLANGE[1] * rim.radius
    ratio = painted[y, x] / max(1, grey[y, x])
    assert ratio == pytest.approx(darkness, abs=0.2 if diameter == 2 else 0.08)
    changed = np.argwhere(np.abs(painted.astype(int) - grey) > 8)
    assert np.hypot(*(changed - [y, x]).T).max() <= diameter / 2 + 2, "one small round spot"
    again, _ = paint_pit(grey, diameter, np.random.default_rng(1), darkness)
    assert np.array_equal(painted, again), "seeded: the same pit every time"


def test_the_harness_reports_what_a_scorer_can_see():
    """A scorer that sees any dark spot catches every size; a blind one catches none: the
    figure moves with the model, it is not built in."""
    photos = [load_grey(p) for p in OK_PHOTOS]
    originals = {p.tobytes(): p for p in photos}

    def sees_spots(image: np.ndarray) -> float:
        nearest = min(originals.values(), key=lambda o: np.abs(o.astype(int) - image).sum())
        return float((nearest.astype(int) - image).max() > 40)

    keen = pit_sensitivity(sees_spots, photos, threshold=0.5, sizes=(2, 4, 8))
    assert keen.baseline_rejected == 0.0 and keen.detection == {2: 1.0, 4: 1.0, 8: 1.0}
    blind = pit_sensitivity(lambda image: 0.1, photos, threshold=0.5, sizes=(2, 8))
    assert blind.detection == {2: 0.0, 8: 0.0} and blind.images == 6


def test_a_pit_darkness_outside_0_to_1_is_refused():
    photos = [load_grey(OK_PHOTOS[0])]
    for darkness in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="darkness"):
            pit_sensitivity(lambda image: 0.0, photos, threshold=0.5, darkness=darkness)
    result = CliRunner().invoke(main, ["sensitivity", "--data", "x", "--darkness", "1.2"])
    assert result.exit_code == 2 and "--darkness" in result.output


def test_station_sensitivity_writes_the_plot_and_the_card(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    result = CliRunner().invoke(
        main,
        [
            "sensitivity",
            "--model",
            str(model),
            "--data",
            str(SAMPLE_DIR),
            "--out",
            str(tmp_path / "out"),
            "--write-card",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    # Sample photos the model held out, as its validation_scores.csv lists them
    held_out = held_out_ok_images(model, SAMPLE_DIR)
    assert summary["images"] == len(held_out) >= 1
    assert set(summary) >= {"detected_2px", "detected_8px"}
    assert (tmp_path / "out" / "pit_sensitivity.png").stat().st_size > 10_000
    card = ModelCard.load(model / "model_card.json")
    assert card.pit_sensitivity["images"] == len(held_out)
    Classifier(model)  # the card still matches its model


def test_the_shipped_card_states_what_the_held_out_photos_give(full_dataset):
    """Reproducible: the shipped card's table is what the measure gives today."""
    classifier = Classifier()
    paths = held_out_ok_images(DEFAULT_MODEL_DIR, full_dataset)
    assert len(paths) == classifier.card.validation.confusion["true_pass"] + (
        classifier.card.validation.false_rejects
    )
    images = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]
    result = pit_sensitivity(classifier.score, images, classifier.threshold)
    assert classifier.card.pit_sensitivity == result.card_entry()
