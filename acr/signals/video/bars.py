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

That is not enough on its own: a shot that keeps a smooth gradient, a dark
corner or a flat caption band along one edge for the whole run looks like a
bar (on the benchmark's catalogue, one 5 s clip in seven had such a "bar",
cropping up to 40 % of the picture — and a different crop on the sample than
on the reference, whose runs of frames are cut elsewhere). So:

* **digital bars** (:func:`content_box`, both sides) are nearly perfectly
  flat (a player's padding is one colour, encoded without texture) and come
  in pairs: letterbox bars top *and* bottom, pillarbox bars left *and*
  right, of about the same size, as a picture is centred in its frame;
* the **room** around a filmed screen (:func:`room_box`, query side) is flat
  only up to the camera's noise, and surrounds the screen: it is taken only
  on at least three sides.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = ["Box", "content_box", "frame_bars", "room_box"]

FLAT_STD: Final = 6.0
"""Largest standard deviation (luma levels) of a row or column of a filmed room."""

DIGITAL_STD: Final = 3.0
"""Largest standard deviation (luma levels) of a row or column of a digital bar."""

PAIR_TOLERANCE: Final = 0.15
"""Paired bars differ by at most this share of the larger (and at least 3 pixels)."""

ROOM_SIDES: Final = 3
"""Sides of the frame on which a filmed room must show."""

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


def _run_from_edge(
    means: NDArray[np.float32], stds: NDArray[np.float32], limit: int, flat: float
) -> int:
    """Length of the run of flat lines of the outermost line's colour, from index 0."""
    bar = (stds[:limit] <= flat) & (np.abs(means[:limit] - means[0]) <= SAME_COLOUR)
    if not bar[0]:
        return 0
    breaks = np.flatnonzero(~bar)
    return int(breaks[0]) if breaks.size else limit


def frame_bars(
    frame: NDArray[np.float32], flat: float = FLAT_STD
) -> tuple[int, int, int, int] | None:
    """Bar widths ``(top, bottom, left, right)`` of one luma frame, or None if it is flat.

    Parameters
    ----------
    frame : ndarray of float32, shape (h, w)
        Luminance, 0..255.
    flat : float
        Largest standard deviation of a bar's rows and columns.
    """
    height, width = frame.shape
    row_means, row_stds = frame.mean(axis=1), frame.std(axis=1)
    col_means, col_stds = frame.mean(axis=0), frame.std(axis=0)
    row_limit = max(1, int(height * MAX_BAR_FRACTION))
    col_limit = max(1, int(width * MAX_BAR_FRACTION))
    top = _run_from_edge(row_means, row_stds, row_limit, flat)
    bottom = _run_from_edge(row_means[::-1], row_stds[::-1], row_limit, flat)
    left = _run_from_edge(col_means, col_stds, col_limit, flat)
    right = _run_from_edge(col_means[::-1], col_stds[::-1], col_limit, flat)
    if (
        top + bottom >= height * 2 * MAX_BAR_FRACTION
        or left + right >= width * 2 * MAX_BAR_FRACTION
    ):
        return None
    return top, bottom, left, right


def _shared_bars(frames: NDArray[np.float32], flat: float) -> tuple[int, int, int, int] | None:
    """The bar on each side shared by every frame with content (None if none has any)."""
    found = [bars for frame in frames if (bars := frame_bars(frame, flat)) is not None]
    if not found:
        return None
    top, bottom, left, right = (min(side) for side in zip(*found, strict=True))
    return top, bottom, left, right


def _box(shape: tuple[int, ...], top: int, bottom: int, left: int, right: int) -> Box:
    height, width = shape[-2:]
    margin = [_MARGIN if size else 0 for size in (top, bottom, left, right)]
    return Box(
        top + margin[0],
        height - bottom - margin[1],
        left + margin[2],
        width - right - margin[3],
    )


def _paired(first: int, second: int) -> bool:
    larger = max(first, second)
    return min(first, second) > 0 and larger - min(first, second) <= max(
        3.0, PAIR_TOLERANCE * larger
    )


def content_box(frames: NDArray[np.float32]) -> Box:
    """The picture inside the digital bars shared by a run of luma frames of one shape.

    Parameters
    ----------
    frames : ndarray of float32, shape (n, h, w)
        Luminance, 0..255, of consecutive frames.

    Returns
    -------
    Box
        The whole frame when no frame has content or there are no paired bars.
    """
    _, height, width = frames.shape
    bars = _shared_bars(frames, DIGITAL_STD)
    if bars is None:
        return Box(0, height, 0, width)
    top, bottom, left, right = bars
    if not _paired(top, bottom):
        top = bottom = 0
    if not _paired(left, right):
        left = right = 0
    return _box(frames.shape, top, bottom, left, right)


def room_box(frames: NDArray[np.float32]) -> Box | None:
    """The rectangle inside a filmed room (flat up to noise on three sides or four), or None.

    Parameters
    ----------
    frames : ndarray of float32, shape (n, h, w)
        Luminance, 0..255, of consecutive frames.
    """
    bars = _shared_bars(frames, FLAT_STD)
    if bars is None or sum(size > 0 for size in bars) < ROOM_SIDES:
        return None
    return _box(frames.shape, *bars)
