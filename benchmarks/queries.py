"""The fixed, seeded query set: which clips are cut, where, and how they are degraded.

A plan fixes, for each query length, how many clips are cut. Clips are dealt
round-robin over the tracks long enough for them; each clip's start is drawn
from a generator seeded by :data:`SEED` and the clip's identity, and every
degradation of the registry is applied to the same clip (a paired design: the
rows of the results table differ only by the degradation). Every random
choice is keyed by ``(kind, length, slot, purpose)``, so the set does not
depend on iteration order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import signal

from benchmarks.common import stream_of
from benchmarks.degrade import REGISTRY, Degradation, FloatArray, get

SEED = 20261126
"""Master seed of the query set."""

SAMPLE_RATE = 16_000
"""Rate at which clips are cut and degraded (the matcher resamples itself)."""

LENGTHS_S: tuple[int, ...] = (1, 2, 3, 5, 10)
"""Query lengths in seconds."""

MARGIN_S = 0.5
"""Extra source cut after each clip before degrading, trimmed afterwards, so
filters, codecs and time stretching never run out of input."""

MIN_CLIP_DBFS = -45.0
"""Clips quieter than this (RMS, clean) are redrawn: silence identifies nothing."""

REPEAT_MIN_CORRELATION = 0.9
"""Normalised correlation above which two stretches of a track count as the same audio."""

_MAX_DRAWS = 50
_KIND_CODES = {"positive": 1, "negative": 2}
_START_STREAM = 0xC11B

NEGATIVE_DEGRADATIONS: tuple[str, ...] = (
    "clean",
    "white5",
    "pink10",
    "reverb",
    "mp3_32k",
    "speed+2",
    "telephone",
    "phone_mic",
)
"""Conditions applied to the negative (never indexed) clips."""


@dataclass(frozen=True)
class QueryPlan:
    """How many clips of each length to cut, from how many tracks.

    Attributes
    ----------
    name : str
        ``"full"`` or ``"quick"``.
    reference_tracks : int or None
        Number of reference tracks to index and query (evenly spaced over the
        sorted list); ``None`` for all.
    negative_tracks : int or None
        Number of negative tracks to cut clips from; ``None`` for all.
    positive_clips : Mapping of int to int
        Clips per query length (seconds) from the references; each is
        degraded with every entry of ``degradations``.
    negative_clips : Mapping of int to int
        Clips per query length from the negatives.
    degradations : tuple of str
        Conditions applied to every positive clip, in table order.
    negative_degradations : tuple of str
        Conditions applied to every negative clip.
    """

    name: str
    reference_tracks: int | None
    negative_tracks: int | None
    positive_clips: Mapping[int, int]
    negative_clips: Mapping[int, int]
    degradations: tuple[str, ...] = field(default=tuple(d.name for d in REGISTRY))
    negative_degradations: tuple[str, ...] = NEGATIVE_DEGRADATIONS

    @property
    def positive_queries(self) -> int:
        """Number of positive queries in the plan."""
        return sum(self.positive_clips.values()) * len(self.degradations)

    @property
    def negative_queries(self) -> int:
        """Number of negative queries in the plan."""
        return sum(self.negative_clips.values()) * len(self.negative_degradations)


FULL_PLAN = QueryPlan(
    name="full",
    reference_tracks=None,
    negative_tracks=None,
    positive_clips={1: 122, 2: 61, 3: 61, 5: 122, 10: 61},
    negative_clips={1: 10, 2: 10, 3: 10, 5: 26, 10: 10},
)
"""The full benchmark: every cell has at least 61 queries, 5 s and 1 s cells 122."""

QUICK_PLAN = QueryPlan(
    name="quick",
    reference_tracks=12,
    negative_tracks=4,
    positive_clips={length: 12 for length in LENGTHS_S},
    negative_clips={1: 2, 2: 2, 3: 2, 5: 4, 10: 2},
)
"""Smoke run: 12 tracks, one clip per track per length."""


@dataclass(frozen=True)
class ClipSpec:
    """One clip to cut, before its start is drawn.

    Attributes
    ----------
    kind : str
        ``"positive"`` (from an indexed reference) or ``"negative"``.
    track : int
        Index of the track in the list the plan was made from.
    length_s : int
        Length of the query in seconds.
    slot : int
        Index of the clip among those of the same kind and length.
    """

    kind: str
    track: int
    length_s: int
    slot: int


@dataclass(frozen=True)
class Query:
    """A degraded query clip with its ground truth.

    Attributes
    ----------
    query_id : str
        Stable identifier, e.g. ``"p-5s-017-white10"``.
    kind : str
        ``"positive"`` or ``"negative"``.
    track : int
        Index of the source track.
    length_s : int
        Query length in seconds (``samples`` is exactly this long).
    slot : int
        Clip slot (see :class:`ClipSpec`).
    degradation : str
        Name of the degradation applied.
    true_offset_s : float
        Start of the clip in the source track's own time base (for speed and
        tempo changes too).
    samples : ndarray of float32
        The degraded clip, mono.
    sample_rate : int
        Rate of ``samples``.
    """

    query_id: str
    kind: str
    track: int
    length_s: int
    slot: int
    degradation: str
    true_offset_s: float
    samples: FloatArray
    sample_rate: int


def select_tracks(count: int | None, total: int) -> list[int]:
    """Indices of ``count`` tracks evenly spaced over ``total`` (all when ``None``)."""
    if count is None or count >= total:
        return list(range(total))
    return sorted({(i * total) // count for i in range(count)})


def source_seconds_needed(length_s: float, degradations: Sequence[str]) -> float:
    """Seconds of source a clip needs so that every degradation can be applied."""
    factor = max(get(name).time_factor for name in degradations)
    return length_s * max(factor, 1.0) + MARGIN_S


def assign_clips(
    durations_s: Sequence[float],
    clips_per_length: Mapping[int, int],
    kind: str,
    degradations: Sequence[str],
) -> list[ClipSpec]:
    """Deal clips round-robin over the tracks long enough for each length.

    Parameters
    ----------
    durations_s : sequence of float
        Track durations in seconds.
    clips_per_length : Mapping of int to int
        Number of clips for each query length.
    kind : str
        ``"positive"`` or ``"negative"``.
    degradations : sequence of str
        Conditions the clips will get (they decide how much source is needed).

    Returns
    -------
    list of ClipSpec
        Sorted by length, then slot.
    """
    specs: list[ClipSpec] = []
    for length_s in sorted(clips_per_length):
        needed = source_seconds_needed(length_s, degradations) + 0.1
        eligible = [i for i, d in enumerate(durations_s) if d >= needed]
        if not eligible:
            raise ValueError(f"no track is long enough for {length_s} s clips")
        for slot in range(clips_per_length[length_s]):
            specs.append(ClipSpec(kind, eligible[slot % len(eligible)], length_s, slot))
    return specs


def _rng(kind: str, length_s: int, slot: int, stream: int, seed: int) -> np.random.Generator:
    key = (_KIND_CODES[kind], length_s, slot, stream)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _dbfs(x: FloatArray) -> float:
    rms = math.sqrt(float(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    return 20.0 * math.log10(max(rms, 1e-12))


def draw_start(
    audio: FloatArray,
    sample_rate: int,
    length_s: float,
    needed_s: float,
    rng: np.random.Generator,
) -> float:
    """Draw a clip start uniformly, redrawing starts whose clip is near-silent.

    Parameters
    ----------
    audio : ndarray of float32
        Whole decoded track.
    sample_rate : int
        Rate of ``audio``.
    length_s : float
        Query length (the part whose loudness is checked).
    needed_s : float
        Source seconds that must be available after the start.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    float
        Start in seconds, on a sample boundary. After ``_MAX_DRAWS`` quiet
        draws the loudest one is kept.
    """
    latest = audio.shape[0] / sample_rate - needed_s
    if latest < 0:
        raise ValueError("track is shorter than the clip needs")
    n = round(length_s * sample_rate)
    best_start, best_level = 0.0, -math.inf
    for _ in range(_MAX_DRAWS):
        start = round(float(rng.uniform(0.0, latest)) * sample_rate) / sample_rate
        first = round(start * sample_rate)
        level = _dbfs(audio[first : first + n])
        if level >= MIN_CLIP_DBFS:
            return start
        if level > best_level:
            best_start, best_level = start, level
    return best_start


def degrade_clip(
    audio: FloatArray,
    sample_rate: int,
    start_s: float,
    length_s: float,
    degradation: Degradation,
    rng: np.random.Generator,
) -> FloatArray:
    """Cut enough source at ``start_s``, degrade it and trim to exactly ``length_s``.

    Parameters
    ----------
    audio : ndarray of float32
        Whole decoded track.
    sample_rate : int
        Rate of ``audio``.
    start_s : float
        Start of the clip in the track.
    length_s : float
        Length of the result in seconds.
    degradation : Degradation
        What to apply; its ``time_factor`` decides how much source is cut.
    rng : numpy.random.Generator
        Randomness for the degradation.

    Returns
    -------
    ndarray of float32
        ``round(length_s * sample_rate)`` samples.
    """
    n_out = round(length_s * sample_rate)
    first = round(start_s * sample_rate)
    n_in = math.ceil((length_s * degradation.time_factor + MARGIN_S) * sample_rate)
    y = degradation.apply(audio[first : first + n_in], sample_rate, rng)[:n_out]
    if y.shape[0] < n_out:
        y = np.concatenate([y, np.zeros(n_out - y.shape[0], dtype=np.float32)])
    if not np.all(np.isfinite(y)):
        raise FloatingPointError(f"{degradation.name} produced non-finite samples")
    return np.ascontiguousarray(y, dtype=np.float32)


def queries_for_track(
    audio: FloatArray,
    sample_rate: int,
    clips: Sequence[ClipSpec],
    degradations: Sequence[str],
    seed: int = SEED,
) -> Iterator[Query]:
    """Cut and degrade every clip of one track.

    Parameters
    ----------
    audio : ndarray of float32
        The decoded track at ``sample_rate``.
    sample_rate : int
        Rate of ``audio``.
    clips : sequence of ClipSpec
        The clips of this track (all with the same ``track``).
    degradations : sequence of str
        Conditions to apply to each clip, in order.
    seed : int
        Master seed of the draw (the benchmark's own by default).

    Yields
    ------
    Query
        One per clip and degradation, clip by clip.
    """
    for clip in clips:
        needed = source_seconds_needed(clip.length_s, degradations)
        start = draw_start(
            audio,
            sample_rate,
            clip.length_s,
            needed,
            _rng(clip.kind, clip.length_s, clip.slot, _START_STREAM, seed),
        )
        for name in degradations:
            rng = _rng(clip.kind, clip.length_s, clip.slot, stream_of(name), seed)
            samples = degrade_clip(audio, sample_rate, start, clip.length_s, get(name), rng)
            yield Query(
                query_id=f"{clip.kind[0]}-{clip.length_s}s-{clip.slot:03d}-{name}",
                kind=clip.kind,
                track=clip.track,
                length_s=clip.length_s,
                slot=clip.slot,
                degradation=name,
                true_offset_s=start,
                samples=samples,
                sample_rate=sample_rate,
            )


def clips_by_track(clips: Sequence[ClipSpec]) -> dict[int, list[ClipSpec]]:
    """Group clips by track index, preserving order."""
    grouped: dict[int, list[ClipSpec]] = {}
    for clip in clips:
        grouped.setdefault(clip.track, []).append(clip)
    return grouped


def repeat_offset(
    audio: FloatArray,
    sample_rate: int,
    start_s: float,
    length_s: float,
    claimed_s: float,
    search_s: float = 0.5,
    target: FloatArray | None = None,
) -> float | None:
    """Where, near ``claimed_s``, a track repeats the clean clip at ``start_s``.

    Game music loops, and some tracks share passages: a clip can occur verbatim
    at several places in its track or in another reference, and a matcher that
    returns another occurrence is right. This looks for the clean clip within
    ``search_s`` of the claimed offset.

    Parameters
    ----------
    audio : ndarray of float32
        Whole decoded track.
    sample_rate : int
        Rate of ``audio``.
    start_s : float
        True start of the clip.
    length_s : float
        Length of the clip.
    claimed_s : float
        Offset a matcher returned.
    search_s : float
        How far around ``claimed_s`` to look.
    target : ndarray of float32, optional
        The track the claimed offset refers to, at ``sample_rate``; ``audio``
        itself by default.

    Returns
    -------
    float or None
        Start of the repeat (the best-aligned position) if its normalised
        correlation with the clip reaches :data:`REPEAT_MIN_CORRELATION`,
        else None.
    """
    n = round(length_s * sample_rate)
    first = round(start_s * sample_rate)
    clip = audio[first : first + n].astype(np.float64)
    lo = max(0, round((claimed_s - search_s) * sample_rate))
    where = audio if target is None else target
    hi = min(where.shape[0], round((claimed_s + search_s) * sample_rate) + n)
    window = where[lo:hi].astype(np.float64)
    clip_energy = float(np.sum(clip**2))
    if clip.shape[0] < n or window.shape[0] < n or clip_energy <= 0.0:
        return None
    products = signal.fftconvolve(window, clip[::-1], mode="valid")
    cumulative = np.concatenate([[0.0], np.cumsum(window**2)])
    energies = cumulative[n:] - cumulative[:-n]
    correlation = products / np.sqrt(np.maximum(energies * clip_energy, 1e-20))
    best = int(np.argmax(correlation))
    if correlation[best] < REPEAT_MIN_CORRELATION:
        return None
    return (lo + best) / sample_rate
