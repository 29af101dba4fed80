"""The pit check on real sample photos: it finds painted pits where they were painted, at
any size of photo, finds a real faint pinhole, and takes neither a good flange nor a dark
line for a pit."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import SAMPLE_DIR

from station.classifier import Classifier, ModelLoadError
from station.classifier.flange import (
    FLANGE,
    Circle,
    _lower_quartile,
    _nearest_edges,
    flange_mask,
    part_centre,
    rim_circle,
)
from station.classifier.pit_check import (
    CARD_SETTINGS,
    DARKNESS_CUT,
    DIP_CUT,
    ISOLATED_DIP_CUT,
    ROUND_DARKNESS_CUT,
    SCORE_COLUMNS,
    PitFinding,
    Spot,
    _DipField,
    _smallest,
    find_pit,
    part_score,
    pit_score,
)
from station.dataset import load_grey
from station.models import DEFAULT_MODEL_DIR
from station.sensitivity import paint_pit

OK_PHOTOS = [load_grey(p) for p in sorted((SAMPLE_DIR / "ok_front").glob("*.jpeg"))]
PINHOLE = SAMPLE_DIR.parent / "pinhole" / "cast_def_0_5152.jpeg"
PINHOLE_AT = (236, 208)
"""Where the label review saw it (station/training/label_review.yaml)."""


def test_the_good_sample_flanges_have_no_pit():
    found = [find_pit(grey) for grey in OK_PHOTOS]
    assert min(f.darkest.value for f in found) > DARKNESS_CUT + 0.03, found
    assert max(f.sharpest.value for f in found) < DIP_CUT * 0.85, found
    assert min(f.darkest_round.value for f in found) > ROUND_DARKNESS_CUT, found
    assert max(f.isolated.value for f in found) < ISOLATED_DIP_CUT * 0.85, found
    assert not any(f.is_pit(CARD_SETTINGS) for f in found)


@pytest.mark.parametrize("diameter", [3, 4, 6, 8])
def test_a_painted_pit_is_found_where_it_was_painted(diameter):
    rng = np.random.default_rng(diameter)
    for grey in OK_PHOTOS:
        painted, (x, y) = paint_pit(grey, diameter, rng, 0.3)
        found = find_pit(painted)
        assert found.darkest.value < DARKNESS_CUT, (diameter, found)
        spot = found.darkest
        assert np.hypot(spot.x - x, spot.y - y) <= diameter / 2 + 1.5, (diameter, found, x, y)


def test_a_real_pinhole_too_faint_for_darkness_is_found_by_its_dip():
    """One of the 16 reviewed pinholes: 0.895 of its metal after smoothing, paler than the
    darkest spot of some good flanges (0.869), but round, so it dips in every direction."""
    found = find_pit(load_grey(PINHOLE))
    assert found.darkest.value > DARKNESS_CUT, "darkness alone would pass it"
    assert found.sharpest.value > DIP_CUT and found.is_pit(CARD_SETTINGS)
    assert np.hypot(found.sharpest.x - PINHOLE_AT[0], found.sharpest.y - PINHOLE_AT[1]) <= 4


def test_the_real_pinhole_is_found_on_a_larger_photo_of_it():
    """A camera framing the part at 512 px: the check resizes to its 300 px frame first.
    (At 224 px the pinhole is under 2 px across and its dip falls below the cut.)"""
    photo = cv2.resize(load_grey(PINHOLE), (512, 512), interpolation=cv2.INTER_LINEAR)
    found = find_pit(photo)
    assert found.is_pit(CARD_SETTINGS), found
    at = np.array(PINHOLE_AT) * 512 / 300
    assert np.hypot(found.sharpest.x - at[0], found.sharpest.y - at[1]) <= 4 * 512 / 300


def test_a_faint_painted_pit_is_found_by_its_dip_where_it_was_painted():
    rng = np.random.default_rng(11)
    for grey in OK_PHOTOS:
        painted, (x, y) = paint_pit(grey, 4, rng, 0.8)
        found = find_pit(painted)
        assert found.darkest.value > DARKNESS_CUT, "a pit this faint passes on darkness"
        assert found.sharpest.value > DIP_CUT, (found, x, y)
        assert np.hypot(found.sharpest.x - x, found.sharpest.y - y) <= 2.5, (found, x, y)


def test_a_faint_wide_painted_pit_is_found_as_the_darkest_round_spot_where_it_was_painted():
    """6 px at 86% of the metal: too pale for darkness, too wide for the dip's scale; on the
    whole folder the darkest round spot finds 71% of these (tools/pit_check_survey.py)."""
    rng = np.random.default_rng(1)
    only_by_round = 0
    for grey in OK_PHOTOS:
        painted, (x, y) = paint_pit(grey, 6, rng, 0.86)
        found = find_pit(painted)
        spot = found.darkest_round
        if spot.value < ROUND_DARKNESS_CUT:
            assert np.hypot(spot.x - x, spot.y - y) <= 2, (found, x, y)
            assert found.is_pit(CARD_SETTINGS)
        if found.darkest.value > DARKNESS_CUT and found.sharpest.value < DIP_CUT:
            only_by_round += spot.value < ROUND_DARKNESS_CUT
    assert only_by_round >= 4, "of the 6 sample photos, 4 are found by this measure alone"


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
        assert not find_pit(lined).is_pit(CARD_SETTINGS), "a line taken for a pit"
        dotted = grey.copy()
        cv2.circle(dotted, start, 2, int(grey[start[1], start[0]] * 0.3), -1)
        assert find_pit(dotted).darkest.value < DARKNESS_CUT, "the same darkness as a dot is"


@pytest.mark.parametrize("side", [224, 512])
def test_a_pit_is_found_on_a_photo_of_another_size(side):
    painted, (x, y) = paint_pit(OK_PHOTOS[0], 5, np.random.default_rng(3), 0.3)
    resized = cv2.resize(painted, (side, side), interpolation=cv2.INTER_AREA)
    found = find_pit(resized)
    assert found.darkest.value < DARKNESS_CUT
    scale = side / 300
    spot = found.darkest
    assert np.hypot(spot.x - x * scale, spot.y - y * scale) <= 4 * scale
    clean = cv2.resize(OK_PHOTOS[0], (side, side), interpolation=cv2.INTER_AREA)
    assert not find_pit(clean).is_pit(CARD_SETTINGS)


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


def test_each_directions_edge_nearest_the_rims_radius_is_kept_the_outer_of_two_as_near():
    """The rim is fitted through these; a plain search per direction must agree."""
    rng = np.random.default_rng(3)
    r_min = 99
    for density in (0.0, 0.02, 0.2, 0.9):
        on_edge = rng.random((360, 49)) < density
        on_edge[7:9] = False
        on_edge[8, [10, 20]] = True  # two edges as near to radius r_min + 15: the outer wins
        common = r_min + 15
        has_edge, radii = _nearest_edges(on_edge, r_min, common)
        expected = []
        for row in on_edge:
            found = r_min + np.flatnonzero(row)
            if len(found):
                expected.append(max(found, key=lambda r: (-abs(r - common), r)))
        assert has_edge.tolist() == on_edge.any(axis=1).tolist()
        assert radii.tolist() == expected
        assert radii[np.flatnonzero(has_edge).tolist().index(8)] == r_min + 20


@pytest.mark.parametrize("size", [1, 2, 9_999, 10_000, 10_001, 10_002])
def test_the_fast_lower_quartile_is_numpys_to_the_last_bit(size):
    """part_centre's threshold; the near-duplicate groups of the CV rest on it too."""
    rng = np.random.default_rng(size)
    for top in (255, 3, 0):
        values = rng.integers(0, top + 1, size).astype(np.uint8)
        assert _lower_quartile(values) == np.percentile(values, 25)


