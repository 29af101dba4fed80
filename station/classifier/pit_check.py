"""The pit check: round spots on the flange, darker or sharper than good metal has.

Why it sits beside the network: an isolated pinhole is the most common
casting defect, and the network does not see one it was not shown. With
pits painted on the flange of held-out OK photos (`station sensitivity`),
it rejected none at any size from 2 to 8 px; out of fold, it judges a
casting it has never seen by how that casting was photographed. A pit
needs no training to be found: it is a small spot darker than the metal on
every side of it. The check looks at the flange two ways and rejects the
part if either is past its cut in the card (`pit_check`):

- the darkest round spot (`darkness_cut`): each flange pixel (lightly
  smoothed) is divided by the darkest 4% of a ring round it, 3.5 to 5.5 px
  out for pits up to 5 px, 6.5 to 8.5 px out for pits up to 11 px,
  whichever is the lower ratio. A round pit has bright metal all round, so
  the ratio is its darkness; a line, an edge or a shadow crosses both rings,
  so their darkest pixels are as dark as the spot and the ratio stays near
  1. Only the CANDIDATES spots darkest against their 9x9 mean are tested
  (speed: the whole flange is 15,000 pixels). Catches black pits; the real
  pinholes of the training folder are only 0.85-0.87 as bright as their
  metal, and good flanges have spots as dark as that on the dashes of short
  lines (mould marks), so darkness alone cannot find them.
- the sharpest round dip (`dip_cut`, added 2026-12-04): how steeply the
  brightness falls into the spot in its flattest direction, DIP_SIGMA_PX
  squared times the smaller eigenvalue of the Hessian (3x3 Sobel) of the
  photo smoothed at DIP_SIGMA_PX, over the mean brightness of the 15x15 px
  round it. A round pit dips in every direction; a line or a dash dips only
  across itself, and its smaller eigenvalue is near 0. This finds 8 of the
  16 reviewed pinholes that darkness misses, and faint painted pits (86%
  of the metal) of 3-4 px; tools/pit_check_survey.py has the figures.

Where, in the 300 px frame (a crop of another size is resized to it first):
the flange is the ring between 78% and 93% of the rim's radius
(`flange.rim_circle`), less 3 px around every long edge (rim, groove,
shadows), where a dark line would pass for a pit.

The part's pit score puts the findings on the network's scale: exactly the
model's threshold at a cut, higher past it. The part's score is the larger
of the network's and the pit's, so every figure, threshold and report of the
station counts a pit the way it counts any defect.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from station.classifier.flange import FRAME_PX, flange_mask, long_edges, rim_circle
from station.classifier.model_card import PitCheckSettings

DARKNESS_CUT = 0.80
"""The darkness cut `station train` writes into the card. Of the 2,764 reviewed OK training
photos (2026-12-04; tools/pit_check_survey.py) the darkest flange spot was 0.869 of its metal,
the median photo's 0.955; pits painted at 30% brightness read 0.31 (8 px) to 0.56 (2 px)
in the median. 0.80 leaves 0.07 below the darkest good photo, and the painted pits are
caught the same at any cut from 0.80 to 0.86."""
DIP_CUT = 0.115
"""The dip cut `station train` writes into the card. Of the same 2,764 photos the sharpest
flange dip was 0.112 (tools/pit_check_survey.py); 0.115 is 3% above it. At 0.115, 8 of the
16 reviewed pinholes are past it, and of pits painted at 86% of the metal's brightness
69% at 3 px and 89% at 4 px."""
METHOD = (
    "a part is a reject when a round spot on its flange (78-93% of the rim's radius, 3 px "
    "clear of long edges, in the 300 px frame) is darker than darkness_cut against the "
    "darkest 4% of a ring 3.5-5.5 or 6.5-8.5 px round it, or dips more sharply than dip_cut "
    "(sigma 1.25 px squared times the Hessian's smaller eigenvalue over the 15x15 px mean "
    "brightness) (station.classifier.pit_check)"
)
EDGE_CLEARANCE_PX = 3
RINGS_PX = ((3.5, 5.5), (6.5, 8.5))
RING_QUANTILE = 0.04
"""A ring's darkest 4% (the 3rd darkest of the inner ring's 60 pixels) stands for the metal."""
CANDIDATES = 64
DIP_SIGMA_PX = 1.25
"""The scale of the dip: matched to the 2-4 px pinholes (1.0 finds as many pinholes and
fewer faint 4 px pits, 1.5 fewer pinholes)."""
DIP_METAL_PX = 15
DARKNESS_SLOPE = 50.0
"""Logits of pit score per unit of ratio below the darkness cut: 0.1 darker is +5."""
DIP_SLOPE = 500.0
"""Logits of pit score per unit of dip past the dip cut: 0.01 sharper is +5."""

CARD_SETTINGS = PitCheckSettings(darkness_cut=DARKNESS_CUT, dip_cut=DIP_CUT, method=METHOD)
"""What `station train` writes into the card's `pit_check`."""

