"""The pit check: round spots on the flange, darker or sharper than good metal has, or both,
and notches, dark marks that break the part's circles.

Why it sits beside the network: an isolated pinhole is the most common
casting defect, and the network does not see one it was not shown. With
pits painted on the flange of held-out OK photos (`station sensitivity`),
it rejected none at any size from 2 to 8 px; out of fold, it judges a
casting it has never seen by how that casting was photographed. A pit
needs no training to be found: it is a small spot darker than the metal on
every side of it. The check looks at the flange four ways, and at the whole
face for notches, and rejects the part if any is past its cut in the card
(`pit_check`):

- the darkest spot (`darkness_cut`): each flange pixel (lightly
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
- the darkest round spot (`round_darkness_cut`, added 2026-12-05): of the
  spots that dip roundly (dip past ROUND_DIP, well under `dip_cut`), the
  darkest against its ring, measured as for `darkness_cut`. Darkness alone
  must stop at 0.80 because the dashes of mould lines read 0.87, and the
  dip alone at 0.115 because grain in shadow reads 0.112; but a dash does
  not dip roundly and grain is no darker than the metal round it, so a spot
  that does both may be called a pit at 0.905. This finds faint pits of 6 px
  (too wide for the dip's scale, too pale for darkness alone): painted at
  86% of the metal, 71% of them against 11% before (tools/pit_check_survey.py).
- the most isolated dip (`isolated_dip_cut`, added 2026-12-05): of the
  ISOLATED_CANDIDATES sharpest flange dips, how far one stands above the sharpest dip
  on a ring ISOLATION_RING_PX round it. A pinhole on clean metal is one dip alone;
  the grain of a shadowed flange, which sets `dip_cut` where it is, is many dips side
  by side, and its sharpest stands little above its neighbours. This finds 4 of the 7
  reviewed pinholes the other measures pass (tools/pit_check_survey.py).
- the darkest notch (`notch_cut`, added 2026-12-05): of the whole face from the
  groove to the rim's edge, the spot darkest against the metal along its own
  circle (station.classifier.notch). Chips and burrs on the rim's and the
  groove's edges, which the flange search keeps clear of: all 130 photos the
  fold networks passed out of fold (2026-12-05) read 0.55 or darker, the
  darkest good photo 0.713.

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

from station.classifier.flange import FRAME_PX, Circle, flange_mask, long_edges, rim_circle
from station.classifier.model_card import PitCheckSettings
from station.classifier.notch import FACE, RADIAL_PX, SPAN_DEG, darkest_notch

NOTCH_CUT = 0.64
"""The notch cut `station train` writes into the card. Of the 2,764 reviewed OK training
photos the darkest notch was 0.713 of its metal (casting 213, where the groove's dark line
thickens; tools/pit_check_survey.py); 0.64 leaves 0.07 below it, as darkness_cut does. The
130 photos the fold networks passed out of fold (2026-12-05) read 0.23 to 0.55; of all 3,758
defective photos, 2,784 read below 0.64."""
DARKNESS_CUT = 0.80
"""The darkness cut `station train` writes into the card. Of the 2,764 reviewed OK training
photos (2026-12-04; tools/pit_check_survey.py) the darkest flange spot was 0.869 of its metal,
the median photo's 0.955; pits painted at 30% brightness read 0.31 (8 px) to 0.56 (2 px)
in the median. 0.80 leaves 0.07 below the darkest good photo, and the painted pits are
caught the same at any cut from 0.80 to 0.86."""
ROUND_DARKNESS_CUT = 0.905
"""The cut for the darkest round spot `station train` writes into the card. Of the same 2,764
photos, the darkest spot that dips past ROUND_DIP was 0.921 (casting 217, grain in shadow;
tools/pit_check_survey.py); 0.905 is 0.016 below it. Leaving each good casting out in turn
and setting the cut the same way from the others rejects none of its photos."""
DIP_CUT = 0.115
"""The dip cut `station train` writes into the card. Of the same 2,764 photos the sharpest
flange dip was 0.112 (tools/pit_check_survey.py); 0.115 is 3% above it. At 0.115, 8 of the
16 reviewed pinholes are past it, and of pits painted at 86% of the metal's brightness
69% at 3 px and 89% at 4 px."""
ISOLATED_DIP_CUT = 0.076
"""The isolated dip's cut `station train` writes into the card. Of the 2,764 reviewed OK
training photos (2026-12-05; tools/pit_check_survey.py) the most isolated flange dip stood
0.0723 above its ring (casting 235; the next three are castings 230, 220 and 217, so no one
casting sets it); 0.076 is 5% above that. Leaving each good casting out in turn and setting
the cut the same way from the others rejects none of its photos. 12 of the 16 reviewed
pinholes stand 0.0795 or more above their rings."""
ISOLATION_RING_PX = (4, 10)
"""The ring round a dip whose sharpest dip it must stand above: past the pinhole's own
slope (2-3 px across, smoothed at DIP_SIGMA_PX), near enough that grain round it is on it."""
ISOLATED_CANDIDATES = 32
"""The sharpest flange dips measured against their rings."""
ROUND_DIP = 0.095
"""A spot dipping past this is round enough to be judged by `round_darkness_cut`: below it
the good flanges' spots include the dashes of mould lines as dark as 0.906 of their metal
(tools/pit_check_survey.py); past it, none darker than 0.921."""
METHOD = (
    "a part is a reject when a round spot on its flange (78-93% of the rim's radius, 3 px "
    "clear of long edges, in the 300 px frame) is darker than darkness_cut against the "
    "darkest 4% of a ring 3.5-5.5 or 6.5-8.5 px round it, or dips more sharply than dip_cut "
    "(sigma 1.25 px squared times the Hessian's smaller eigenvalue over the 15x15 px mean "
    f"brightness), or dips past {ROUND_DIP} and is darker than round_darkness_cut against the "
    f"same rings, or is one of the {ISOLATED_CANDIDATES} sharpest dips and stands more than "
    "isolated_dip_cut above the sharpest dip on a ring "
    f"{ISOLATION_RING_PX[0]}-{ISOLATION_RING_PX[1]} px round it; or when a spot between the "
    "groove and the rim's edge "
    f"({FACE[0]:.0%}-{FACE[1]:.0%} of the rim's radius) is darker than notch_cut against the "
    f"metal along its circle (the brightest within {SPAN_DEG} degrees, the darkest of that "
    f"within {RADIAL_PX} px of its radius) (station.classifier.pit_check, "
    "station.classifier.notch)"
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
ROUND_CANDIDATES = 32
"""At most this many of the sharpest dips past ROUND_DIP are measured against their rings."""
DARKNESS_SLOPE = 50.0
"""Logits of pit score per unit of ratio below the darkness cut: 0.1 darker is +5."""
DIP_SLOPE = 500.0
"""Logits of pit score per unit of dip past the dip cut: 0.01 sharper is +5."""
ROUND_SLOPE = 150.0
"""Logits of pit score per unit of ratio below the round cut: 0.01 darker is +1.5. Steeper
than DARKNESS_SLOPE because good flanges sit close under this cut (their round spots read
0.92 to 1.0, no round spot counts as 1.0): at 50 every good part's pit score would be at
least 0.0085 and hide the network's own lower scores, by which replay, calibration and the
histograms still tell clean parts apart; at 150 that floor is 7e-7."""
ISOLATED_SLOPE = DIP_SLOPE
"""Logits of pit score per unit the isolated dip stands past its cut: the dip's own, as it
is measured on the dip's scale."""
NOTCH_SLOPE = 150.0
"""Logits of pit score per unit of ratio below the notch cut: 0.01 darker is +1.5. Steep for
the same reason as ROUND_SLOPE: the darkest good notch, 0.713, scores 1.7e-5 at a threshold
of 0.5, and most good parts read 0.8 to 1.0."""

