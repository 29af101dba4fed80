"""Where a casting's flange is in a photo framed on the part: its rim circle and its edges.

The flange is the flat ring between the outer rim and the groove; it is where
an isolated pinhole shows on clean metal, so the pit check searches it and
`station sensitivity` paints its pits there. Sizes are for the 300 px frame
the training photos have; a photo of another size is measured at its own
scale.

Why the rim is not the strongest Hough circle (`station sensitivity` used
that until 2026-12-04): in the training photos that circle is often the
rim's shadow, or a circle through the groove on one side and the rim on
the other (tilted parts are not quite round), and a wrong circle puts
"flange" on the belt or across the rim's edge: painted pits landed there
on about 1 photo in 25. The rim is the one long edge that runs all the
way round the hub (`part_centre`, the dark middle every photo has), so it
is found from the edges themselves, in about 0.3 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FRAME_PX = 300
"""The frame size the fractions and pixel sizes here are given for."""
FLANGE = (0.78, 0.93)
"""The flange ring, as fractions of the rim's radius."""
RIM_RADIUS = (0.33, 0.49)
"""The rim's radius, as fractions of the frame's side (the part fills most of the frame)."""
LONG_EDGE_PX = 40
"""Edges at least this long (in the 300 px frame) are the casting's outlines and shadows;
shorter ones are grain, dirt and pits."""
RIM_ANGLES = 360
RIM_FIT_PX = 4
_RIM_TURN = np.linspace(0, 2 * np.pi, RIM_ANGLES, endpoint=False)
_RIM_COS, _RIM_SIN = np.cos(_RIM_TURN), np.sin(_RIM_TURN)


@dataclass(frozen=True)
class Circle:
    x: float
    y: float
    radius: float


def part_centre(grey: np.ndarray) -> tuple[float, float]:
    """Centre of a framed part: the centroid of the dark hub, the largest dark blob.

    The hub (vanes in shadow) is the darkest quarter of the middle of the
    photo in every training image; the rim's shadow is outside that middle.
    """
    h, w = grey.shape
    blurred = cv2.GaussianBlur(grey, (0, 0), 2 * h / 300)
    y0, x0 = h // 6, w // 6
    middle = blurred[y0 : h - y0, x0 : w - x0]
    dark = (middle < _lower_quartile(middle)).astype(np.uint8)
    count, _, stats, centroids = cv2.connectedComponentsWithStats(dark, ltype=cv2.CV_16U)
    if count < 2:
        return ((w - 1) / 2, (h - 1) / 2)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y = centroids[largest]
    return (float(x + x0), float(y + y0))


def _lower_quartile(values: np.ndarray) -> float:
    """`np.percentile(values, 25)` of uint8 `values`, to the last bit, from a histogram: 6x
    faster. Linear interpolation between two order statistics a fraction of 0, 1/4, 1/2 or
    3/4 apart (n - 1 quarters), so every step is exact in floating point."""
    below = np.cumsum(np.bincount(values.ravel(), minlength=256))
    position = 0.25 * (values.size - 1)
    rank = int(position)
    fraction = position - rank
    low = int(np.searchsorted(below, rank, side="right"))
    if not fraction:
        return float(low)
    high = int(np.searchsorted(below, rank + 1, side="right"))
    return low + (high - low) * fraction


def long_edges(grey: np.ndarray) -> np.ndarray:
    """Pixels on an edge LONG_EDGE_PX or longer (Canny, 8-connected), as a bool mask."""
    scale = min(grey.shape) / FRAME_PX
    kernel = 2 * round(2 * scale) + 1
    edges = cv2.Canny(cv2.GaussianBlur(grey, (kernel, kernel), 1.0 * scale), 30, 60)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        edges,
        connectivity=8,
        ltype=cv2.CV_16U,  # 16-bit labels: 2.5x faster than 32
    )
    long = np.zeros(count, bool)
    long[1:] = stats[1:, cv2.CC_STAT_AREA] >= LONG_EDGE_PX * scale
    return np.take(long, labels)  # 3x faster than long[labels] here


