"""Stage 2: find letterbox and pillarbox bars, so that the picture alone is hashed.

A bar is a run of rows (or columns), starting at an edge of the frame, that
are each of one flat colour and all of the same colour: black bars, but also
the grey or coloured padding some players and channels add. A frame's
content is then the rectangle inside its bars.

One frame alone cannot tell a bar from a flat sky or a dark wall at the top
of the picture, but bars stay put while pictures change: over a run of
frames the bar on each side is the smallest one found in any of its frames
with content. Frames without content (flat, black) are left out of that
vote; if every frame is flat, nothing is cropped.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = ["Box", "content_box", "frame_bars"]

FLAT_STD: Final = 6.0
"""Largest standard deviation (luma levels) of a row or column that is part of a bar."""

SAME_COLOUR: Final = 12.0
"""Largest difference of mean luma between a bar's rows and its outermost row."""

MAX_BAR_FRACTION: Final = 0.4
"""A bar covers at most this fraction of the frame on its side (more is a flat picture)."""

_MARGIN: Final = 1
"""Rows or columns cropped past a bar's end: scaling blurs its edge into the picture."""


class Box(NamedTuple):
    """The picture inside the bars: rows ``top:bottom``, columns ``left:right``."""

    top: int
    bottom: int
    left: int
    right: int


def _run_from_edge(means: NDArray[np.float32], stds: NDArray[np.float32], limit: int) -> int:
    """Length of the run of flat lines of the outermost line's colour, from index 0."""
    bar = (stds[:limit] <= FLAT_STD) & (np.abs(means[:limit] - means[0]) <= SAME_COLOUR)
    if not bar[0]:
        return 0
    breaks = np.flatnonzero(~bar)
    return int(breaks[0]) if breaks.size else limit


def frame_bars(frame: NDArray[np.float32]) -> tuple[int, int, int, int] | None:
    """Bar widths ``(top, bottom, left, right)`` of one luma frame, or None if it is flat.

    Parameters
    ----------
    frame : ndarray of float32, shape (h, w)
        Luminance, 0..255.
    """
    height, width = frame.shape
    row_means, row_stds = frame.mean(axis=1), frame.std(axis=1)
    col_means, col_stds = frame.mean(axis=0), frame.std(axis=0)
    row_limit = max(1, int(height * MAX_BAR_FRACTION))
    col_limit = max(1, int(width * MAX_BAR_FRACTION))
    top = _run_from_edge(row_means, row_stds, row_limit)
    bottom = _run_from_edge(row_means[::-1], row_stds[::-1], row_limit)
    left = _run_from_edge(col_means, col_stds, col_limit)
    right = _run_from_edge(col_means[::-1], col_stds[::-1], col_limit)
    if (
        top + bottom >= height * 2 * MAX_BAR_FRACTION
        or left + right >= width * 2 * MAX_BAR_FRACTION
    ):
        return None
    return top, bottom, left, right


def content_box(frames: NDArray[np.float32]) -> Box:
    """The picture inside the bars shared by a run of luma frames of one shape.

    Parameters
    ----------
    frames : ndarray of float32, shape (n, h, w)
        Luminance, 0..255, of consecutive frames.

    Returns
    -------
    Box
        The whole frame when no frame has content or there are no bars.
    """
    _, height, width = frames.shape
    found = [bars for frame in frames if (bars := frame_bars(frame)) is not None]
    if not found:
        return Box(0, height, 0, width)
    top, bottom, left, right = (min(side) for side in zip(*found, strict=True))
    margin = [_MARGIN if size else 0 for size in (top, bottom, left, right)]
    return Box(
        top + margin[0],
        height - bottom - margin[1],
        left + margin[2],
        width - right - margin[3],
    )