CARD_SETTINGS = PitCheckSettings(
    darkness_cut=DARKNESS_CUT,
    dip_cut=DIP_CUT,
    round_darkness_cut=ROUND_DARKNESS_CUT,
    isolated_dip_cut=ISOLATED_DIP_CUT,
    notch_cut=NOTCH_CUT,
    method=METHOD,
)
"""What `station train` writes into the card's `pit_check`."""

_MARGIN = 9
SAMPLE_STRIDE = 16
"""`_smallest` samples every this many values (a flange's 12,000 give 750)."""


def _ring_offsets(inner: float, outer: float) -> np.ndarray:
    """(dy, dx) of the pixels between `inner` and `outer` px from a centre."""
    reach = int(np.ceil(outer))
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    on_ring = (np.hypot(dx, dy) >= inner) & (np.hypot(dx, dy) <= outer)
    return np.stack([dy[on_ring], dx[on_ring]], axis=1)


RING_OFFSETS = tuple(_ring_offsets(inner, outer) for inner, outer in RINGS_PX)
ISOLATION_RING = _ring_offsets(*ISOLATION_RING_PX)


@dataclass(frozen=True)
class Spot:
    """A measure of one flange spot, and where it is (pixels of the image checked)."""

    value: float
    x: int
    y: int


SCORE_COLUMNS = ("pit_ratio", "pit_dip", "pit_round", "pit_isolated", "pit_notch")
"""The findings' values as the scores CSVs of training and cross-validation hold them
(`validation_scores.csv`, `oof.csv`, `cv_oof_scores.csv`), in `PitFinding`'s order."""


