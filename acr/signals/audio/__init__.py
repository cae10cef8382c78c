"""Audio signal kind: decode → spectrogram → peaks → pair codes.

Reference and query fingerprints differ only in density: references are kept
sparse (index size), queries are dense so that enough of the reference's pairs
survive noise and room acoustics to be found.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from acr.signals.audio.codes import pair_codes
from acr.signals.audio.decode import DEFAULT_MAX_BYTES, decode_audio, ensure_audible, resample
from acr.signals.audio.peaks import find_peaks
from acr.signals.audio.spectrogram import HOP_S, SAMPLE_RATE, log_spectrogram
from acr.signals.base import Fingerprints, MediaSource

KIND = "audio"

REFERENCE_PEAKS_PER_SECOND = 22.0
REFERENCE_FANOUT = 4
QUERY_PEAKS_PER_SECOND = 36.0
QUERY_FANOUT = 5
SHORT_SAMPLE_S = 1.5
"""Samples up to this long are fingerprinted twice, half a hop apart (:func:`fingerprint_query`)."""

__all__ = [
    "HOP_S",
    "KIND",
    "SAMPLE_RATE",
    "AudioSignal",
    "fingerprint_query",
    "fingerprint_reference",
]


def _fingerprint(
    samples: NDArray[np.float32], peaks_per_second: float, fanout: int
) -> Fingerprints:
    peaks = find_peaks(log_spectrogram(samples), peaks_per_second=peaks_per_second)
    codes, frames = pair_codes(peaks, fanout=fanout)
    return Fingerprints(
        kind=KIND,
        codes=codes,
        frames=frames,
        hop_s=HOP_S,
        duration_s=samples.shape[0] / SAMPLE_RATE,
    )


def fingerprint_reference(samples: NDArray[np.float32]) -> Fingerprints:
    """Fingerprint reference audio (mono float32 at :data:`SAMPLE_RATE`) for the index."""
    return _fingerprint(samples, REFERENCE_PEAKS_PER_SECOND, REFERENCE_FANOUT)


def fingerprint_query(samples: NDArray[np.float32]) -> Fingerprints:
    """Fingerprint a sample (mono float32 at :data:`SAMPLE_RATE`) to be matched.

    A sample starts anywhere within the reference's analysis hop, so its frames
    see the sound half a hop off the reference's at worst, and a peak near a
    frame or band boundary can land on the other side of it. A short sample
    (up to :data:`SHORT_SAMPLE_S`) has too few codes to lose any: it is also
    fingerprinted from half a hop in, and the codes that the first pass has
    nothing like are added (``docs/fingerprint.md``, measured by
    ``python -m benchmarks.short_samples``).
    """
    first = _fingerprint(samples, QUERY_PEAKS_PER_SECOND, QUERY_FANOUT)
    if samples.shape[0] > SHORT_SAMPLE_S * SAMPLE_RATE:
        return first
    half_hop = round(HOP_S * SAMPLE_RATE / 2)
    second = _fingerprint(samples[half_hop:], QUERY_PEAKS_PER_SECOND, QUERY_FANOUT)
    return _joined(first, second)


def _joined(first: Fingerprints, later: Fingerprints) -> Fingerprints:
    """``first`` and the codes of ``later`` (taken half a hop in) that ``first`` lacks.

    ``later``'s frames are put on the following frame of ``first``'s grid. A
    code of ``later`` within one bit of a code that ``first`` has within a
    frame of it is left out: the lookup probes every code's one-bit
    neighbours, so the two would reach the same postings and count the same
    collision twice, on chance lines as on true ones.
    """
    frames = later.frames.astype(np.int64) + 1
    near = np.abs(frames[:, None] - first.frames.astype(np.int64)[None, :]) <= 1
    differing = later.codes[:, None] ^ first.codes[None, :]
    within_a_bit = (differing & (differing - np.uint32(1))) == 0  # zero or one bit set
    new = ~np.any(near & within_a_bit, axis=1)
    joined_frames = np.concatenate([first.frames, frames[new].astype(np.uint32)])
    order = np.argsort(joined_frames, kind="stable")
    return Fingerprints(
        kind=KIND,
        codes=np.concatenate([first.codes, later.codes[new]])[order],
        frames=joined_frames[order],
        hop_s=HOP_S,
        duration_s=first.duration_s,
    )


def _audible(
    source: MediaSource, max_seconds: float | None, max_bytes: int | None
) -> NDArray[np.float32]:
    """Decode to the working rate and refuse silence or a too short sample."""
    samples = decode_audio(
        source, sample_rate=SAMPLE_RATE, max_seconds=max_seconds, max_bytes=max_bytes
    )
    ensure_audible(samples, sample_rate=SAMPLE_RATE)
    return samples


class AudioSignal:
    """The audio :class:`~acr.signals.base.SignalKind`."""

    name = KIND
    hop_s = HOP_S
    sample_rate = SAMPLE_RATE

    def fingerprint_media(
        self,
        source: MediaSource,
        *,
        max_seconds: float | None = None,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> Fingerprints:
        return fingerprint_reference(_audible(source, max_seconds, max_bytes))

    def fingerprint_query(
        self,
        source: MediaSource,
        *,
        max_seconds: float | None = None,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> Fingerprints:
        return fingerprint_query(_audible(source, max_seconds, max_bytes))

    def fingerprint_samples(
        self, samples: NDArray[np.floating], sample_rate: int, *, query: bool
    ) -> Fingerprints:
        """Fingerprint an in-memory mono signal at any rate."""
        mono = resample(samples, sample_rate, SAMPLE_RATE)
        ensure_audible(mono, sample_rate=SAMPLE_RATE)
        return fingerprint_query(mono) if query else fingerprint_reference(mono)
