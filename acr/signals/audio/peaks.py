"""Stage 2: event points — the spectral peaks that survive noise, rooms and codecs.

A point is kept when it is

* a local maximum of its small time-frequency neighbourhood, and
* an *onset*: louder than the decaying trace that the same frequency region
  left in the preceding frames. A room's reverberation decays at least as fast
  as that trace, so its tails never qualify and the peaks of a reverberant
  recording stay on the direct sound's onsets.

Points are then thinned to a fixed density per second, loudest first. Loudness
(log power, less the signal's mean) is the ranking that survives additive noise
best: at 0 dB SNR the loud partials are still above the noise while the
prominent-but-quiet ones are gone. A fixed density keeps the index size
proportional to duration and lets the query side be denser than the reference.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numpy.typing import NDArray

from acr.signals.audio.spectrogram import HOP_S, N_FFT, SAMPLE_RATE

MIN_HZ = 250.0
"""Bass below this is dropped: loudspeakers of TVs and phones, telephone lines and
phone microphones barely pass it, so peaks there would be missing from samples."""
MAX_HZ = 3800.0
_BIN_HZ = SAMPLE_RATE / N_FFT
MIN_BIN = int(MIN_HZ / _BIN_HZ)
MAX_BIN = int(MAX_HZ / _BIN_HZ) + 1

NEIGHBOURHOOD = (3, 5)
"""(frames, bins) a peak must dominate: ±16 ms, ±31 Hz. Small on purpose: the
density limit, not the neighbourhood, decides how many points survive."""

MASK_SPREAD_BINS = 5
"""A loud bin masks its neighbours ±2 bins (±31 Hz) in later frames."""
MASK_DECAY = 0.25
"""Decay of the masking trace per frame, natural-log power units (≈ 68 dB/s):
slower than the tail of a room with RT60 up to about 0.9 s."""
MASK_FRAMES = 20
"""How far back (320 ms) the masking trace reaches."""

SILENCE_DB_BELOW_MAX = 70.0
"""Peaks this far below the loudest bin are noise floor, not content."""

BLOCK_FRAMES = max(1, round(1.0 / HOP_S))


class Peaks(NamedTuple):
    """Spectral peaks sorted by frame, then frequency."""

    frames: NDArray[np.int32]
    """Frame index of each peak."""
    hz: NDArray[np.float32]
    """Frequency of each peak in Hz, refined between bins by parabolic interpolation."""
    strength: NDArray[np.float32]
    """Log power above the signal's mean, the ranking key."""


def find_peaks(log_power: NDArray[np.float32], *, peaks_per_second: float) -> Peaks:
    """Pick the loudest onset peaks of a log-power spectrogram.

    Parameters
    ----------
    log_power : ndarray of float32, shape (frames, bins)
        Output of :func:`acr.signals.audio.spectrogram.log_spectrogram`.
    peaks_per_second : float
        Target density: each one-second block keeps at most this many peaks.

    Returns
    -------
    Peaks
        Sorted by frame, then frequency.
    """
    n_frames = log_power.shape[0]
    if n_frames == 0:
        empty_i = np.zeros(0, dtype=np.int32)
        empty_f = np.zeros(0, dtype=np.float32)
        return Peaks(empty_i, empty_f, empty_f)
    band = log_power[:, MIN_BIN - 1 : MAX_BIN + 1]
    # Below the signal's mean level or far below its loudest bin is background.
    mean = float(band.mean())
    floor = max(mean, float(band.max()) - SILENCE_DB_BELOW_MAX / 10.0 * np.log(10.0))
    return peaks_in(
        band, floor=floor, reference=mean, peaks_per_second=peaks_per_second, n_frames=n_frames
    )


