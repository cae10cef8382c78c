"""Stage 1: the short-time spectrum that event points are taken from."""

from __future__ import annotations

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

SAMPLE_RATE = 8000
"""Working rate. 0–4 kHz holds the tonal peaks that survive phone microphones,
telephone band-limiting and lossy codecs; higher bands are the first to go."""

N_FFT = 512
"""64 ms windows resolve the partials of music and speech (15.6 Hz bins)."""

HOP = 128
"""16 ms hop: offsets are voted in frames, so this bounds the offset resolution."""

HOP_S = HOP / SAMPLE_RATE

_WINDOW = np.hanning(N_FFT + 2)[1:-1].astype(np.float32)


def log_spectrogram(samples: NDArray[np.float32]) -> NDArray[np.float32]:
    """Log-power spectrogram of a mono signal at :data:`SAMPLE_RATE`.

    Parameters
    ----------
    samples : ndarray of float32, shape (n,)
        Mono audio at :data:`SAMPLE_RATE`.

    Returns
    -------
    ndarray of float32, shape (frames, N_FFT // 2 + 1)
        Natural log of the power spectrum, frame ``t`` centred at
        ``t * HOP + N_FFT / 2`` samples. Empty (0 rows) for signals shorter than
        one window.
    """
    if samples.shape[0] < N_FFT:
        return np.zeros((0, N_FFT // 2 + 1), dtype=np.float32)
    frames = sliding_window_view(samples.astype(np.float32, copy=False), N_FFT)[::HOP]
    spectrum = scipy.fft.rfft(frames * _WINDOW, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    # The floor keeps digital silence finite without lifting real content.
    log_power: NDArray[np.float32] = np.log(power + np.float32(1e-10)).astype(np.float32)
    return log_power