def test_the_dip_read_at_some_pixels_is_the_whole_photos_dip_there_to_the_last_bit():
    """The dip field sums the uint8 photo and divides only where it is read: it must give
    what OpenCV's float box filter would, or the cuts set on the survey would move."""
    for grey in OK_PHOTOS:
        pixels = grey.astype(np.float32)
        smooth = cv2.GaussianBlur(pixels, (0, 0), 1.25)
        orders = ((2, 0), (0, 2), (1, 1))
        dxx, dyy, dxy = (cv2.Sobel(smooth, cv2.CV_32F, *d, ksize=3) for d in orders)
        flattest = (dxx + dyy) / 2 - np.sqrt(((dxx - dyy) / 2) ** 2 + dxy**2)
        whole = 1.25**2 * flattest / (cv2.blur(pixels, (15, 15)) + 1.0)
        flat = np.arange(0, grey.size, 7)
        assert np.array_equal(_DipField.of(grey, pixels).at(flat), np.take(whole, flat))


@pytest.mark.parametrize("size, k", [(12_000, 64), (12_000, 32), (700, 64), (64, 64), (10, 64)])
def test_the_sampled_selection_picks_the_k_smallest_values(size, k):
    """`_smallest` stands in for np.argpartition in the darkness and isolation searches:
    the same values must come out, ties (whole grey levels repeat) and short flanges too."""
    rng = np.random.default_rng(size + k)
    for values in (rng.random(size, np.float32), rng.integers(0, 40, size).astype(np.float32)):
        picked = _smallest(values, k)
        assert len(picked) == min(k, size) and len(set(picked.tolist())) == len(picked)
        assert np.array_equal(np.sort(values[picked]), np.sort(values)[: min(k, size)])


