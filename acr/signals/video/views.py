"""Stage 2b: the views of a frame that are hashed — what makes PDQ survive crops and overlays.

PDQ hashes the whole picture's low frequencies, so it is not shift-invariant:
cropping 5 % off one side moves every edge by 3 of its 64 pixels and flips a
quarter of the bits; 10 % flips as many as an unrelated picture would. And an
overlay over a quarter of the picture (a logo, a caption, an inset) moves the
median that every bit is compared with.

So each frame is hashed as several views, each a rectangle of the picture
inside the bars, and a query view is only compared with the reference views
it can meet (:data:`COMPARED_WITH`):

* the *whole picture*: the query hashes it as it is; the reference also
  hashes 15 crop windows (92 % and 90 % of each dimension, at either end or
  centred), so a sample cropped by up to about 10 % in any way meets a
  window within reach of its own hash;
* the *halves* (top, bottom, left, right), on both sides: an overlay in a
  corner or a caption along an edge leaves at least one half untouched;
* on the query side, the *inset* of a picture-in-picture, when one is found
  (:mod:`acr.signals.video.inset`), compared with every crop window;
* on the query side, nine *overscan crops* (94.7 % of each dimension, at
  either end or centred: the rectangle of a sample cut by 5 % in all that
  the reference's centre window, 90 %, shows), compared with that window
  only. A crop of about 5 % (a television's overscan) falls between the
  windows, 2.5 % from the nearest on each side; the crops of the sample meet
  the centre window within 1.3 %. On the benchmark's references, 5 % crops
  came within 52 bits of a window for 53 % of frames, and of the centre
  window through an overscan crop for 94 % (median 27 bits), as many as 49
  reference windows would give, at no cost to the index;
* on the query side, when the picture has bars, the *centre* (5 % off each
  side), compared with every crop window: a phone filming a screen slightly
  off-axis sees the screen as a quadrilateral, and the rectangle inside the
  room's dark bars still has wedges of room along its sides, up to about 4 %
  wide. Without them, the sample is a crop of the reference, which the
  windows reach.

The costs (index size, match latency) and the measurements behind the
choice are in ``docs/video.md``.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CENTRE",
    "COMPARED_WITH",
    "FIRST_LOOK",
    "HALVES",
    "INSET",
    "LAST_VIEW",
    "LATER_LOOK",
    "OVERSCAN",
    "QUERY_ONLY",
    "QUERY_VIEWS",
    "REFERENCE_VIEWS",
    "VIEWS",
    "WHOLE",
    "View",
    "evidence_views",
    "view_rect",
]


class View(NamedTuple):
    """A rectangle of the picture, in fractions of its width and height."""

    left: float
    right: float
    top: float
    bottom: float


_SPANS: Final = ((0.0, 1.0), (0.05, 0.95), (0.0, 0.92), (0.08, 1.0))
_WINDOWS: Final = tuple(View(x0, x1, y0, y1) for (x0, x1) in _SPANS for (y0, y1) in _SPANS)
_HALVES: Final = (
    View(0.0, 1.0, 0.0, 0.5),
    View(0.0, 1.0, 0.5, 1.0),
    View(0.0, 0.5, 0.0, 1.0),
    View(0.5, 1.0, 0.0, 1.0),
)
VIEWS: Final[tuple[View, ...]] = (*_WINDOWS, *_HALVES)
"""Every view, by id (its position); id 0 is the whole picture."""

_WINDOW_IDS: Final = tuple(range(len(_WINDOWS)))
_HALF_IDS: Final = tuple(range(len(_WINDOWS), len(_WINDOWS) + len(_HALVES)))

REFERENCE_VIEWS: Final[tuple[int, ...]] = (*_WINDOW_IDS, *_HALF_IDS)
"""Views hashed for the index: the whole picture, its crop windows and its halves."""
INSET: Final = len(VIEWS)
"""View id of a picture-in-picture inset, when one is found (:mod:`acr.signals.video.inset`)."""

CENTRE: Final = INSET + 1
"""View id of the centre of the picture, 5 % off each side (query side, when there are bars)."""

_CENTRE_WINDOW: Final = _WINDOWS.index(View(0.05, 0.95, 0.05, 0.95))
_OVERSCAN_SPAN: Final = 0.90 / 0.95
_OVERSCAN_STARTS: Final = (0.0, (1.0 - _OVERSCAN_SPAN) / 2, 1.0 - _OVERSCAN_SPAN)
_OVERSCAN: Final = tuple(
    View(x0, x0 + _OVERSCAN_SPAN, y0, y0 + _OVERSCAN_SPAN)
    for x0 in _OVERSCAN_STARTS
    for y0 in _OVERSCAN_STARTS
)
OVERSCAN: Final[tuple[int, ...]] = tuple(range(CENTRE + 1, CENTRE + 1 + len(_OVERSCAN)))
"""View ids of the overscan crops of a sample (94.7 % of each dimension, at either end or
centred), compared with the reference's centre window (90 %)."""