@dataclass(frozen=True)
class PitFinding:
    """The flange's darkest spot (`value`: its brightness over the metal round it, lower is
    darker), its sharpest round dip (`value`: the dip, higher is sharper), the darkest
    of the spots that dip past ROUND_DIP (`value` as `darkest`'s; 1.0 if none does), its
    most isolated dip (`value`: how far the dip stands above the sharpest on the ring round
    it, higher is more alone), and the face's darkest notch (`value`: its brightness over
    the metal along its circle)."""

    darkest: Spot
    sharpest: Spot
    darkest_round: Spot
    isolated: Spot
    notch: Spot

    def is_pit(self, settings: PitCheckSettings) -> bool:
        """Past any cut: the part is a reject whatever the network says."""
        return self.logit_past_cut(settings) > 0

    def logit_past_cut(self, settings: PitCheckSettings) -> float:
        """How far past its cut the stronger finding is, in logits (0 at a cut)."""
        return max(self._logits_past(settings))

    def decisive(self, settings: PitCheckSettings) -> Spot:
        """The spot to show a person: the one further past (or nearer to) its cut."""
        logits = self._logits_past(settings)
        return self._spots()[logits.index(max(logits))]

    def describe(self, settings: PitCheckSettings) -> str:
        """Each finding against its cut, for a person reading why a part was judged so."""
        return ", ".join(self.describe_each(settings))

    def describe_each(self, settings: PitCheckSettings) -> tuple[str, ...]:
        """`describe`'s parts, one per finding (a line each on a drawn part)."""
        return (
            f"darkest {self.darkest.value:.3f} (reject below {settings.darkness_cut})",
            f"sharpest dip {self.sharpest.value:.3f} (reject above {settings.dip_cut})",
            f"darkest round {self.darkest_round.value:.3f} "
            f"(reject below {settings.round_darkness_cut})",
            f"isolated dip {self.isolated.value:.3f} (reject above {settings.isolated_dip_cut})",
            f"darkest notch {self.notch.value:.3f} (reject below {settings.notch_cut})",
        )

    def score_columns(self) -> dict[str, float]:
        """The values under SCORE_COLUMNS, for a scores CSV."""
        return {name: spot.value for name, spot in zip(SCORE_COLUMNS, self._spots())}

    @classmethod
    def from_score_columns(cls, row: dict[str, str]) -> PitFinding:
        """The findings a scores CSV row holds: their values, where they lay not kept (a
        part's score does not depend on it)."""
        return cls(*(Spot(float(row[name]), 0, 0) for name in SCORE_COLUMNS))

    def shifted(self, dx: int, dy: int) -> PitFinding:
        """The same findings in the pixels of an image the checked crop was cut from."""
        return PitFinding(*(Spot(s.value, s.x + dx, s.y + dy) for s in self._spots()))

    def _spots(self) -> tuple[Spot, Spot, Spot, Spot, Spot]:
        return (self.darkest, self.sharpest, self.darkest_round, self.isolated, self.notch)

    def _logits_past(self, settings: PitCheckSettings) -> tuple[float, ...]:
        return (
            DARKNESS_SLOPE * (settings.darkness_cut - self.darkest.value),
            DIP_SLOPE * (self.sharpest.value - settings.dip_cut),
            ROUND_SLOPE * (settings.round_darkness_cut - self.darkest_round.value),
            ISOLATED_SLOPE * (self.isolated.value - settings.isolated_dip_cut),
            NOTCH_SLOPE * (settings.notch_cut - self.notch.value),
        )


