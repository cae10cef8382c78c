"""Stage 2d: find a screen filmed at an angle, and straighten it (query side).

A phone filming a television sees the screen as a quadrilateral inside the
room: its edges are straight lines, but not the rows and columns of the
frame, so the rectangle inside the room's bars (:mod:`acr.signals.video.bars`)
keeps wedges of room along its sides and the picture is sheared. Both move
PDQ's bits as a crop does.

Each frame's screen is found from its edges against the room: the room is
the flat colour of the bars; on every row the screen starts at the first
pixel (from either side) that clearly differs from it, and on every column
likewise from the top and bottom. A straight line fitted to each of the four
sets of edge points (least squares, twice, the second time without the
points far off the first line: rows where the picture is as dark as the room,
corners where the screen runs off the frame) gives the four corners, and the
projective map from a rectangle to them resamples the screen as the
rectangle it was.

Used only when the frames have bars (a screen filmed with room around it),
and only when the quadrilateral is clearly not the bars' rectangle itself
(letterboxed or pillarboxed video is left as it is).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from acr.signals.video.bars import Box

__all__ = ["find_screens", "straighten"]

Quad = NDArray[np.float64]
"""Corners (top-left, top-right, bottom-right, bottom-left) as (x, y), shape (4, 2)."""

ROOM_NOISE: Final = 4.0
"""A pixel differs clearly from the room when it is this many noise deviations away
(the noise measured along the frame's border, on the half-resolution frame)."""

MIN_STEP: Final = 10.0
"""...and at least this many luma levels away."""

MIN_INLIERS: Final = 0.6
"""Share of a side's edge points within :data:`INLIER_PX` of its line for the line to hold."""

INLIER_PX: Final = 2.0
"""Largest distance (half-resolution pixels) of an edge point from its side's line."""

MIN_TILT_PX: Final = 1.5
"""A screen whose corners all lie within this many half-resolution pixels of the bars'
rectangle is that rectangle: nothing to straighten."""

MIN_AREA: Final = 0.4
"""The screen covers at least this share of the frame."""

_MIN_SIDE: Final = 0.3
"""A side is found when at least this share of its rows (or columns) has an edge point;
when more than the rest start at the frame's edge, the screen runs off that side."""

_RUN: Final = 3
"""Consecutive differing pixels that start the screen on a row or column (noise is single)."""


def _half(frames: NDArray[np.float32]) -> NDArray[np.float32]:
    """Frames at half resolution (2x2 means): noise halved, a quarter of the work."""
    _, h, w = frames.shape
    h2, w2 = h // 2, w // 2
    f = frames[:, : h2 * 2, : w2 * 2]
    result: NDArray[np.float32] = 0.25 * (
        f[:, 0::2, 0::2] + f[:, 1::2, 0::2] + f[:, 0::2, 1::2] + f[:, 1::2, 1::2]
    )
    return result


def _first_run(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Per row of `mask`, the first index starting :data:`_RUN` true values (-1 if none)."""
    run = mask[:, : mask.shape[1] - _RUN + 1].copy()
    for k in range(1, _RUN):
        run &= mask[:, k : mask.shape[1] - _RUN + 1 + k]
    found = run.any(axis=1)
    first: NDArray[np.int64] = np.where(found, np.argmax(run, axis=1), -1)
    return first


def _fit(along: NDArray[np.float64], across: NDArray[np.float64]) -> tuple[float, float] | None:
    """``across = a + b * along`` fitted to the edge points, robustly; None if it does not hold."""
    if along.size < 8:
        return None
    keep = np.ones(along.size, dtype=bool)
    for _ in range(3):
        if keep.sum() < 8:
            return None
        b, a = np.polyfit(along[keep], across[keep], 1)
        residual = np.abs(across - (a + b * along))
        scale = max(INLIER_PX, 3.0 * float(np.median(residual[keep])))
        keep = residual <= scale
    if np.mean(residual <= INLIER_PX) < MIN_INLIERS:
        return None
    return float(a), float(b)


def _quad(frame: NDArray[np.float32], room: float, threshold: float) -> Quad | None:
    """The screen's corners in one half-resolution frame, or None."""
    h, w = frame.shape
    differs = np.abs(frame - room) > threshold
    rows = np.arange(h, dtype=np.float64)
    cols = np.arange(w, dtype=np.float64)
    # Edge points of each side: (position along the side, position across it).
    left = _first_run(differs)
    right = _first_run(differs[:, ::-1])
    top = _first_run(differs.T)
    bottom = _first_run(differs.T[:, ::-1])
    lines = []
    for found, along, size in (
        (left, rows, w),
        (right, rows, w),
        (top, cols, h),
        (bottom, cols, h),
    ):
        # Points at the frame's edge are where the screen runs off it, not its side.
        usable = (found > 0) & (found < 0.4 * size)
        if np.mean(found == 0) > 1 - _MIN_SIDE:
            lines.append((0.0, 0.0))  # the screen runs off this side: the frame's edge
            continue
        fitted = _fit(along[usable], found[usable].astype(np.float64))
        if fitted is None or np.mean(usable) < _MIN_SIDE:
            return None
        lines.append(fitted)
    (la, lb), (ra, rb), (ta, tb), (ba, bb) = lines

    # Left: x = la + lb*y; right: x = w-1 - (ra + rb*y); top: y = ta + tb*x; bottom mirrored.
    def corner(
        xa: float, xb: float, x_mirror: bool, ya: float, yb: float, y_mirror: bool
    ) -> tuple[float, float]:
        # Solve x = X(y), y = Y(x) by fixed point (the sides are nearly axis-aligned).
        x, y = (w - 1) / 2, (h - 1) / 2
        for _ in range(8):
            x = (w - 1) - (xa + xb * y) if x_mirror else xa + xb * y
            y = (h - 1) - (ya + yb * x) if y_mirror else ya + yb * x
        return x, y

    quad = np.array(
        [
            corner(la, lb, False, ta, tb, False),
            corner(ra, rb, True, ta, tb, False),
            corner(ra, rb, True, ba, bb, True),
            corner(la, lb, False, ba, bb, True),
        ]
    )
    # Continuous coordinates (pixel i covers [i, i + 1)): the screen begins at its first
    # pixel's left or top side and ends at its last pixel's right or bottom side.
    quad += np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    x, y = quad[:, 0], quad[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    if area < MIN_AREA * h * w:
        return None
    return quad


def find_screens(frames: NDArray[np.float32], box: Box) -> list[Quad] | None:
    """The filmed screen of every frame, in full-resolution pixels, or None.

    Parameters
    ----------
    frames : ndarray of float32, shape (n, h, w)
        Luminance of consecutive frames that have bars (``box`` is inside them).
    box : Box
        The rectangle inside the bars.

    Returns
    -------
    list of ndarray or None
        Corners per frame; None when a frame's screen is not found, or every
        screen is the bars' rectangle (nothing to straighten).
    """
    n, height, width = frames.shape
    if n == 0 or height < 32 or width < 32:
        return None
    half = _half(frames)
    edges = (half[:, :2, :], half[:, -2:, :], half[:, :, :2], half[:, :, -2:])
    border = np.concatenate([edge.reshape(n, -1) for edge in edges], axis=1)
    rect = np.array(
        [
            [box.left / 2, box.top / 2],
            [box.right / 2, box.top / 2],
            [box.right / 2, box.bottom / 2],
            [box.left / 2, box.bottom / 2],
        ]
    )
    found: list[Quad | None] = []
    for k in range(n):
        room = float(np.median(border[k]))
        deviation = 1.4826 * float(np.median(np.abs(border[k] - room)))
        found.append(_quad(half[k], room, max(MIN_STEP, ROOM_NOISE * deviation)))
    usable = [q for q in found if q is not None]
    if len(usable) < max(1, n // 2):
        return None
    # A frame whose screen was not found (a dark picture along a side) takes the typical
    # one: a hand-held phone moves the screen by a few pixels at most.
    typical = np.median(np.stack(usable), axis=0)
    quads = [2.0 * (typical if q is None else q) for q in found]
    if np.abs(typical - rect).max() <= MIN_TILT_PX:
        return None
    return quads


def _homography(quad: Quad, width: int, height: int) -> NDArray[np.float64]:
    """The projective map from output pixel centres (x, y) to the frame's `quad`."""
    src = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(src, quad, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    solution = np.linalg.solve(np.array(rows), np.array(rhs))
    return np.append(solution, 1.0).reshape(3, 3)


def straighten(
    frames: NDArray[np.float32], quads: list[Quad], width: int, height: int
) -> NDArray[np.float32]:
    """Resample each frame's screen as a ``height`` x ``width`` rectangle (bilinear)."""
    n, fh, fw = frames.shape
    out = np.empty((n, height, width), dtype=np.float32)
    gx, gy = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    points = np.stack([gx.ravel(), gy.ravel(), np.ones(gx.size)])
    for k in range(n):
        mapped = _homography(quads[k], width, height) @ points
        x = mapped[0] / mapped[2] - 0.5
        y = mapped[1] / mapped[2] - 0.5
        x = np.clip(x, 0, fw - 1.001)
        y = np.clip(y, 0, fh - 1.001)
        x0, y0 = x.astype(np.int64), y.astype(np.int64)
        fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
        f = frames[k]
        top = f[y0, x0] * (1 - fx) + f[y0, x0 + 1] * fx
        low = f[y0 + 1, x0] * (1 - fx) + f[y0 + 1, x0 + 1] * fx
        out[k] = (top * (1 - fy) + low * fy).reshape(height, width)
    return out
