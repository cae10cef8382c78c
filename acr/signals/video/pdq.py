"""Stage 3: PDQ perceptual hashes of luminance frames, many frames at once.

Meta's PDQ (``pdq/cpp/hashing/pdqhashing.cpp``) reduces a picture to 256 bits:
luminance, a two-pass Jarosz box filter, decimation to 64x64, the 16x16
low-frequency block of its DCT (without the DC row and column), and one bit
per coefficient, set when it is above the block's median. Its quality score
is the sum of the 64x64 image's absolute neighbour differences.

Every step before the median is linear and separable: for frames of one
shape the filter and decimation fold into a few weighted taps per output row
and column, built once per shape, and a batch of frames is filtered at once
instead of in per-frame loops, which is what makes hashing several views of
every frame affordable. The views are rectangles of the frames
(:func:`pdq_rects`): they are never copied out, and those with the same rows
share the row pass. The result
agrees with the reference implementation (``pdqhash`` on PyPI) to within float
rounding: ``tests/test_video_pdq.py`` checks the bits and the quality against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["HASH_BYTES", "LUMA_WEIGHTS", "Rect", "hamming", "luma", "pdq_hashes", "pdq_rects"]

HASH_BITS: Final = 256
HASH_BYTES: Final = HASH_BITS // 8
LUMA_WEIGHTS: Final = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 luma, as PDQ computes it from RGB."""

_DECIMATED: Final = 64
_DCT_SIZE: Final = 16
_FILTER_PASSES: Final = 2
_QUALITY_DIVISOR: Final = 90