_MARGIN = 9


def _ring_offsets(inner: float, outer: float) -> np.ndarray:
    """(dy, dx) of the pixels between `inner` and `outer` px from a centre."""
    dy, dx = np.mgrid[-_MARGIN : _MARGIN + 1, -_MARGIN : _MARGIN + 1]
    on_ring = (np.hypot(dx, dy) >= inner) & (np.hypot(dx, dy) <= outer)
    return np.stack([dy[on_ring], dx[on_ring]], axis=1)


RING_OFFSETS = tuple(_ring_offsets(inner, outer) for inner, outer in RINGS_PX)


@dataclass(frozen=True)
class Spot:
    """A measure of one flange spot, and where it is (pixels of the image checked)."""

    value: float
    x: int
    y: int


@dataclass(frozen=True)
class PitFinding:
    """The flange's darkest round spot (`value`: its brightness over the metal round it,
    lower is darker) and its sharpest round dip (`value`: the dip, higher is sharper)."""

    darkest: Spot
    sharpest: Spot

    def is_pit(self, settings: PitCheckSettings) -> bool:
        """Past either cut: the part is a reject whatever the network says."""
        return self.logit_past_cut(settings) > 0

    def logit_past_cut(self, settings: PitCheckSettings) -> float:
        """How far past its cut the stronger finding is, in logits (0 at a cut)."""
        return max(self._logits_past(settings))

    def decisive(self, settings: PitCheckSettings) -> Spot:
        """The spot to show a person: the one further past (or nearer to) its cut."""
        darkness, dip = self._logits_past(settings)
        return self.darkest if darkness >= dip else self.sharpest

    def shifted(self, dx: int, dy: int) -> PitFinding:
        """The same findings in the pixels of an image the checked crop was cut from."""
        return PitFinding(
            *(Spot(s.value, s.x + dx, s.y + dy) for s in (self.darkest, self.sharpest))
        )

    def _logits_past(self, settings: PitCheckSettings) -> tuple[float, float]:
        return (
            DARKNESS_SLOPE * (settings.darkness_cut - self.darkest.value),
            DIP_SLOPE * (self.sharpest.value - settings.dip_cut),
        )


def find_pit(grey: np.ndarray) -> PitFinding:
    """The flange's darkest spot and sharpest dip in `grey` (uint8, the part framed as in
    training).

    A photo with no flange to search (no rim found, or all of it on edges)
    gives ratio 1.0 and dip 0.0 in the middle: nothing darker than the metal.
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
    search = flange_mask(frame, rim) & (near_edge == 0)
    search[:_MARGIN] = search[-_MARGIN:] = False
    search[:, :_MARGIN] = search[:, -_MARGIN:] = False
    flange = np.flatnonzero(search)  # flat indices: 4x faster to find and to gather by
    if not len(flange):
        height, width = grey.shape
        return PitFinding(Spot(1.0, width // 2, height // 2), Spot(0.0, width // 2, height // 2))
    pixels = frame.astype(np.float32)
    darkest = _darkest(pixels, flange)
    sharpest = _sharpest(frame, pixels, flange)
    return PitFinding(_scaled(darkest, scale), _scaled(sharpest, scale))


def pit_score(finding: PitFinding, settings: PitCheckSettings, threshold: float) -> float:
    """The findings on the network's scale: `threshold` at a cut, rising past it."""
    logit = np.log(threshold / (1 - threshold)) + finding.logit_past_cut(settings)
    return float(1 / (1 + np.exp(-np.clip(logit, -50, 50))))