def find_pit(grey: np.ndarray) -> PitFinding:
    """The flange's darkest spot, sharpest dip, darkest round spot and most isolated dip,
    and the face's darkest notch, in `grey` (uint8, the part framed as in training).

    A photo with no flange to search (no rim found, or all of it on edges)
    gives ratios 1.0 and dips 0.0 in the middle for the flange's four: nothing darker than
    the metal. The notch is measured on the face all the same.
    """
    side = min(grey.shape)
    scale = side / FRAME_PX
    frame = grey if side == FRAME_PX else _to_frame(grey)
    edges = long_edges(frame)
    rim = rim_circle(frame, edges)
    notch = _scaled(Spot(*darkest_notch(frame, rim)), scale)
    flange = flange_pixels(frame, edges, rim)
    if not len(flange):
        height, width = grey.shape
        middle = (width // 2, height // 2)
        nothing = (Spot(1.0, *middle), Spot(0.0, *middle), Spot(1.0, *middle), Spot(0.0, *middle))
        return PitFinding(*nothing, notch)
    pixels = frame.astype(np.float32)
    smooth = cv2.GaussianBlur(pixels, (0, 0), 0.7)
    darkest = _darkest(smooth, flange)
    dip_field = _DipField.of(frame, pixels)
    dips = dip_field.at(flange)
    best = int(np.argmax(dips))
    sharpest = _spot(dips[best], flange[best], frame.shape[1])
    darkest_round = _darkest_round(smooth, flange, dips)
    isolated = _isolated(dip_field, flange, dips)
    flange_findings = (
        _scaled(spot, scale) for spot in (darkest, sharpest, darkest_round, isolated)
    )
    return PitFinding(*flange_findings, notch)


def flange_pixels(frame: np.ndarray, edges: np.ndarray, rim: Circle) -> np.ndarray:
    """The flange pixels the check searches, as flat indices of `frame` (4x faster to find
    and to gather by than a mask): the flange ring of `rim`, less EDGE_CLEARANCE_PX round
    every long edge (`edges`) and a margin at the frame's edge."""
    clear = 2 * EDGE_CLEARANCE_PX + 1
    near_edge = cv2.dilate(
        edges.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (clear, clear))
    )
    search = flange_mask(frame, rim) & (near_edge == 0)
    search[:_MARGIN] = search[-_MARGIN:] = False
    search[:, :_MARGIN] = search[:, -_MARGIN:] = False
    return np.flatnonzero(search)


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


def _darkest(smooth: np.ndarray, flange: np.ndarray) -> Spot:
    """Of the flange pixels (flat indices): the lowest ratio of a spot to the ring round it.
    `smooth`: the photo, float32, smoothed at sigma 0.7 px."""
    centre = np.take(smooth, flange)
    local_mean = np.take(cv2.blur(smooth, (9, 9)), flange)
    darker = centre / (local_mean + 1.0)
    return _darkest_against_rings(smooth, flange[_smallest(darker, CANDIDATES)])