QUERY_ONLY: Final[dict[int, View]] = {
    CENTRE: View(0.05, 0.95, 0.05, 0.95),
    **dict(zip(OVERSCAN, _OVERSCAN, strict=True)),
}
"""Rectangles hashed for samples only, by view id (the inset's is found per sample)."""

LAST_VIEW: Final = max(INSET, *QUERY_ONLY)
"""Largest view id."""

QUERY_VIEWS: Final[tuple[int, ...]] = (0, *_HALF_IDS, CENTRE, INSET, *OVERSCAN)
"""Views hashed for a sample: the whole picture, its halves, its centre, an inset if
there is one, and its overscan crops."""

COMPARED_WITH: Final[dict[int, tuple[int, ...]]] = {
    0: _WINDOW_IDS,
    **{half: (half,) for half in _HALF_IDS},
    INSET: _WINDOW_IDS,
    CENTRE: _WINDOW_IDS,
    **{crop: (_CENTRE_WINDOW,) for crop in OVERSCAN},
}
"""The reference views each query view is compared with: the whole picture, an inset
and the centre with every crop window, a half with the same half, an overscan crop with
the centre window."""

WHOLE: Final = 0
"""The view id of the whole picture."""

FIRST_LOOK: Final[tuple[int, ...]] = (WHOLE, *_HALF_IDS)
"""Reference views a sample is looked up in first: the whole picture and the halves (5 of
the 20 indexes). The crop windows, 15 scans for each whole, centre and inset hash and one
for each overscan crop, are looked up only when these leave the answer open
(``acr.video_matching.decisive``)."""

LATER_LOOK: Final[tuple[int, ...]] = tuple(v for v in REFERENCE_VIEWS if v not in FIRST_LOOK)
"""The other reference views: the crop windows but the whole picture."""

HALVES: Final[tuple[int, ...]] = _HALF_IDS
"""The view ids of the top, bottom, left and right halves."""


def view_rect(height: int, width: int, view: View) -> tuple[int, int, int, int]:
    """The pixels of `view` in a picture of `height` x `width`: ``(top, bottom, left, right)``.

    Ends are exclusive; the rectangle is at least one pixel each way.
    """
    top, bottom = round(view.top * height), max(round(view.bottom * height), 1)
    left, right = round(view.left * width), max(round(view.right * width), 1)
    return min(top, bottom - 1), bottom, min(left, right - 1), right


def evidence_views(views: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The view each hash's evidence counts for: the overscan crops of a frame are one.

    They are nine framings of one picture, of which at most one fits a
    reference: their hits are one view's evidence (the best crop of each
    frame), so that nine tries do not count, nor raise the chance rate, as
    nine views would.
    """
    result: NDArray[np.uint8] = np.where(np.isin(views, OVERSCAN), OVERSCAN[0], views).astype(
        np.uint8
    )
    return result