@pytest.mark.parametrize(
    "rim", [Circle(150.3, 149.6, 126.2), Circle(20.5, 280.2, 120.0), Circle(-200, 150, 100)]
)
def test_the_flange_mask_is_the_ring_of_the_rim_even_where_it_leaves_the_frame(rim):
    ys, xs = np.ogrid[:300, :300]
    squared = (xs - rim.x) ** 2 + (ys - rim.y) ** 2
    expected = (squared >= (FLANGE[0] * rim.radius) ** 2) & (
        squared <= (FLANGE[1] * rim.radius) ** 2
    )
    assert np.array_equal(flange_mask(OK_PHOTOS[0], rim), expected)


def _finding(
    darkness: float,
    dip: float,
    darkest_round: float = 1.0,
    notch: float = 1.0,
    isolated: float = 0.0,
) -> PitFinding:
    return PitFinding(
        Spot(darkness, 10, 10),
        Spot(dip, 20, 20),
        Spot(darkest_round, 30, 30),
        Spot(isolated, 50, 50),
        Spot(notch, 40, 40),
    )


def test_the_pit_score_is_the_threshold_at_any_cut_and_rises_past_it():
    threshold, settings = 0.6, CARD_SETTINGS
    at_darkness = _finding(DARKNESS_CUT, 0.0)
    at_dip = _finding(1.0, DIP_CUT)
    at_round = _finding(1.0, 0.0, ROUND_DARKNESS_CUT)
    at_isolated = _finding(1.0, 0.0, isolated=ISOLATED_DIP_CUT)
    for at_a_cut in (at_darkness, at_dip, at_round, at_isolated):
        assert pit_score(at_a_cut, settings, threshold) == pytest.approx(threshold)
    rounder = [_finding(0.95, 0.1, r) for r in (1.0, 0.92, 0.90, 0.85)]
    assert [f.is_pit(settings) for f in rounder] == [False, False, True, True]
    assert rounder[2].decisive(settings) == Spot(0.90, 30, 30)
    darker = [_finding(r, 0.05) for r in (0.95, 0.85, 0.79, 0.6, 0.3)]
    scores = [pit_score(f, settings, threshold) for f in darker]
    assert scores == sorted(scores) and scores[0] < threshold <= scores[2]
    sharper = [_finding(0.95, d) for d in (0.05, 0.1, 0.12, 0.2)]
    scores = [pit_score(f, settings, threshold) for f in sharper]
    assert scores == sorted(scores) and scores[1] < threshold <= scores[2]
    assert [f.is_pit(settings) for f in sharper] == [False, False, True, True]
    assert part_score(0.9, _finding(0.95, 0.05), settings, threshold) == 0.9, "network stands"
    assert part_score(0.01, _finding(0.5, 0.05), settings, threshold) > threshold, "dark pit"
    assert part_score(0.01, _finding(0.95, 0.2), settings, threshold) > threshold, "sharp pit"
    assert _finding(0.5, 0.12).decisive(settings).value == 0.5, "the one further past its cut"
    assert _finding(0.79, 0.2).decisive(settings).value == 0.2


