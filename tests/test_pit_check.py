"""The pit check on real sample photos: it finds painted pits where they were painted, at
any size of photo, and takes neither a good flange nor a dark line for a pit."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import SAMPLE_DIR

from station.classifier import Classifier, ModelLoadError
from station.classifier.flange import FLANGE, part_centre, rim_circle
from station.classifier.pit_check import PIT_CUT, find_darkest_pit, part_score, pit_score
from station.dataset import load_grey
from station.models import DEFAULT_MODEL_DIR
from station.sensitivity import paint_pit

OK_PHOTOS = [load_grey(p) for p in sorted((SAMPLE_DIR / "ok_front").glob("*.jpeg"))]


def test_the_good_sample_flanges_have_no_pit():
    ratios = [find_darkest_pit(grey).ratio for grey in OK_PHOTOS]
    assert min(ratios) > PIT_CUT + 0.03, ratios


@pytest.mark.parametrize("diameter", [3, 4, 6, 8])
def test_a_painted_pit_is_found_where_it_was_painted(diameter):
    rng = np.random.default_rng(diameter)
    for grey in OK_PHOTOS:
        painted, (x, y) = paint_pit(grey, diameter, rng, 0.3)
        found = find_darkest_pit(painted)
        assert found.ratio < PIT_CUT, (diameter, found)
        assert np.hypot(found.x - x, found.y - y) <= diameter / 2 + 1.5, (diameter, found, x, y)


def test_a_dark_line_across_the_flange_is_not_a_pit():
    """As dark as a painted pit, but long: an edge, a scratch or a shadow, not a pinhole."""
    for grey in OK_PHOTOS:
        rim = rim_circle(grey)
        radius = (FLANGE[0] + FLANGE[1]) / 2 * rim.radius
        start = (int(rim.x + radius), int(rim.y - 12))
        end = (int(rim.x + radius), int(rim.y + 12))
        lined = grey.copy()
        cv2.line(lined, start, end, 0, 1)
        lined = np.where(lined == 0, (grey * 0.3).astype(np.uint8), grey)
        assert find_darkest_pit(lined).ratio > PIT_CUT, "a line taken for a pit"
        dotted = grey.copy()
        cv2.circle(dotted, start, 2, int(grey[start[1], start[0]] * 0.3), -1)
        assert find_darkest_pit(dotted).ratio < PIT_CUT, "the same darkness as a dot is a pit"


@pytest.mark.parametrize("side", [224, 512])
def test_a_pit_is_found_on_a_photo_of_another_size(side):
    painted, (x, y) = paint_pit(OK_PHOTOS[0], 5, np.random.default_rng(3), 0.3)
    resized = cv2.resize(painted, (side, side), interpolation=cv2.INTER_AREA)
    found = find_darkest_pit(resized)
    assert found.ratio < PIT_CUT
    scale = side / 300
    assert np.hypot(found.x - x * scale, found.y - y * scale) <= 4 * scale
    clean = cv2.resize(OK_PHOTOS[0], (side, side), interpolation=cv2.INTER_AREA)
    assert find_darkest_pit(clean).ratio > PIT_CUT


def test_the_rim_follows_the_part():
    grey = OK_PHOTOS[1]
    rim = rim_circle(grey)
    hub = part_centre(grey)
    assert 0.33 * 300 <= rim.radius <= 0.49 * 300
    assert np.hypot(rim.x - hub[0], rim.y - hub[1]) < 10
    shift = np.float32([[1, 0, 9], [0, 1, -6]])
    moved = rim_circle(cv2.warpAffine(grey, shift, (300, 300), borderMode=cv2.BORDER_REPLICATE))
    assert (moved.x - rim.x, moved.y - rim.y) == pytest.approx((9, -6), abs=1.5)
    assert moved.radius == pytest.approx(rim.radius, abs=1.5)


def test_the_pit_score_is_the_threshold_at_the_cut_and_rises_as_the_spot_darkens():
    threshold = 0.6
    assert pit_score(PIT_CUT, PIT_CUT, threshold) == pytest.approx(threshold)
    scores = [pit_score(r, PIT_CUT, threshold) for r in (0.95, 0.85, 0.79, 0.6, 0.3)]
    assert scores == sorted(scores) and scores[0] < threshold <= scores[2]
    assert part_score(0.9, 0.95, PIT_CUT, threshold) == 0.9, "the network's score stands"
    assert part_score(0.01, 0.5, PIT_CUT, threshold) > threshold, "the pit rejects the part"


def test_the_classifier_rejects_a_pit_the_network_passes():
    classifier = Classifier()
    grey = OK_PHOTOS[0]
    painted, (x, y) = paint_pit(grey, 4, np.random.default_rng(7), 0.3)
    clean, pitted = classifier.inspect(grey), classifier.inspect(painted)
    assert clean.score < classifier.threshold
    assert pitted.network_score < classifier.threshold, "the network alone would pass it"
    assert pitted.score >= classifier.threshold
    assert (pitted.pit.x, pitted.pit.y) == pytest.approx((x, y), abs=3)
    framed = np.full((400, 500), 40, np.uint8)
    framed[60:360, 150:450] = painted
    from station.classifier.preprocess import Roi

    in_frame = classifier.inspect(framed, Roi(150, 60, 300, 300))
    assert in_frame.score == pytest.approx(pitted.score)
    assert (in_frame.pit.x, in_frame.pit.y) == (pitted.pit.x, pitted.pit.y), "crop pixels"


def test_a_card_without_the_pit_check_is_refused_naming_the_field(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    card = json.loads((model / "model_card.json").read_text())
    del card["pit_check"]
    (model / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="pit_check: Field required"):
        Classifier(model)