def peaks_in(
    band: NDArray[np.float32],
    *,
    floor: float,
    reference: float,
    peaks_per_second: float,
    n_frames: int,
    row0: int = 0,
    first: int = 0,
    stop: int | None = None,
) -> Peaks:
    """The peaks of frames ``[first, stop)`` of ``band`` (bins MIN_BIN-1..MAX_BIN).

    The tests of :func:`find_peaks` with the level ``floor`` and strengths taken
    above ``reference`` given, so that a streaming fingerprinter can run them on a
    window of the spectrogram: ``band`` row 0 is frame ``row0``, and rows outside
    ``[first, stop)`` are context for the masking trace and the neighbourhood only.
    ``n_frames`` is the length of the signal, which sets the last block's quota.
    """
    stop = row0 + band.shape[0] if stop is None else stop
    # The level test in float32, as NumPy compares a float32 array with a Python float.
    is_peak = _onset_maxima(np.ascontiguousarray(band, dtype=np.float32), np.float32(floor))
    is_peak[: first - row0] = False
    is_peak[stop - row0 :] = False
    rows, bins = np.nonzero(is_peak)
    strength = band[rows, bins] - reference
    frames = rows + row0

    keep = _strongest_per_block(frames, strength, peaks_per_second, n_frames)
    rows, bins, strength, frames = rows[keep], bins[keep], strength[keep], frames[keep]

    left = band[rows, bins - 1]
    centre = band[rows, bins]
    right = band[rows, bins + 1]
    curvature = left - 2.0 * centre + right
    safe = np.where(curvature < 0, curvature, -1.0)
    shift = np.where(curvature < 0, 0.5 * (left - right) / safe, 0.0)
    hz = (bins + (MIN_BIN - 1) + np.clip(shift, -0.5, 0.5)) * _BIN_HZ

    order = np.lexsort((hz, frames))
    return Peaks(
        frames[order].astype(np.int32),
        hz[order].astype(np.float32),
        strength[order].astype(np.float32),
    )


@numba.njit(cache=True, nogil=True)
def _row_maxima(band: NDArray[np.float32], half_width: int) -> NDArray[np.float32]:
    """Each bin's maximum over ``±half_width`` bins of its own frame (edges repeated)."""
    n_frames, n_bins = band.shape
    out = np.empty_like(band)
    for t in range(n_frames):
        for b in range(n_bins):
            loudest = band[t, b]
            for d in range(-half_width, half_width + 1):
                value = band[t, min(max(b + d, 0), n_bins - 1)]
                if value > loudest:
                    loudest = value
            out[t, b] = loudest
    return out


@numba.njit(cache=True, nogil=True)
def _onset_maxima(band: NDArray[np.float32], floor: np.float32) -> NDArray[np.bool_]:
    """Where ``band`` is a local maximum, an onset and above ``floor`` (edge bins never).

    A local maximum: no bin of its ``NEIGHBOURHOOD`` is louder (edges repeat
    the nearest row or column). An onset: louder than the masking trace
    ``max over 1 ≤ k ≤ MASK_FRAMES of spread[t − k] − MASK_DECAY · k``, where
    ``spread`` is each frame's maximum over ``MASK_SPREAD_BINS`` neighbouring
    bins. Compiled loops doing the float32 arithmetic of the whole-array
    filters they replace (identical peaks), in half their time.
    """
    n_frames, n_bins = band.shape
    near = _row_maxima(band, NEIGHBOURHOOD[1] // 2)
    # Both widths are five bins today: one pass serves both tests.
    same = NEIGHBOURHOOD[1] == MASK_SPREAD_BINS
    spread = near if same else _row_maxima(band, MASK_SPREAD_BINS // 2)
    decay = np.empty(MASK_FRAMES + 1, dtype=np.float32)
    for lag in range(MASK_FRAMES + 1):
        decay[lag] = np.float32(MASK_DECAY * lag)
    lags = min(MASK_FRAMES, n_frames - 1)
    half_frames = NEIGHBOURHOOD[0] // 2
    is_peak = np.zeros(band.shape, dtype=np.bool_)
    for t in range(n_frames):
        for b in range(1, n_bins - 1):
            centre = band[t, b]
            if not centre > floor:
                continue
            maximum = True
            for dt in range(-half_frames, half_frames + 1):
                if near[min(max(t + dt, 0), n_frames - 1), b] > centre:
                    maximum = False
                    break
            if not maximum:
                continue
            onset = True
            for lag in range(1, min(lags, t) + 1):
                if not centre > spread[t - lag, b] - decay[lag]:
                    onset = False
                    break
            is_peak[t, b] = onset
    return is_peak


def _strongest_per_block(
    frames: NDArray[np.intp], strength: NDArray[np.float32], per_second: float, n_frames: int
) -> NDArray[np.intp]:
    """Indices of the ``per_second`` strongest peaks in each one-second block."""
    if frames.size == 0:
        return np.zeros(0, dtype=np.intp)
    block = frames // BLOCK_FRAMES
    order = np.lexsort((-strength, block))
    sorted_block = block[order]
    starts = np.searchsorted(sorted_block, sorted_block, side="left")
    rank = np.arange(sorted_block.size) - starts
    # The last block is partial; scale its quota by the frames it holds.
    block_frames = np.minimum(BLOCK_FRAMES, n_frames - sorted_block * BLOCK_FRAMES)
    quota = np.ceil(per_second * block_frames / BLOCK_FRAMES)
    return np.sort(order[rank < quota])