def test_clean_parts_are_not_lifted_to_one_common_pit_score():
    """A flange with no round spot reads 1.0 on the round measure; its pit score must stay
    under the network's, or every clean part would score the same (replay, calibration and
    the histograms rank parts by their scores). At a round slope of 50 all six did. The
    same for the notch: good faces read 0.71 to 1.0, close above its cut."""
    classifier = Classifier()
    seen = [classifier.inspect(grey) for grey in OK_PHOTOS]
    assert len({s.score for s in seen}) == len(seen), [s.score for s in seen]
    threshold = classifier.threshold
    far = Spot(3.0, 0, 0)
    for s in seen:
        # The other findings far past harmless, so only the one measured scores.
        none = Spot(-1.0, 0, 0)
        round_only = PitFinding(far, none, s.pit.darkest_round, none, far)
        assert pit_score(round_only, CARD_SETTINGS, threshold) < s.network_score
        notch_only = PitFinding(far, none, far, none, s.pit.notch)
        assert pit_score(notch_only, CARD_SETTINGS, threshold) < s.network_score


def test_the_classifier_rejects_a_pit_the_network_passes():
    classifier = Classifier()
    grey = OK_PHOTOS[0]
    painted, (x, y) = paint_pit(grey, 4, np.random.default_rng(7), 0.3)
    clean, pitted = classifier.inspect(grey), classifier.inspect(painted)
    assert clean.score < classifier.threshold
    assert pitted.network_score < classifier.threshold, "the network alone would pass it"
    assert pitted.score >= classifier.threshold
    assert (pitted.pit.darkest.x, pitted.pit.darkest.y) == pytest.approx((x, y), abs=3)
    framed = np.full((400, 500), 40, np.uint8)
    framed[60:360, 150:450] = painted
    from station.classifier.preprocess import Roi

    in_frame = classifier.inspect(framed, Roi(150, 60, 300, 300))
    assert in_frame.score == pytest.approx(pitted.score)
    assert in_frame.pit == pitted.pit, "in the crop's pixels"


def test_a_card_without_the_pit_check_is_refused_naming_the_field(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    card = json.loads((model / "model_card.json").read_text())
    del card["pit_check"]
    (model / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="pit_check: Field required"):
        Classifier(model)


def test_a_reject_by_the_pit_check_says_so_and_where_in_the_frame():
    """An engineer reading a recording or a replay must tell a pit-check reject from the
    network's, and find the spot on the frame."""
    from station.camera.frames import Frame
    from station.judge import Judge

    judge = Judge(Classifier(), crop_px=300, min_part_area_px=2000)
    grey = OK_PHOTOS[0]
    painted, (x, y) = paint_pit(grey, 4, np.random.default_rng(7), 0.3)
    belt = np.full((400, 500), 40, np.uint8)
    belt[60:360, 150:450] = painted
    judged = judge.judge(Frame(belt, 0.0, 0, "test"))
    assert judged.reject and judged.failsafe is None
    assert judged.detail.startswith("pit check: spot at "), judged.detail
    where = judged.detail.split("spot at ")[1].split(";")[0]
    seen_x, seen_y = (int(v.split("=")[1]) for v in where.split(", "))
    assert np.hypot(seen_x - (150 + x), seen_y - (60 + y)) <= 3, (judged.detail, x, y)
    clean = belt.copy()
    clean[60:360, 150:450] = grey
    assert judge.judge(Frame(clean, 0.0, 1, "test")).detail == ""


def test_a_scores_csv_row_gives_back_the_findings_and_their_verdict():
    """Training and the cross-validation write the findings under SCORE_COLUMNS; the
    studies in tools/ read them back: the same values, at the six decimals the CSVs keep,
    and the same verdict."""
    import csv

    from station.training.cv import OOF_COLUMNS

    card = Classifier().card
    with (DEFAULT_MODEL_DIR / "validation_scores.csv").open() as f:
        assert set(SCORE_COLUMNS) <= set(next(csv.reader(f)))
    assert set(SCORE_COLUMNS) <= set(OOF_COLUMNS)
    for path in sorted(SAMPLE_DIR.glob("*/*.jpeg")):
        finding = find_pit(load_grey(path))
        row = {name: f"{value:.6f}" for name, value in finding.score_columns().items()}
        read = PitFinding.from_score_columns(row)
        assert [s.value for s in read._spots()] == pytest.approx(
            [s.value for s in finding._spots()], abs=1e-6
        )
        assert read.is_pit(card.pit_check) == finding.is_pit(card.pit_check), path.name