def part_score(
    network_score: float, finding: PitFinding, settings: PitCheckSettings, threshold: float
) -> float:
    """The part's score: the network's, or the pit's if that is higher. At `threshold` the
    part is rejected if either the network or the pit check says so."""
    return max(network_score, pit_score(finding, settings, threshold))


def _to_frame(grey: np.ndarray) -> np.ndarray:
    interpolation = cv2.INTER_AREA if min(grey.shape) > FRAME_PX else cv2.INTER_LINEAR
    height, width = grey.shape
    size = (round(width * FRAME_PX / min(grey.shape)), round(height * FRAME_PX / min(grey.shape)))
    return cv2.resize(grey, size, interpolation=interpolation)


def _scaled(spot: Spot, scale: float) -> Spot:
    return Spot(spot.value, round(spot.x * scale), round(spot.y * scale))


def _spot(value: float, flat_index: int, width: int) -> Spot:
    y, x = divmod(int(flat_index), width)
    return Spot(float(value), x, y)


def _darkest(pixels: np.ndarray, flange: np.ndarray) -> Spot:
    """Of the flange pixels (flat indices): the lowest ratio of a spot to the ring round it."""
    width = pixels.shape[1]
    smooth = cv2.GaussianBlur(pixels, (0, 0), 0.7)
    centre = np.take(smooth, flange)
    local_mean = np.take(cv2.blur(smooth, (9, 9)), flange)
    darker = centre / (local_mean + 1.0)
    pick = (
        np.argpartition(darker, CANDIDATES)[:CANDIDATES]
        if len(darker) > CANDIDATES
        else slice(None)
    )
    candidates, centre = flange[pick], centre[pick]
    ratios = np.ones(len(candidates), np.float32)
    for offsets in RING_OFFSETS:
        ring = np.take(smooth, candidates[None, :] + (offsets[:, :1] * width + offsets[:, 1:]))
        k = int(RING_QUANTILE * len(offsets))
        metal = np.partition(ring, k, axis=0)[k]
        ratios = np.minimum(ratios, centre / (metal + 1.0))
    best = int(np.argmin(ratios))
    return _spot(ratios[best], candidates[best], width)


def _sharpest(frame: np.ndarray, pixels: np.ndarray, flange: np.ndarray) -> Spot:
    """Of the flange pixels (flat indices): the highest dip (see the module's docstring).
    `frame` is the uint8 photo, `pixels` the same as float32."""
    smooth = cv2.GaussianBlur(pixels, (0, 0), DIP_SIGMA_PX)
    dxx = np.take(cv2.Sobel(smooth, cv2.CV_32F, 2, 0, ksize=3), flange)
    dyy = np.take(cv2.Sobel(smooth, cv2.CV_32F, 0, 2, ksize=3), flange)
    dxy = np.take(cv2.Sobel(smooth, cv2.CV_32F, 1, 1, ksize=3), flange)
    flattest = (dxx + dyy) / 2 - np.sqrt(((dxx - dyy) / 2) ** 2 + dxy**2)
    metal = _box_mean(frame, DIP_METAL_PX, flange) + 1.0
    dips = DIP_SIGMA_PX**2 * flattest / metal
    best = int(np.argmax(dips))
    return _spot(dips[best], flange[best], pixels.shape[1])


def _box_mean(frame: np.ndarray, side: int, flat: np.ndarray) -> np.ndarray:
    """`cv2.blur(frame.astype(np.float32), (side, side))` at the `flat` indices, to the last
    bit: the integer sums divided in float64 is what OpenCV's float box filter gives, and
    summing the uint8 photo, at 15,000 of its 90,000 pixels, takes half the time."""
    sums = cv2.boxFilter(frame, cv2.CV_32S, (side, side), normalize=False)
    return (np.take(sums, flat) / (side * side)).astype(np.float32)