def rim_circle(grey: np.ndarray, edges: np.ndarray | None = None) -> Circle:
    """The casting's outer rim: the circle through the long edges that ring the hub.

    About the hub's centre, the long edges are unrolled over RIM_ANGLES
    directions; the radius (within RIM_RADIUS of the frame) where most
    directions have an edge is the rim's. In each direction the edge nearest
    that radius is kept, and a least-squares circle through those within
    RIM_FIT_PX of it, fitted twice, takes out the hub's offset from the rim's
    centre and some of a tilt. Too few such directions
    (no rim in view): the hub's centre and 42% of the frame's side.
    `edges`: `long_edges(grey)`, when the caller has it already.
    """
    height, width = grey.shape
    side = min(height, width)
    half = cv2.resize(grey, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    hub_x, hub_y = (2 * v + 0.5 for v in part_centre(half))  # a quarter of the pixels
    fallback = Circle(hub_x, hub_y, side * 0.42)
    if edges is None:
        edges = long_edges(grey)
    r_min, r_max = int(side * RIM_RADIUS[0]), int(side * RIM_RADIUS[1])
    polar = cv2.warpPolar(
        edges.astype(np.uint8),
        (r_max + 1, RIM_ANGLES),
        (hub_x, hub_y),
        r_max + 1,
        cv2.WARP_POLAR_LINEAR | cv2.WARP_FILL_OUTLIERS | cv2.INTER_NEAREST,
    )[:, r_min:]
    on_edge = polar > 0
    # The rim runs all the way round; a shadow or a chord of the belt only part of it.
    angles_at = np.convolve(on_edge.sum(axis=0), np.ones(3), mode="same")
    common = r_min + int(np.argmax(angles_at))
    if angles_at.max() < RIM_ANGLES // 4:
        return fallback
    has_edge, radii = _nearest_edges(on_edge, r_min, common)
    xs, ys = hub_x + radii * _RIM_COS[has_edge], hub_y + radii * _RIM_SIN[has_edge]
    circle = Circle(hub_x, hub_y, float(common))
    for _ in range(2):
        near = np.abs(np.hypot(xs - circle.x, ys - circle.y) - circle.radius) <= RIM_FIT_PX
        if near.sum() < RIM_ANGLES // 4:
            return fallback
        circle = _fit_circle(xs[near], ys[near])
    if not RIM_RADIUS[0] * side <= circle.radius <= RIM_RADIUS[1] * side:
        return fallback
    return circle


def _nearest_edges(on_edge: np.ndarray, r_min: int, common: int) -> tuple[np.ndarray, np.ndarray]:
    """Which directions (rows of `on_edge`, the unrolled edges from radius `r_min` out) have
    an edge, and the radius of each one's edge nearest `common`; of two as near, the outer."""
    radius = r_min + np.arange(on_edge.shape[1])
    # Twice the distance, less one outside: an outer edge wins a tie with an inner one.
    rank = 2 * np.abs(radius - common) - (radius > common)
    ranked = np.where(on_edge, rank, np.iinfo(rank.dtype).max)
    nearest = ranked.argmin(axis=1)
    has_edge = on_edge[np.arange(len(on_edge)), nearest]
    return has_edge, radius[nearest[has_edge]]


def _fit_circle(xs: np.ndarray, ys: np.ndarray) -> Circle:
    """Least-squares circle through points (Kasa's algebraic fit)."""
    a = np.stack([xs, ys, np.ones_like(xs)], axis=1)
    b = xs**2 + ys**2
    (cx2, cy2, c), *_ = np.linalg.lstsq(a, b, rcond=None)
    x, y = cx2 / 2, cy2 / 2
    return Circle(float(x), float(y), float(np.sqrt(max(c + x * x + y * y, 0.0))))


def flange_mask(grey: np.ndarray, rim: Circle) -> np.ndarray:
    """The flange ring of `rim` (FLANGE fractions of its radius), as a bool mask."""
    height, width = grey.shape
    mask = np.zeros((height, width), bool)
    # Only the outer circle's box can be on the ring: about 60% of the frame's pixels.
    reach = FLANGE[1] * rim.radius
    top, bottom = max(int(rim.y - reach), 0), min(int(rim.y + reach) + 2, height)
    left, right = max(int(rim.x - reach), 0), min(int(rim.x + reach) + 2, width)
    if top >= bottom or left >= right:
        return mask
    # np.ogrid's rows and columns, made 3x faster.
    ys, xs = np.arange(top, bottom)[:, None], np.arange(left, right)[None, :]
    squared = (xs - rim.x) ** 2 + (ys - rim.y) ** 2
    mask[top:bottom, left:right] = (squared >= (FLANGE[0] * rim.radius) ** 2) & (
        squared <= reach**2
    )
    return mask