def luma(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """PDQ's luminance of RGB frames, shape (..., h, w, 3) -> (..., h, w)."""
    # Written out rather than as a matrix product, which would go to BLAS (see _row_pass).
    red, green, blue = (rgb[..., channel].astype(np.float32) for channel in range(3))
    result: NDArray[np.float32] = (
        LUMA_WEIGHTS[0] * red + LUMA_WEIGHTS[1] * green + LUMA_WEIGHTS[2] * blue
    )
    return result


def _box_matrix(n: int, window: int) -> NDArray[np.float64]:
    """The reference ``box1DFloat``: a centred running mean, truncated at the edges."""
    half = (window + 2) // 2
    index = np.arange(n)
    first = np.maximum(0, index - (window - half))
    last = np.minimum(n - 1, index + half - 1)
    columns = np.arange(n)
    inside = (columns[None, :] >= first[:, None]) & (columns[None, :] <= last[:, None])
    result: NDArray[np.float64] = inside / inside.sum(axis=1, keepdims=True)
    return result


@lru_cache(maxsize=64)
def _reduction(n: int) -> NDArray[np.float64]:
    """(64, n): filter twice, then pick the 64 samples the reference decimates to."""
    window = max(1, (n + 2 * _DECIMATED - 1) // (2 * _DECIMATED))
    box = _box_matrix(n, window)
    filtered = np.linalg.matrix_power(box, _FILTER_PASSES)
    picks = ((np.arange(_DECIMATED) + 0.5) * n / _DECIMATED).astype(np.int64)
    result: NDArray[np.float64] = filtered[picks]
    return result


@lru_cache(maxsize=1)
def _dct() -> NDArray[np.float64]:
    """(16, 64): PDQ's DCT rows 1..16 (row 0, the mean, carries no shape)."""
    i = np.arange(1, _DCT_SIZE + 1)[:, None]
    j = np.arange(_DECIMATED)[None, :]
    result: NDArray[np.float64] = np.sqrt(2.0 / _DECIMATED) * np.cos(
        np.pi / 2 / _DECIMATED * i * (2 * j + 1)
    )
    return result


Taps = tuple[NDArray[np.int64], NDArray[np.float32]]


def _taps(reduction: NDArray[np.float64]) -> Taps:
    """A banded (64, n) reduction as, per output, the indices and weights of its few inputs."""
    nonzero = [np.flatnonzero(row) for row in reduction]
    width = max(z.size for z in nonzero)
    indices = np.array([np.pad(z, (0, width - z.size), mode="edge") for z in nonzero])
    weights = np.array(
        [np.pad(row[z], (0, width - z.size)) for row, z in zip(reduction, nonzero, strict=True)],
        dtype=np.float32,
    )
    return indices.astype(np.int64), weights


@lru_cache(maxsize=512)
def _operators(n: int) -> Taps:
    """The taps reducing a span of `n` pixels to 64 (rows and columns alike)."""
    return _taps(_reduction(n))


Rect = tuple[int, int, int, int]
"""A rectangle of a frame in pixels: ``(top, bottom, left, right)``, ends exclusive."""


def _row_pass(
    frames: NDArray[np.float32] | NDArray[np.uint8], top: int, bottom: int
) -> NDArray[np.float32]:
    """Rows ``top:bottom`` of each frame filtered and decimated to 64 rows (every column).

    The filter is a few taps per output, applied as gathers and multiply-adds:
    as a matrix product it would go to BLAS, whose threads make it a hundred
    times slower on a busy machine (measured: 3 ms alone, 1 s beside other work).
    """
    index, weight = _operators(bottom - top)
    index = index + top
    rows = weight[:, 0, None] * frames[:, index[:, 0], :]
    for tap in range(1, index.shape[1]):
        rows += weight[:, tap, None] * frames[:, index[:, tap], :]
    return rows


def _column_pass(columns: NDArray[np.float32], left: int, right: int) -> NDArray[np.float32]:
    """Columns ``left:right`` of row-reduced frames filtered and decimated to 64x64.

    `columns` is the row pass's output transposed, shape (n, w, 64): the taps then
    gather whole contiguous rows of it, 1.5x faster than single elements.
    """
    index, weight = _operators(right - left)
    index = index + left
    small = weight[:, 0, None] * columns[:, index[:, 0], :]
    for tap in range(1, index.shape[1]):
        small += weight[:, tap, None] * columns[:, index[:, tap], :]
    return np.ascontiguousarray(small.transpose(0, 2, 1))


def pdq_hashes(frames: NDArray[np.float32]) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """PDQ hashes and quality of luminance frames of one shape.

    Parameters
    ----------
    frames : ndarray of float32, shape (n, h, w)
        Luminance in 0..255 (see :func:`luma`); ``h, w >= 1``.

    Returns
    -------
    hashes : ndarray of uint8, shape (n, 32)
        256 bits per frame, bit ``k`` (coefficient ``(k // 16, k % 16)``) in
        byte ``31 - k // 8`` at position ``k % 8``: the byte order of PDQ's
        hexadecimal form, so ``hashes[i].tobytes().hex()`` is the reference's hex string.
    quality : ndarray of uint8, shape (n,)
        PDQ's quality, 0 (flat) to 100.
    """
    if frames.ndim != 3 or frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ValueError(f"frames must have shape (n, h, w) with h, w >= 1, got {frames.shape}")
    hashes, quality = pdq_rects(frames, [(0, frames.shape[1], 0, frames.shape[2])])
    return hashes[:, 0], quality[:, 0]


def pdq_rects(
    frames: NDArray[np.float32] | NDArray[np.uint8], rects: Sequence[Rect]
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """PDQ hashes and quality of rectangles of frames, as if each were cut out and hashed.

    The filter is separable, so rectangles that share their rows (the crop
    windows of one height, the left and right halves with the whole picture)
    share the row pass over the frames, the costly one; no rectangle is
    copied. The result is bit for bit :func:`pdq_hashes` of each rectangle.

    Parameters
    ----------
    frames : ndarray of float32 or uint8, shape (n, h, w)
        Luminance in 0..255.
    rects : sequence of (top, bottom, left, right)
        Rectangles inside the frames, each at least one pixel each way.

    Returns
    -------
    hashes : ndarray of uint8, shape (n, len(rects), 32)
    quality : ndarray of uint8, shape (n, len(rects))
    """
    n, height, width = frames.shape
    for top, bottom, left, right in rects:
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            raise ValueError(f"{(top, bottom, left, right)} is not inside {height}x{width}")
    hashes = np.empty((n, len(rects), HASH_BYTES), dtype=np.uint8)
    quality = np.empty((n, len(rects)), dtype=np.uint8)
    if n == 0:
        return hashes, quality
    dct = _dct().astype(np.float32)
    by_rows: dict[tuple[int, int], list[int]] = {}
    for k, (top, bottom, _, _) in enumerate(rects):
        by_rows.setdefault((top, bottom), []).append(k)
    for (top, bottom), members in by_rows.items():
        # Only the columns some member needs go through the row pass.
        first = min(rects[k][2] for k in members)
        last = max(rects[k][3] for k in members)
        rows = _row_pass(frames[:, :, first:last], top, bottom)
        columns = np.ascontiguousarray(rows.transpose(0, 2, 1))
        for k in members:
            small = _column_pass(columns, rects[k][2] - first, rects[k][3] - first)
            coefficients = (dct @ small @ dct.T).reshape(n, HASH_BITS)
            median = np.median(coefficients, axis=1, keepdims=True)
            bits = (coefficients > median).astype(np.uint8)
            hashes[:, k] = np.packbits(bits[:, ::-1], axis=1, bitorder="big")
            quality[:, k] = _quality(small)
    return hashes, quality


def _quality(small: NDArray[np.float32]) -> NDArray[np.uint8]:
    # The reference truncates each scaled difference to an integer before summing.
    vertical = np.trunc(np.abs(np.diff(small, axis=1)) * (100.0 / 255.0)).sum(axis=(1, 2))
    horizontal = np.trunc(np.abs(np.diff(small, axis=2)) * (100.0 / 255.0)).sum(axis=(1, 2))
    score = (vertical + horizontal) // _QUALITY_DIVISOR
    result: NDArray[np.uint8] = np.minimum(score, 100).astype(np.uint8)
    return result


_POPCOUNT: Final = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Bit distances between hashes, broadcasting ``(..., 32)`` against ``(..., 32)``."""
    result: NDArray[np.int64] = _POPCOUNT[np.bitwise_xor(a, b)].sum(axis=-1, dtype=np.int64)
    return result
