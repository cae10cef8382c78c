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
every frame affordable. The result
agrees with the reference implementation (``pdqhash`` on PyPI) to within float
rounding: ``tests/test_video_pdq.py`` checks the bits and the quality against it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["HASH_BYTES", "LUMA_WEIGHTS", "hamming", "luma", "pdq_hashes"]

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
    # Written out rather than as a matrix product, which would go to BLAS (see _downsample).
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


@lru_cache(maxsize=256)
def _operators(height: int, width: int) -> tuple[Taps, Taps]:
    return _taps(_reduction(height)), _taps(_reduction(width))


def _downsample(frames: NDArray[np.float32]) -> NDArray[np.float32]:
    """The reference's filtered 64x64 image of each frame.

    The filter is a few taps per output, applied as gathers and multiply-adds:
    as a matrix product it would go to BLAS, whose threads make it a hundred
    times slower on a busy machine (measured: 3 ms alone, 1 s beside other work).
    """
    (row_index, row_weight), (col_index, col_weight) = _operators(*frames.shape[1:])
    rows = row_weight[:, 0, None] * frames[:, row_index[:, 0], :]
    for tap in range(1, row_index.shape[1]):
        rows += row_weight[:, tap, None] * frames[:, row_index[:, tap], :]
    small = col_weight[None, :, 0] * rows[:, :, col_index[:, 0]]
    for tap in range(1, col_index.shape[1]):
        small += col_weight[None, :, tap] * rows[:, :, col_index[:, tap]]
    return small


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
    n = frames.shape[0]
    if n == 0:
        return np.zeros((0, HASH_BYTES), np.uint8), np.zeros(0, np.uint8)
    small = _downsample(frames)
    dct = _dct().astype(np.float32)
    coefficients = (dct @ small @ dct.T).reshape(n, HASH_BITS)
    median = np.median(coefficients, axis=1, keepdims=True)
    bits = (coefficients > median).astype(np.uint8)
    hashes = np.packbits(bits[:, ::-1], axis=1, bitorder="big")
    return hashes, _quality(small)


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
