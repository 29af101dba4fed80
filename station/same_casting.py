"""Which photos show the same physical casting: the unit a measure must hold out.

The dataset's author made its 300x300 photos by turning and flipping
photos of each casting. `station.dataset.near_duplicate_groups` links photos
whose Fourier-Mellin signatures (a description of texture and light, blind
to turns) are alike; that links photos of one photo session as readily as
copies of one casting, and it misses copies whose light or framing differs.

This module decides "same casting" the way a person would, by laying one
photo on the other: the turn and mirror that best align the flange's
angular texture, then the shift, then the correlation of fine detail
(grain, pits, flash) left after removing everything round (rings, rims,
the light's gradient, which every impeller of the design shares). Copies
of one casting give mostly 0.9 to 0.99; different castings a median of about
0.1 (measured on the training folder, 2026-11-24; `tools/castings.py`).

The aligned comparison costs a few milliseconds, so it is made only for
candidate pairs: each photo's nearest neighbours by signature, ranked by
the cheap angular-texture correlation.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from station.classifier.flange import part_centre
from station.dataset import connected_components, standardised_signatures

SAME_CASTING_CORRELATION = 0.8
"""Aligned fine-detail correlation above which two photos are one casting.

On the training folder (2026-11-24): of 1,000 random pairs of photos, 11
are above 0.8, about as many as chance gives copies of one of the big OK
castings; pairs judged copies by eye run from 0.77 to 0.99 and the
signature's closest candidates have a median of 0.97; a pair of different
castings judged by eye (flash on one, none on the other) 0.62."""

SIZE = 150
"""Side of the square the comparison works at (the 300 px photos halved):
fine enough for grain and pits, four times cheaper than full size."""

_ANGLES = 360
_FLANGE = (0.60, 0.88)
"""Radii (fractions of half the side) of the flange ring used to find the turn:
outside the vanes, which every casting of the design shares."""
_COMPARED = (0.55, 0.93)
"""Radii compared after alignment: the flange to the rim, flash included; not the
hub, whose vanes every casting shares (with the hub in, one pair of different
castings, one with flash and one without, correlated at 0.71)."""
_ANGULAR_BAND = (10, 90)
"""Angular frequencies kept to find the turn (cycles per turn): below, the
light's gradient and an off-centre part; above, detail that a sub-pixel
shift already blurs. With every frequency above 10 kept, one turned, mirrored
and shifted copy of a sample photo was aligned wrongly (0.78); with this band,
72 random copies of the 12 sample photos all align (0.95 or more)."""
_WINDOW = cv2.createHanningWindow((SIZE, SIZE), cv2.CV_32F)
"""Tapers the edges before the shift is measured; the same for every pair."""


@dataclass(frozen=True)
class PreparedPhoto:
    """What the comparison needs of one photo, computed once."""

    detail: np.ndarray
    """Fine detail (difference of Gaussians) at SIZE, float32."""
    residual: np.ndarray
    """`detail` less its mean at each radius about the centre: nothing round."""
    centre: tuple[float, float]
    spectrum: np.ndarray
    """Angular spectrum of the flange texture, per radius."""
    mirrored_spectrum: np.ndarray


def _radius_map(centre: tuple[float, float]) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return np.hypot(xx - centre[0], yy - centre[1])


def _without_round(image: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    radius = _radius_map(centre).astype(np.int32)
    sums = np.bincount(radius.ravel(), image.ravel())
    counts = np.maximum(np.bincount(radius.ravel()), 1)
    return (image - (sums / counts)[radius]).astype(np.float32)


def _angular_spectrum(grey: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    half = SIZE / 2
    # WARP_FILL_OUTLIERS: without it, points past the frame's edge keep uninitialised memory.
    polar = cv2.warpPolar(
        grey, (int(half), _ANGLES), centre, half, cv2.WARP_POLAR_LINEAR | cv2.WARP_FILL_OUTLIERS
    )
    ring = polar[:, int(_FLANGE[0] * half) : int(_FLANGE[1] * half)]
    ring = ring - ring.mean(axis=0, keepdims=True)
    spectrum = np.fft.rfft(ring, axis=0)
    spectrum[: _ANGULAR_BAND[0]] = 0
    spectrum[_ANGULAR_BAND[1] :] = 0
    norm = np.sqrt((np.abs(spectrum) ** 2).sum() * 2) + 1e-6
    return (spectrum / norm).astype(np.complex64)


def prepare(grey: np.ndarray) -> PreparedPhoto:
    """Compute once per photo what every comparison with it needs."""
    small = cv2.resize(grey, (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    centre = part_centre(small.astype(np.uint8))
    detail = cv2.GaussianBlur(small, (0, 0), 0.5) - cv2.GaussianBlur(small, (0, 0), 2.0)
    mirrored_centre = (centre[0], SIZE - 1 - centre[1])
    return PreparedPhoto(
        detail=detail,
        residual=_without_round(detail, centre),
        centre=centre,
        spectrum=_angular_spectrum(small, centre),
        mirrored_spectrum=_angular_spectrum(np.ascontiguousarray(small[::-1]), mirrored_centre),
    )


def angular_texture_correlation(a: PreparedPhoto, b: PreparedPhoto) -> tuple[float, int, bool]:
    """Cheap first look: (best circular correlation, turn in degrees, mirrored) of b onto a."""
    best = (-1.0, 0, False)
    for mirrored, spectrum in ((False, b.spectrum), (True, b.mirrored_spectrum)):
        correlation = np.fft.irfft((a.spectrum * np.conj(spectrum)).sum(axis=1), n=_ANGLES)
        turn = int(np.argmax(correlation))
        if correlation[turn] > best[0]:
            best = (float(correlation[turn]), turn, mirrored)
    return best


@dataclass(frozen=True)
class Alignment:
    """How photo b lies on photo a: mirror b's rows first if `mirrored`, then apply
    `matrix` (2x3, turn and shift), both in the SIZE frame."""

    correlation: float
    matrix: np.ndarray
    mirrored: bool

    def map_point(self, x: float, y: float, photo_size: int) -> tuple[float, float]:
        """Where the point (x, y) of b (in a photo_size frame) lands on a."""
        scale = SIZE / photo_size
        x, y = x * scale, y * scale
        if self.mirrored:
            y = SIZE - 1 - y
        moved_x, moved_y = self.matrix @ np.array([x, y, 1.0])
        return (float(moved_x / scale), float(moved_y / scale))


def lay_on(a: PreparedPhoto, b: PreparedPhoto) -> Alignment:
    """Lay b on a (turn, mirror, shift) and correlate what is not round in both."""
    _, turn, mirrored = angular_texture_correlation(a, b)
    detail, residual, centre = b.detail, b.residual, b.centre
    if mirrored:
        detail, residual = detail[::-1], residual[::-1]
        centre = (centre[0], SIZE - 1 - centre[1])
    radius = _radius_map(a.centre)
    compared = (radius > _COMPARED[0] * SIZE / 2) & (radius < _COMPARED[1] * SIZE / 2)
    target = a.residual[compared]
    best = Alignment(-1.0, np.eye(2, 3), mirrored)
    # The polar image's angle axis runs opposite to OpenCV's rotation sign
    # for one of the two mirror cases; trying both costs one more warp.
    for angle in (turn, -turn):
        matrix = cv2.getRotationMatrix2D(centre, float(angle), 1.0)
        matrix[:, 2] += np.subtract(a.centre, centre)
        moved = cv2.warpAffine(np.ascontiguousarray(detail), matrix, (SIZE, SIZE))
        (dx, dy), _ = cv2.phaseCorrelate(a.detail * _WINDOW, moved * _WINDOW)
        matrix[:, 2] -= (dx, dy)
        moved = cv2.warpAffine(np.ascontiguousarray(residual), matrix, (SIZE, SIZE))[compared]
        denominator = np.sqrt(float((target * target).sum()) * float((moved * moved).sum())) + 1e-9
        correlation = float((target * moved).sum()) / denominator
        if correlation > best.correlation:
            best = Alignment(correlation, matrix, mirrored)
    return best


def aligned_detail_correlation(a: PreparedPhoto, b: PreparedPhoto) -> float:
    """How alike a and b are once b is laid on a (`lay_on`): above
    SAME_CASTING_CORRELATION, one casting."""
    return lay_on(a, b).correlation


def candidate_pairs(
    prepared: list[PreparedPhoto], signatures: np.ndarray, neighbours: int = 24, keep: int = 8
) -> list[tuple[int, int]]:
    """Pairs worth the aligned comparison: per photo, its `neighbours` nearest by
    signature, of which the `keep` best by angular texture correlation."""
    z = standardised_signatures(signatures)
    pairs: set[tuple[int, int]] = set()
    for start in range(0, len(z), 512):
        nearest = np.argsort(-(z[start : start + 512] @ z.T), axis=1)[:, 1 : neighbours + 1]
        for offset, row in enumerate(nearest):
            i = start + offset
            looks = [angular_texture_correlation(prepared[i], prepared[j])[0] for j in row]
            for k in np.argsort(looks)[::-1][:keep]:
                j = int(row[k])
                pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


def casting_groups(
    greys: list[np.ndarray] | np.ndarray, signatures: np.ndarray
) -> tuple[np.ndarray, dict[tuple[int, int], float]]:
    """Casting index per photo, and the aligned correlation of every candidate pair.

    About 2 minutes for the 6,633 training photos on one core; shows progress.
    """
    from tqdm import tqdm

    prepared = [prepare(g) for g in tqdm(greys, desc="castings: preparing", mininterval=2)]
    pairs = candidate_pairs(prepared, signatures)
    correlations = {
        (i, j): aligned_detail_correlation(prepared[i], prepared[j])
        for i, j in tqdm(pairs, desc="castings: laying photos on each other", mininterval=2)
    }
    return same_casting_groups(correlations, len(prepared)), correlations


def same_casting_groups(
    pair_correlations: dict[tuple[int, int], float],
    count: int,
    threshold: float = SAME_CASTING_CORRELATION,
) -> np.ndarray:
    """Group index per photo: connected components of 'one casting' pairs."""
    linked = (pair for pair, correlation in pair_correlations.items() if correlation > threshold)
    return connected_components(count, linked)
