"""Stage 2c: find a picture inset in another picture (picture-in-picture).

A programme shown at reduced size in a corner of other footage fills a
rectangle whose sides are edges that stay put while both pictures move. Over
a run of frames, the mean absolute difference between neighbouring rows (and
columns) keeps such edges and smears the moving ones; the inset is the
rectangle, of the frame's shape and 30-70 % of its width, whose four sides
are the strongest of these persistent edges — if they stand well clear of the
picture's own.

Found on the query side only, the inset is hashed as one more view and
compared with every crop window of the references (``acr.signals.video.views``).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from acr.signals.video.bars import Box

__all__ = ["find_inset"]

ANALYSIS_WIDTH: Final = 128
"""Frames are looked at this wide (a stride), enough to place an inset within 1 %."""

MIN_WIDTH: Final = 0.3
MAX_WIDTH: Final = 0.7
"""Sizes of inset looked for, as fractions of the frame's width."""

CONTRAST: Final = 1.8
"""Each side of an inset is at least this many times the frame's mean persistent edge.
(Measured on synthetic footage: an inset's weakest side 2.4 times, the best rectangle
of a picture without one 1.1 times.) A false inset costs one more view, nothing else."""

MIN_FRAMES: Final = 4
"""Fewer frames cannot tell a persistent edge from a moving one."""

_INNER_MARGIN: Final = 0.0
"""Cropped inside the refined sides (a share of the inset's size). Measured on half-size
insets in H.264 (``docs/video.md``): the exact inside is closest to the reference
(median 20 bits), one pixel in 26, 2 % in 46: every pixel lost is a crop."""

_EDGE_SHARE: Final = 0.5
"""An edge within reach of a coarse side is the inset's when at least this share of the
strongest there (the innermost such edge: a border has an outer and an inner one)."""


def find_inset(frames: NDArray[np.float32]) -> Box | None:
    """The rectangle of a picture-in-picture inset in a run of luma frames, or None.

    Parameters
    ----------
    frames : ndarray of float32, shape (n, h, w)
        Luminance of consecutive frames.

    Returns
    -------
    Box or None
        The inset's inside, in the frames' pixels.
    """
    n, height, width = frames.shape
    if n < MIN_FRAMES or width < 16 or height < 16:
        return None
    stride = max(1, width // ANALYSIS_WIDTH)
    small = frames[:, ::stride, ::stride]
    rows = np.abs(np.diff(small, axis=1)).mean(axis=0)  # (h-1, w): edges between rows
    columns = np.abs(np.diff(small, axis=2)).mean(axis=0)  # (h, w-1)
    level = float(max(rows.mean(), columns.mean(), 1e-3))
    along_rows = np.concatenate([np.zeros((rows.shape[0], 1)), np.cumsum(rows, axis=1)], axis=1)
    along_cols = np.concatenate(
        [np.zeros((1, columns.shape[1])), np.cumsum(columns, axis=0)], axis=0
    )
    h, w = small.shape[1:]
    best: tuple[float, int, int, int, int] | None = None
    for inset_w in range(int(w * MIN_WIDTH), int(w * MAX_WIDTH) + 1):
        inset_h = round(inset_w * h / w)
        if inset_h < 4 or inset_h >= h - 1 or inset_w >= w - 1:
            continue
        # Sides of every placement at once: top/bottom row edges, left/right column edges.
        x_span = w - 1 - inset_w
        y_span = h - 1 - inset_h
        top = along_rows[:y_span, inset_w : inset_w + x_span] - along_rows[:y_span, :x_span]
        bottom = (
            along_rows[inset_h : inset_h + y_span, inset_w : inset_w + x_span]
            - along_rows[inset_h : inset_h + y_span, :x_span]
        )
        left = along_cols[inset_h : inset_h + y_span, :x_span] - along_cols[:y_span, :x_span]
        right = (
            along_cols[inset_h : inset_h + y_span, inset_w : inset_w + x_span]
            - along_cols[:y_span, inset_w : inset_w + x_span]
        )
        weakest = np.minimum(np.minimum(top, bottom) / inset_w, np.minimum(left, right) / inset_h)
        place = int(np.argmax(weakest))
        score = float(weakest.flat[place])
        if best is None or score > best[0]:
            best = (score, place // x_span, place % x_span, inset_h, inset_w)
    if best is None or best[0] < CONTRAST * level:
        return None
    _, y, x, inset_h, inset_w = best
    # Row edge y lies between small rows y and y + 1: the inset starts on row y + 1.
    top, left = (y + 1) * stride, (x + 1) * stride
    bottom, right = (y + 1 + inset_h) * stride, (x + 1 + inset_w) * stride
    return _refine(frames, Box(top, min(height, bottom), left, min(width, right)), stride)


def _refine(frames: NDArray[np.float32], box: Box, stride: int) -> Box:
    """Place each side of a coarsely found inset on its full-resolution edge.

    The coarse search sees every ``stride``-th pixel, so its sides may be off by
    a stride; at half size a pixel off is worth 4-6 bits of PDQ distance (the
    picture is cropped or keeps a sliver of border). Each side moves to the
    innermost persistent edge (a border has two: outside and inside) within
    ``stride + 1`` pixels of the coarse one that is at least half as strong as
    the strongest there.
    """
    _, height, width = frames.shape
    reach = stride + 1
    inner_cols = slice(box.left + reach, max(box.left + reach + 1, box.right - reach))
    inner_rows = slice(box.top + reach, max(box.top + reach + 1, box.bottom - reach))
    # Persistent edges between rows i and i + 1 (along the inset's width), and columns.
    rows = np.abs(np.diff(frames[:, :, inner_cols], axis=1)).mean(axis=(0, 2))
    cols = np.abs(np.diff(frames[:, inner_rows, :], axis=2)).mean(axis=(0, 1))

    def side(profile: NDArray[np.float32], coarse: int, first: bool) -> int:
        # Edge index e separates pixels e and e + 1; the inset starts (first side) at
        # e + 1 or ends (exclusive) at e + 1.
        low, high = max(0, coarse - 1 - reach), min(profile.size, coarse - 1 + reach + 1)
        if high <= low:
            return coarse
        window = profile[low:high]
        strong = np.flatnonzero(window >= _EDGE_SHARE * float(window.max()))
        edge = low + int(strong[-1] if first else strong[0])
        return edge + 1

    top, bottom = side(rows, box.top, True), side(rows, box.bottom, False)
    left, right = side(cols, box.left, True), side(cols, box.right, False)
    if bottom - top < 4 or right - left < 4:
        return box
    margin_y = round((bottom - top) * _INNER_MARGIN)
    margin_x = round((right - left) * _INNER_MARGIN)
    return Box(
        top + margin_y,
        min(height, bottom - margin_y),
        left + margin_x,
        min(width, right - margin_x),
    )