def _smallest(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` smallest `values` (all of them if there are no more), in no
    particular order: `np.argpartition(values, k)[:k]`, in a third of its time on a flange
    of 12,000 pixels. Every SAMPLE_STRIDE-th value is sampled first; at least k values are no
    larger than the sample's k-th smallest, and only those are partitioned."""
    if len(values) <= k:
        return np.arange(len(values))
    sample = values[::SAMPLE_STRIDE]
    if len(sample) >= k:
        few = np.flatnonzero(values <= np.partition(sample, k - 1)[k - 1])
        return few if len(few) == k else few[np.argpartition(values[few], k)[:k]]
    return np.argpartition(values, k)[:k]


def _darkest_round(smooth: np.ndarray, flange: np.ndarray, dips: np.ndarray) -> Spot:
    """Of the flange pixels that dip past ROUND_DIP (at most ROUND_CANDIDATES of the
    sharpest): the lowest ratio of a spot to the ring round it; 1.0 where none dips so."""
    dipping = np.flatnonzero(dips > ROUND_DIP)
    if not len(dipping):
        height, width = smooth.shape
        return Spot(1.0, width // 2, height // 2)
    if len(dipping) > ROUND_CANDIDATES:
        dipping = dipping[np.argpartition(-dips[dipping], ROUND_CANDIDATES)[:ROUND_CANDIDATES]]
    return _darkest_against_rings(smooth, flange[dipping])


def _darkest_against_rings(smooth: np.ndarray, candidates: np.ndarray) -> Spot:
    """Of `candidates` (flat indices): the lowest `ring_ratios`."""
    ratios = ring_ratios(smooth, candidates)
    best = int(np.argmin(ratios))
    return _spot(ratios[best], candidates[best], smooth.shape[1])


def ring_ratios(smooth: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Each of `candidates` (flat indices of `smooth`, the photo smoothed at sigma 0.7 px)
    over the darkest RING_QUANTILE of either ring round it, the lower: its darkness against
    the metal round it (1.0 at most)."""
    width = smooth.shape[1]
    centre = np.take(smooth, candidates)
    ratios = np.ones(len(candidates), np.float32)
    for offsets in RING_OFFSETS:
        ring = np.take(smooth, candidates[None, :] + (offsets[:, :1] * width + offsets[:, 1:]))
        k = int(RING_QUANTILE * len(offsets))
        metal = np.partition(ring, k, axis=0)[k]
        ratios = np.minimum(ratios, centre / (metal + 1.0))
    return ratios


@dataclass(frozen=True)
class _DipField:
    """What the dip (see the module's docstring) is made of, over the whole photo, so that it
    can be read at any pixels: the flange's, and the rings round its sharpest dips."""

    dxx: np.ndarray
    dyy: np.ndarray
    dxy: np.ndarray
    metal_sums: np.ndarray
    """The photo's DIP_METAL_PX square sums: summing the uint8 photo, and dividing only at
    the pixels read, takes half the time of OpenCV's float box filter and gives its result
    to the last bit (the integer sums divided in float64)."""

    @classmethod
    def of(cls, frame: np.ndarray, pixels: np.ndarray) -> _DipField:
        """`frame`: the uint8 photo; `pixels`: the same as float32."""
        smooth = cv2.GaussianBlur(pixels, (0, 0), DIP_SIGMA_PX)
        return cls(
            dxx=cv2.Sobel(smooth, cv2.CV_32F, 2, 0, ksize=3),
            dyy=cv2.Sobel(smooth, cv2.CV_32F, 0, 2, ksize=3),
            dxy=cv2.Sobel(smooth, cv2.CV_32F, 1, 1, ksize=3),
            metal_sums=cv2.boxFilter(
                frame, cv2.CV_32S, (DIP_METAL_PX, DIP_METAL_PX), normalize=False
            ),
        )

    def at(self, flat: np.ndarray) -> np.ndarray:
        """The dip at the `flat` indices (any shape)."""
        dxx, dyy, dxy = (np.take(d, flat) for d in (self.dxx, self.dyy, self.dxy))
        flattest = (dxx + dyy) / 2 - np.sqrt(((dxx - dyy) / 2) ** 2 + dxy**2)
        metal = (np.take(self.metal_sums, flat) / DIP_METAL_PX**2).astype(np.float32) + 1.0
        return DIP_SIGMA_PX**2 * flattest / metal


def _isolated(field: _DipField, flange: np.ndarray, dips: np.ndarray) -> Spot:
    """Of the ISOLATED_CANDIDATES sharpest flange dips (flat indices `flange`, dips `dips`)
    whose ring lies in the photo: the most that one stands above the sharpest dip on the
    ring ISOLATION_RING_PX round it. 0.0 in the middle where no ring lies in the photo."""
    height, width = field.dxx.shape
    reach = ISOLATION_RING_PX[1]
    ys, xs = np.divmod(flange, width)
    inside = np.flatnonzero(
        (ys >= reach) & (ys < height - reach) & (xs >= reach) & (xs < width - reach)
    )
    if not len(inside):
        return Spot(0.0, width // 2, height // 2)
    inside = inside[_smallest(-dips[inside], ISOLATED_CANDIDATES)]
    ring = ISOLATION_RING[:, :1] * width + ISOLATION_RING[:, 1:]
    around = field.at(flange[inside][None, :] + ring).max(axis=0)
    standing = dips[inside] - around
    best = int(np.argmax(standing))
    return _spot(standing[best], flange[inside[best]], width)
