"""Notches: dark marks that break the part's circles, such as chips and burrs on the rim's
edge or the groove's.

Why: out of fold (the cross-validation of 2026-12-05), the networks passed 126 defective
photos of 5 castings they had never seen. Looked at, they show chips and burrs on the
rim's edge and dark marks on the groove's edge, not pits; the flange search of the pit
check keeps 3 px clear of every long edge and stops at 93% of the rim's radius, so it
never looked there.

Every good feature of the part's face runs round the rim's centre: the rim's edge, the
groove, the turned metal's shading. A chip, a burr or a hole is narrow along the circle it
lies on. So the face, from the groove (FACE[0] of the rim's radius) to the rim's edge, is
unrolled about the rim's centre, and each spot is divided by the metal along its own
circle: the brightest the face gets on both sides of it within SPAN_DEG (a morphological
closing along the circle, which fills any dark mark narrower than that and leaves
whatever runs along the circle as it is), the darkest of that within RADIAL_PX of its
radius (a part a little out of round, or tilted, moves its edges across the circles).
Only spots where that metal is bright are measured: the groove's floor and the belt are
dark or grey whatever the part.

Of the 2,764 reviewed OK training photos the darkest notch read 0.713 of its metal; the
130 photos the fold networks passed out of fold read 0.23 to 0.55 (tools/pit_check_survey.py
--oof).
"""

from __future__ import annotations

import cv2
import numpy as np

from station.classifier.flange import Circle

FACE = (0.55, 1.0)
"""The face searched, as fractions of the rim's radius: the groove's outer wall to the
rim's edge."""
ANGLES = 720
"""Samples round the circle: half a degree, about 1 px at the rim in the 300 px frame."""
SPAN_DEG = 7.5
"""A dark mark narrower than this along its circle is a notch. Wider spans take the darker
stretches of the rim's dark outline for notches: when this measure was explored, the
darkest good photo read 0.57 at 15 degrees and 0.72 at 7.5, while the escapes' chips read
0.55 or darker at either."""
RADIAL_PX = 2
SMOOTH_PX = 1.0
METAL_SHARE = 0.6
"""A spot is measured only where the metal along its circle is at least this share of the
face's bright metal (its 90th percentile)."""
FRAME_CLEAR_PX = 4
"""Spots this near the frame's edge are not measured: beyond it the unrolled face is black,
and the smoothing would carry that into the spots next to it."""


_TURN = 2 * np.pi * np.arange(ANGLES) / ANGLES
_COS, _SIN = (np.float32(f(_TURN))[:, None] for f in (np.cos, np.sin))


def darkest_notch(frame: np.ndarray, rim: Circle) -> tuple[float, int, int]:
    """The darkest spot of the face against the metal along its circle: (its ratio, x, y)
    in `frame`'s pixels (uint8, the part framed as in training). 1.0 where nothing on the
    face is darker than its metal, or no face is in view."""
    inner, outer = int(FACE[0] * rim.radius), int(np.ceil(FACE[1] * rim.radius)) + 1
    if outer - inner < 2 * RADIAL_PX + 1:
        return (1.0, int(rim.x), int(rim.y))
    xs, ys = _where(rim, inner, outer)
    face = cv2.remap(frame.astype(np.float32), xs, ys, cv2.INTER_LINEAR)  # 0 beyond the frame
    height, width = frame.shape
    clear = FRAME_CLEAR_PX
    measured = (
        (xs >= clear) & (xs <= width - 1 - clear) & (ys >= clear) & (ys <= height - 1 - clear)
    )
    if not measured.any():
        return (1.0, int(rim.x), int(rim.y))
    span = 2 * round(SPAN_DEG / 360 * ANGLES / 2) + 1
    # Round the circle: rows are angles, so the last rows are next to the first.
    wrapped = cv2.copyMakeBorder(face, span, span, 0, 0, cv2.BORDER_WRAP)
    smooth = cv2.GaussianBlur(wrapped, (0, 0), SMOOTH_PX)
    along = cv2.morphologyEx(smooth, cv2.MORPH_CLOSE, np.ones((span, 1), np.uint8))
    metal = cv2.erode(along, np.ones((1, 2 * RADIAL_PX + 1), np.uint8))[span:-span]
    smooth = smooth[span:-span]
    face_values = smooth if measured.all() else smooth[measured]  # all, mostly: no copy
    measured &= metal >= METAL_SHARE * _bright(face_values)
    if not measured.any():
        return (1.0, int(rim.x), int(rim.y))
    ratio = np.where(measured, smooth / (metal + 1.0), np.float32(np.inf))
    darkest = np.unravel_index(int(np.argmin(ratio)), ratio.shape)
    return (float(ratio[darkest]), round(xs[darkest]), round(ys[darkest]))


def _bright(values: np.ndarray) -> float:
    """The face's bright metal: the 90th percentile of its brightness (nearest rank).

    `np.partition(values.ravel(), rank)[rank]` to the bit, in a fifth of its time (0.05
    against 0.22 ms on a face of 42,000 values): the values are counted by whole grey level
    (OpenCV's histogram, bin floor(v)), and only the level the rank falls in is partitioned.
    `values`: float32, 0 to 255 (smoothed brightness), of any shape."""
    counts = cv2.calcHist([values], [0], None, [256], [0, 256]).ravel()
    at_or_below = np.cumsum(counts.astype(np.int64))
    rank = int(0.9 * (values.size - 1))
    level = int(np.searchsorted(at_or_below, rank, side="right"))
    below = int(at_or_below[level - 1]) if level else 0
    in_level = values[(values >= level) & (values < level + 1)]
    return float(np.partition(in_level, rank - below)[rank - below])


def _where(rim: Circle, inner: int, outer: int) -> tuple[np.ndarray, np.ndarray]:
    """The frame's (x, y), float32, of the face unrolled about the rim's centre: a row per
    angle (ANGLES), a column per pixel of radius from `inner` to `outer`."""
    radius = np.arange(inner, outer, dtype=np.float32)[None, :]
    return np.float32(rim.x) + radius * _COS, np.float32(rim.y) + radius * _SIN
