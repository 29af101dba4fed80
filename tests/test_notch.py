"""The notch measure on real photos: it finds a real chip on the rim's edge wherever the part
is turned and at any size of photo, takes no good sample face for a notch, and does not
read the black beyond the frame's edge as one."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import SAMPLE_DIR

from station.classifier.flange import Circle, rim_circle
from station.classifier.notch import _bright, darkest_notch
from station.classifier.pit_check import CARD_SETTINGS, NOTCH_CUT, find_pit
from station.dataset import load_grey

OK_PHOTOS = [load_grey(p) for p in sorted((SAMPLE_DIR / "ok_front").glob("*.jpeg"))]
CHIP = SAMPLE_DIR.parent / "notch" / "cast_def_0_1310.jpeg"
CHIP_AT = (99, 41)
"""Where the chip is, looked at (tests/data/notch/ATTRIBUTION.md)."""


def test_the_good_sample_faces_have_no_notch():
    found = [find_pit(grey).notch.value for grey in OK_PHOTOS]
    assert min(found) > NOTCH_CUT + 0.05, found


def test_a_real_chip_on_the_rim_is_found_where_it_is():
    finding = find_pit(load_grey(CHIP))
    assert finding.notch.value < NOTCH_CUT - 0.3, finding
    assert np.hypot(finding.notch.x - CHIP_AT[0], finding.notch.y - CHIP_AT[1]) <= 4, finding
    assert finding.is_pit(CARD_SETTINGS)
    assert finding.decisive(CARD_SETTINGS) == finding.notch
    flange_only = (finding.darkest.value, finding.sharpest.value, finding.darkest_round.value)
    assert flange_only[0] > CARD_SETTINGS.darkness_cut, "the flange search keeps clear of it"
    assert flange_only[1] < CARD_SETTINGS.dip_cut
    assert flange_only[2] > CARD_SETTINGS.round_darkness_cut


@pytest.mark.parametrize("degrees", [33, 90, 180, 251])
def test_the_chip_is_found_however_the_part_is_turned(degrees):
    grey = load_grey(CHIP)
    turn = cv2.getRotationMatrix2D((149.5, 149.5), degrees, 1.0)
    turned = cv2.warpAffine(grey, turn, (300, 300), borderMode=cv2.BORDER_REPLICATE)
    at = turn @ np.array([*CHIP_AT, 1.0])
    notch = find_pit(turned).notch
    assert notch.value < NOTCH_CUT, notch
    assert np.hypot(notch.x - at[0], notch.y - at[1]) <= 5, (notch, at)


@pytest.mark.parametrize("side", [224, 512])
def test_the_chip_is_found_on_a_photo_of_another_size(side):
    grey = load_grey(CHIP)
    interpolation = cv2.INTER_AREA if side < 300 else cv2.INTER_LINEAR
    notch = find_pit(cv2.resize(grey, (side, side), interpolation=interpolation)).notch
    assert notch.value < NOTCH_CUT, notch
    scale = side / 300
    assert np.hypot(notch.x - CHIP_AT[0] * scale, notch.y - CHIP_AT[1] * scale) <= 4 * scale


@pytest.mark.parametrize("shift", [-45, 45])
def test_a_part_cut_by_the_frame_edge_is_not_notched_by_it(shift):
    """Moved 45 px sideways, the rim runs off the frame: beyond it is not the part."""
    for grey in OK_PHOTOS:
        moved = cv2.warpAffine(
            grey, np.float32([[1, 0, shift], [0, 1, 0]]), (300, 300), borderValue=0
        )
        assert find_pit(moved).notch.value > NOTCH_CUT, shift


def test_a_dark_dash_across_the_circles_is_a_notch_and_one_along_them_is_not():
    """What the measure rests on: a good face's edges and shading run round the rim's
    centre. A dark dash 9 px long on the flange, across its circle, is a notch; a dark arc
    of 60 degrees on the same circle (as a groove or an edge runs) is not."""
    grey = OK_PHOTOS[1]
    rim = rim_circle(grey)
    radius = 0.85 * rim.radius
    x, y = rim.x + radius, rim.y
    metal = int(np.median(grey[int(y) - 6 : int(y) + 7, int(x) - 6 : int(x) + 7]))
    across = grey.copy()
    cv2.line(across, (round(x) - 4, round(y)), (round(x) + 4, round(y)), int(metal * 0.4), 2)
    assert darkest_notch(across, rim)[0] < NOTCH_CUT
    long_along = grey.copy()
    arc = cv2.ellipse2Poly(
        (round(rim.x), round(rim.y)), (round(radius), round(radius)), 0, -30, 30, 1
    )
    cv2.polylines(long_along, [arc], False, int(metal * 0.4), 2)
    assert darkest_notch(long_along, rim)[0] > NOTCH_CUT, "a groove or an edge runs round"


def test_no_face_in_view_reads_no_notch():
    assert darkest_notch(OK_PHOTOS[0], Circle(150, 150, 2.0)) == (1.0, 150, 150)


def test_the_faces_bright_metal_is_the_nearest_rank_90th_percentile_to_the_bit():
    rng = np.random.default_rng(5)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (720, 60)).astype(np.float32), (0, 0), 1.0)
    whole_levels = np.round(smooth)  # many ties
    some = smooth[rng.random(smooth.shape) < 0.3]
    for values in (
        smooth,  # the whole face, as it is measured when all of it is in view
        some,  # the part of the face in view
        whole_levels,
        np.full(999, 17.0, np.float32),
        np.float32([0.0, 255.0]),
    ):
        rank = int(0.9 * (values.size - 1))
        assert _bright(values) == np.partition(values.ravel(), rank)[rank]
