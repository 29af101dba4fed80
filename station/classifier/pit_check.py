"""The pit check: the darkest round spot on the flange, against the metal all round it.

Why it sits beside the network: an isolated pinhole is the most common
casting defect, and the network does not see one it was not shown. With
pits painted on the flange of held-out OK photos (`station sensitivity`),
it rejected none at any size from 2 to 8 px; out of fold, it judges a
casting it has never seen by how that casting was photographed. A pit
needs no training to be found: it is a small spot darker than the metal on
every side of it. This check finds the darkest such spot on the flange and
rejects the part when it is darker than the card's `pit_check.cut`.

How, in the 300 px frame (a crop of another size is resized to it first):
- the flange is the ring between 78% and 93% of the rim's radius
  (`flange.rim_circle`), less 3 px around every long edge (rim, groove,
  shadows), where a dark line would pass for a pit;
- each flange pixel (lightly smoothed) is divided by the darkest 4% of a ring
  round it, 3.5 to 5.5 px out for pits up to 5 px, 6.5 to 8.5 px out for
  pits up to 11 px, whichever is the lower ratio. A round pit has bright
  metal all round, so the ratio is its darkness; a line, an edge or a
  shadow crosses both rings, so their darkest pixels are as dark as the
  spot and the ratio stays near 1;
- only the CANDIDATES spots darkest against their 9x9 mean are tested
  (speed: the whole flange is 15,000 pixels).

The part's pit score puts the ratio on the network's scale: exactly the
model's threshold at the cut, higher for darker spots. The part's score
is the larger of the two, so every figure, threshold and report of the
station counts a pit the way it counts any defect.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from station.classifier.flange import FRAME_PX, flange_mask, long_edges, rim_circle

PIT_CUT = 0.80
"""The cut `station train` writes into the card. Of the 2,764 reviewed OK training photos
(2026-12-04; tools/pit_check_survey.py) the darkest flange spot was 0.869 of its metal,
the median photo's 0.955; pits painted at 30% brightness read 0.31 (8 px) to 0.56 (2 px)
in the median. 0.80 leaves 0.07 below the darkest good photo, and the painted pits are
caught the same at any cut from 0.80 to 0.86."""
METHOD = (
    "darkest round spot on the flange (78-93% of the rim's radius, 3 px clear of long "
    "edges) against the darkest 4% of a ring 3.5-5.5 or 6.5-8.5 px round it, in the "
    "300 px frame (station.classifier.pit_check)"
)
EDGE_CLEARANCE_PX = 3
RINGS_PX = ((3.5, 5.5), (6.5, 8.5))
RING_QUANTILE = 0.04
"""A ring's darkest 4% (the 3rd darkest of the inner ring's 60 pixels) stands for the metal."""
CANDIDATES = 64
PIT_SCORE_SLOPE = 50.0
"""Logits of pit score per unit of ratio below the cut: 0.1 darker than the cut is +5."""

_MARGIN = 9


def _ring_offsets(inner: float, outer: float) -> np.ndarray:
    """(dy, dx) of the pixels between `inner` and `outer` px from a centre."""
    dy, dx = np.mgrid[-_MARGIN : _MARGIN + 1, -_MARGIN : _MARGIN + 1]
    on_ring = (np.hypot(dx, dy) >= inner) & (np.hypot(dx, dy) <= outer)
    return np.stack([dy[on_ring], dx[on_ring]], axis=1)


RING_OFFSETS = tuple(_ring_offsets(inner, outer) for inner, outer in RINGS_PX)


@dataclass(frozen=True)
class PitFinding:
    """The darkest round spot on the flange: its darkness against the metal round it,
    and where it is (pixels of the image that was checked)."""

    ratio: float
    x: int
    y: int


def find_darkest_pit(grey: np.ndarray) -> PitFinding:
    """The flange's darkest round spot in `grey` (uint8, the part framed as in training).

    A photo with no flange to search (no rim found, or all of it on edges)
    gives ratio 1.0: nothing darker than the metal.
    """
    side = min(grey.shape)
    scale = side / FRAME_PX
    frame = grey if side == FRAME_PX else _to_frame(grey)
    edges = long_edges(frame)
    rim = rim_circle(frame, edges)
    clear = 2 * EDGE_CLEARANCE_PX + 1
    near_edge = cv2.dilate(
        edges.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (clear, clear))
    )
    found = _darkest(frame, flange_mask(frame, rim) & (near_edge == 0))
    return PitFinding(found.ratio, round(found.x * scale), round(found.y * scale))


def pit_score(ratio: float, cut: float, threshold: float) -> float:
    """The spot on the network's scale: `threshold` at `cut`, rising as the spot darkens."""
    logit = np.log(threshold / (1 - threshold)) + PIT_SCORE_SLOPE * (cut - ratio)
    return float(1 / (1 + np.exp(-np.clip(logit, -50, 50))))


def part_score(network_score: float, ratio: float, cut: float, threshold: float) -> float:
    """The part's score: the network's, or the pit's if that is higher. At `threshold` the
    part is rejected if either the network or the pit check says so."""
    return max(network_score, pit_score(ratio, cut, threshold))


def _to_frame(grey: np.ndarray) -> np.ndarray:
    interpolation = cv2.INTER_AREA if min(grey.shape) > FRAME_PX else cv2.INTER_LINEAR
    height, width = grey.shape
    size = (round(width * FRAME_PX / min(grey.shape)), round(height * FRAME_PX / min(grey.shape)))
    return cv2.resize(grey, size, interpolation=interpolation)


def _darkest(grey: np.ndarray, search: np.ndarray) -> PitFinding:
    height, width = grey.shape
    search = search.copy()
    search[:_MARGIN] = search[-_MARGIN:] = False
    search[:, :_MARGIN] = search[:, -_MARGIN:] = False
    ys, xs = np.nonzero(search)
    if not len(ys):
        return PitFinding(1.0, width // 2, height // 2)
    smooth = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 0.7)
    centre = smooth[ys, xs]
    local_mean = cv2.blur(smooth, (9, 9))[ys, xs]
    darker = centre / (local_mean + 1.0)
    pick = (
        np.argpartition(darker, CANDIDATES)[:CANDIDATES]
        if len(darker) > CANDIDATES
        else slice(None)
    )
    ys, xs, centre = ys[pick], xs[pick], centre[pick]
    ratios = np.ones(len(ys), np.float32)
    for offsets in RING_OFFSETS:
        ring = smooth[ys[None, :] + offsets[:, :1], xs[None, :] + offsets[:, 1:]]
        k = int(RING_QUANTILE * len(offsets))
        metal = np.partition(ring, k, axis=0)[k]
        ratios = np.minimum(ratios, centre / (metal + 1.0))
    best = int(np.argmin(ratios))
    return PitFinding(float(ratios[best]), int(xs[best]), int(ys[best]))
