"""Continuous monitoring: a long recording matched into a timeline of segments.

A broadcast hour is not one query but a sequence of pieces — programmes,
adverts, music that is in no catalogue, silence. :func:`monitor` answers
"what played when": a list of :class:`Segment` ``[start, end) → content,
offset, confidence``, and the gaps between them where nothing known played.

Stages, each a small function over arrays:

1. **Fingerprint once.** The recording is decoded to the working rate and
   fingerprinted with the query settings in chunks (:data:`CHUNK_S`, with
   context on both sides so peaks and pairs at chunk edges are the ones a
   single pass would find). Memory: the decoded signal is held whole, 115 MB
   of float32 per hour at 8 kHz; spectrograms exist one chunk at a time.
2. **Slide windows.** Overlapping windows (:data:`WINDOW_S` every
   :data:`WINDOW_HOP_S`) of the query codes are aligned with the ordinary
   matcher (:func:`acr.matching.align`). Lookups run once per block of windows,
   so each code is searched about once, not once per window covering it.
3. **Chain.** Consecutive confident windows that name the same content on the
   same time line (their offsets differ by the elapsed time, within a few
   frames) form one segment. A segment needs :data:`MIN_WINDOWS` agreeing
   windows: a single confident window somewhere in an hour of unknown music is
   the matcher's per-query false-positive rate times thousands of windows,
   two windows on one line by chance are not.
4. **Refine edges.** A window only says "somewhere in these 6 s". Around each
   edge, the codes are looked up again and the hits of the segment's content
   on its line give the first and last matching anchor; a known bias of pair
   codes at an edge (a pair whose target peak lies past the end cannot match)
   is corrected, and a segment never extends past either end of its reference.
   Abutting segments are split midway, like :func:`acr.index.store._tile`.

**Speed, pitch and tempo changes** beyond the matcher's few per cent (a
broadcast sped up by 4 %) are searched as :func:`acr.search.identify` does:
a window that the plain lookup leaves unsure (no confident alignment, or one
tilted by :data:`~acr.search.TILTED_SCALE` or more) screens every warp of the
grid on exact code matches, aligns the best few in full, and keeps a warped
alignment, less :data:`~acr.search.WARP_PENALTY`, if it beats the plain one. A
segment found under a warp is followed, refined and measured under it, and
reports its speed (total tempo) and pitch. Lookups are made per block of
windows and per warp, so a code is looked up about once per warp tried; a warp
whose screen falls short of :data:`MIN_SCREEN_VOTES` is not looked up in full.

Everything between segments is a gap: no match is reported there.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from acr.matching import (
    INLIER_FRAMES,
    Alignment,
    Hits,
    align,
    best_vote,
    confidence_from_evidence,
)
from acr.search import (
    SHORTLIST,
    TILTED_SCALE,
    WARPS,
    Lookup,
    Query,
    _measured_pitch,
    _penalized,
    _unwarped,
)
from acr.signals.audio import SAMPLE_RATE, fingerprint_query
from acr.signals.audio.decode import decode_audio, ensure_audible
from acr.signals.audio.spectrogram import HOP, HOP_S
from acr.signals.audio.warp import IDENTITY, Warp, warp_codes
from acr.signals.base import Fingerprints, MediaSource

if TYPE_CHECKING:
    from acr.index.store import Index

__all__ = [
    "CHUNK_S",
    "DEFAULT_MAX_SECONDS",
    "MIN_SCREEN_VOTES",
    "MIN_WINDOWS",
    "WINDOW_HOP_S",
    "WINDOW_MIN_CONFIDENCE",
    "WINDOW_S",
    "Segment",
    "Timeline",
    "fingerprint_recording",
    "monitor",
    "timeline_from_fingerprints",
]

WINDOW_S = 6.0
"""Length of a matching window. Long enough that a window fully inside a piece
is identified under noise (5 s queries are ≥ 97 % at 10 dB SNR on the benchmark)."""
WINDOW_HOP_S = 2.0
"""Windows start this often: every moment is covered by three windows, and
a piece of 10 s holds at least two whole ones."""
WINDOW_MIN_CONFIDENCE = 0.5
"""Confidence a window needs to vote; a segment still needs :data:`MIN_WINDOWS`
windows on one line, which is what keeps false segments out."""
MIN_WINDOWS = 2
"""Agreeing windows a segment needs."""
DEFAULT_MIN_CONFIDENCE = 0.8
"""Segments whose best window is below this are dropped (the matcher's default)."""
CHUNK_S = 60.0
"""Audio fingerprinted at once: bounds the spectrogram's memory."""
DEFAULT_MAX_SECONDS = 4 * 3600.0
"""Longest recording accepted by default (the decoded signal is held in memory)."""
MIN_SCREEN_VOTES = 20
"""Exact-code votes (:func:`acr.matching.best_vote`) a warp needs in a window's
screen to be looked up in full and aligned. It only saves work: a warped
window still needs its penalised confidence and a second window on its line.
See "Continuous monitoring" in ``docs/matching.md`` for the measurement."""

_CONTEXT_FRAMES = 64
"""Frames of audio added on each side of a chunk: more than the masking trace
looks back (20 frames) and a pair looks ahead (40 frames)."""
_BLOCK_WINDOWS = 30
"""Windows whose hits are looked up together (one minute at the default hop)."""
_LINE_TOLERANCE_FRAMES = 6.0
"""How far (frames) a window's offset may stray from the line of the segment it joins."""
_DRIFT_PER_FRAME = 0.006
"""Allowed offset drift per elapsed frame between windows: a bit more than the
matcher's scale step (0.005), by which two windows' speeds may differ."""
_CONTINUE_SHARE = 0.5
"""Share of a window's best code hits that an open segment's line must get
through the window to continue the segment (see :meth:`_Chain.extend`)."""
_TRACK_WINDOWS = 15
"""Windows (30 s) through which a segment's line is fitted while it is followed."""
_MIN_FOLLOW_INLIERS = 12
"""Code hits on a segment's known line that continue it without a full alignment."""
_MAX_MISSING_WINDOWS = 2
"""A segment survives this many unconfident windows in a row (a noise burst)."""
_EDGE_INLIER_FRAMES = 2.0
"""Half-width (frames) of the line on which edge hits count."""
_EDGE_MIN_HITS = 3
"""Fewer hits on the line near an edge than this: keep the windows' own edge."""
_EDGE_DENSITY_SHARE = 0.5
"""Share of a piece's density of matching anchors that a stretch at its edge
must reach to be counted in (see :func:`_edge`)."""
_DENSITY_SPAN_FRAMES = 125
"""Stretch (2 s) over which a piece's density of matching anchors is measured."""
_MIN_SLOPE_BASELINE_FRAMES = 125
"""Window centres must span this many frames (2 s) before a slope is fitted."""
_START_BIAS_FRAMES = 0.0
"""Frames subtracted from the first matching anchor to estimate a start."""
_END_BIAS_FRAMES = 16.0
"""Frames added after the last matching anchor to estimate an end: pairs anchored
in the last fraction of a second pair with peaks past the end and cannot match."""


@dataclass(frozen=True)
class Segment:
    """A stretch of the recording identified as one reference.

    Attributes
    ----------
    start_s, end_s : float
        The stretch ``[start_s, end_s)``, in seconds of the recording.
    content_id, title : str
        The reference.
    offset_s : float
        Position in the reference (its time base) heard at ``start_s``.
    confidence : float
        Confidence of the best window of the segment (the matcher's calibrated
        per-query confidence; the segment, which several windows agree on, is
        more certain than that).
    speed : float
        Tempo relative to the reference (1.02 = 2 % fast): reference seconds
        per second of the recording.
    pitch : float
        Frequency factor relative to the reference: the speed for a piece
        played fast or slow, 1.0 for one time-stretched with its pitch kept.
    score : int
        Code hits on the segment's line, summed over its windows.
    windows : int
        Confident windows that agree on the segment.
    """

    start_s: float
    end_s: float
    content_id: str
    title: str
    offset_s: float
    confidence: float
    speed: float
    pitch: float
    score: int
    windows: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "content_id": self.content_id,
            "title": self.title,
            "offset_s": round(self.offset_s, 3),
            "confidence": round(self.confidence, 4),
            "speed": round(self.speed, 4),
            "pitch": round(self.pitch, 4),
            "score": self.score,
            "windows": self.windows,
        }


@dataclass(frozen=True)
class Timeline:
    """What played when in a recording.

    Attributes
    ----------
    segments : list of Segment
        Identified stretches in time order, disjoint.
    duration_s : float
        Length of the recording.
    codes : int
        Query codes of the recording.
    windows : int
        Windows matched.
    elapsed_s : float
        Wall time of the monitoring, decoding included.
    """

    segments: list[Segment]
    duration_s: float
    codes: int
    windows: int
    elapsed_s: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def gaps(self) -> list[tuple[float, float]]:
        """Stretches ``[start, end)`` where no segment was found (at least 10 ms)."""
        edges = [0.0, *itertools.chain.from_iterable((s.start_s, s.end_s) for s in self.segments)]
        edges.append(self.duration_s)
        return [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= 0.01]

    @property
    def speed_x_realtime(self) -> float:
        return self.duration_s / max(self.elapsed_s, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration_s": round(self.duration_s, 3),
            "segments": [s.to_dict() for s in self.segments],
            "gaps": [[round(a, 3), round(b, 3)] for a, b in self.gaps],
            "codes": self.codes,
            "windows": self.windows,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass(frozen=True)
class _Record:
    """What the timeline needs to know of a reference."""

    content_id: str
    title: str
    frames: int


@dataclass(frozen=True)
class _View:
    """A window's hits under one warp.

    Attributes
    ----------
    hits : Hits
        Query frames warped and counted from the window's start, as
        :func:`acr.matching.align` takes them.
    warp : Warp
        The warp the window's codes were looked up under.
    residue : float
        The window's start in warped frames less the whole frames taken off
        ``hits`` (the fraction the rounding left).
    """

    hits: Hits
    warp: Warp
    residue: float

    @property
    def frames(self) -> NDArray[np.float64]:
        """The hits' query frames in the recording's time base, from the window's start."""
        return np.asarray((self.hits.query_frames - self.residue) / self.warp.tempo, np.float64)

    def unwarped(self, alignment: Alignment) -> Alignment:
        """An alignment of :attr:`hits` in the recording's frames, from the window's start."""
        # ref = offset + scale·h and h = tempo·q + residue: the offset takes the residue.
        return replace(
            _unwarped(alignment, self.warp),
            offset_frames=alignment.offset_frames + alignment.scale * self.residue,
        )


class _Block:
    """A block of windows' codes and their hits, looked up once per warp asked for."""

    def __init__(self, fingerprints: Fingerprints, lookup: Lookup, lo: int, hi: int) -> None:
        a, b = np.searchsorted(fingerprints.frames.astype(np.int64), [lo, hi])
        self._codes = fingerprints.codes[a:b]
        self._frames = fingerprints.frames[a:b]
        self._lookup = lookup
        self._hits: dict[tuple[Warp, bool], Hits] = {}

    def window(self, start: int, length: int, warp: Warp, *, exact: bool = False) -> _View:
        """The hits of the window ``[start, start + length)`` under ``warp``.

        ``exact`` keeps exact code matches only (the screen's lookup).
        """
        if (warp, exact) not in self._hits:
            codes, frames = warp_codes(self._codes, self._frames, warp)
            self._hits[warp, exact] = self._lookup.search(
                codes, frames, max_flips=0 if exact else 1
            )
        hits = self._hits[warp, exact]
        # Codes come in frame order, warped frames too, and the lookup keeps their order.
        shift = round(start * warp.tempo)
        i, j = np.searchsorted(hits.query_frames, [shift, round((start + length) * warp.tempo)])
        window = Hits(hits.query_frames[i:j] - shift, hits.keys[i:j], hits.ref_frames[i:j])
        return _View(window, warp, start * warp.tempo - shift)


@dataclass
class _Chain:
    """Confident windows that agree on one content and time line."""

    key: int
    alignments: list[tuple[int, Alignment]]
    """(window start frame, alignment in the recording's frames from the window's start),
    in window order."""
    warp: Warp = IDENTITY
    """The warp under which the chain's first window was found and the chain is followed."""

    @property
    def last_start(self) -> int:
        return self.alignments[-1][0]

    def predicts(self, start: int, alignment: Alignment) -> bool:
        """Whether a window starting at ``start`` lies on this chain's line."""
        intercept, slope = self.line(_TRACK_WINDOWS)
        elapsed = start - self.last_start
        tolerance = _LINE_TOLERANCE_FRAMES + _DRIFT_PER_FRAME * elapsed
        return abs(alignment.offset_frames - (intercept + slope * start)) <= tolerance

    def typical_inliers(self) -> int:
        """Median code hits of the chain's last few windows."""
        return int(np.median([a.inliers for _, a in self.alignments[-5:]]))

    def extend(
        self, start: int, view: _View, reference: int, best: Alignment | None = None
    ) -> Alignment | None:
        """This chain's line through the window starting at ``start``.

        ``view`` holds the window's hits under the chain's warp. Returns an
        alignment on the chain's line when the window's hits on it
        reach :data:`_CONTINUE_SHARE` of ``reference`` code hits (the window's
        best alignment, or the chain's typical window), else None. A line
        given in advance needs no search over offsets, so even
        :data:`_MIN_FOLLOW_INLIERS` hits on it are far beyond chance.
        """
        intercept, slope = self.line(_TRACK_WINDOWS)
        offset = intercept + slope * start
        hits = view.hits
        mine = hits.keys == self.key
        q = view.frames[mine]
        residual = hits.ref_frames[mine] - (offset + slope * q)
        near = np.abs(residual) <= 2 * INLIER_FRAMES
        if np.count_nonzero(near) < _MIN_FOLLOW_INLIERS:
            return None
        # Follow the piece's own timing: re-centre the line on this window's hits.
        offset += float(np.median(residual[near]))
        agree = np.abs(hits.ref_frames[mine] - (offset + slope * q)) <= INLIER_FRAMES
        inliers = int(np.count_nonzero(agree))
        if inliers < max(_MIN_FOLLOW_INLIERS, _CONTINUE_SHARE * reference):
            return None
        frames = q[agree]
        known = self.alignments[-1][1] if best is None else best
        # Evidence in proportion to the code hits, as a searched alignment would
        # have; conservative, since this line was not searched for.
        evidence = known.evidence * inliers / max(known.inliers, 1)
        return Alignment(
            key=self.key,
            offset_frames=offset,
            scale=slope,
            inliers=inliers,
            query_start_frame=round(frames.min()),
            query_end_frame=round(frames.max()),
            evidence=evidence,
            confidence=confidence_from_evidence(evidence),
            pitch=known.pitch,
        )

    def line(self, recent: int | None = None) -> tuple[float, float]:
        """``(intercept, slope)`` of ``reference frame = intercept + slope · recording frame``.

        Fitted through the centre of each window's alignment (the last
        ``recent`` windows, or all), weighted by its code hits: over a long
        segment this pins the speed far finer than the matcher's scale grid.
        """
        chosen = self.alignments if recent is None else self.alignments[-recent:]
        q = np.array([s + 0.5 * (a.query_start_frame + a.query_end_frame) for s, a in chosen])
        r = np.array(
            [
                a.offset_frames + a.scale * 0.5 * (a.query_start_frame + a.query_end_frame)
                for _, a in chosen
            ]
        )
        w = np.array([float(a.inliers) for _, a in chosen])
        if np.ptp(q) < _MIN_SLOPE_BASELINE_FRAMES:
            # Too short a baseline to fit a slope: keep the best window's scale.
            best = max(chosen, key=lambda item: item[1].inliers)[1]
            slope = best.scale
        else:
            qm = float(np.average(q, weights=w))
            rm = float(np.average(r, weights=w))
            slope = float(np.sum(w * (q - qm) * (r - rm)) / np.sum(w * (q - qm) ** 2))
        intercept = float(np.average(r - slope * q, weights=w))
        return intercept, slope


def fingerprint_recording(
    samples: NDArray[np.float32], *, chunk_s: float = CHUNK_S
) -> Fingerprints:
    """Query fingerprints of a long signal, computed a chunk at a time.

    Parameters
    ----------
    samples : ndarray of float32, shape (n,)
        Mono audio at :data:`acr.signals.audio.SAMPLE_RATE`.
    chunk_s : float
        Audio fingerprinted at once; each chunk also sees
        :data:`_CONTEXT_FRAMES` of audio on either side, and keeps only the codes
        anchored in its own stretch.

    Returns
    -------
    Fingerprints
        Codes ordered by frame, frames counted from the start of ``samples``.
    """
    chunk_frames = max(1, round(chunk_s / HOP_S))
    total_frames = samples.shape[0] // HOP
    codes: list[NDArray[np.uint32]] = []
    frames: list[NDArray[np.uint32]] = []
    for first in range(0, max(total_frames, 1), chunk_frames):
        begin = max(0, first - _CONTEXT_FRAMES)
        stop = first + chunk_frames + _CONTEXT_FRAMES
        piece = fingerprint_query(samples[begin * HOP : stop * HOP])
        absolute = piece.frames.astype(np.int64) + begin
        own = (absolute >= first) & (absolute < first + chunk_frames)
        codes.append(piece.codes[own])
        frames.append(absolute[own].astype(np.uint32))
    return Fingerprints(
        kind="audio",
        codes=np.concatenate(codes) if codes else np.zeros(0, np.uint32),
        frames=np.concatenate(frames) if frames else np.zeros(0, np.uint32),
        hop_s=HOP_S,
        duration_s=samples.shape[0] / SAMPLE_RATE,
    )


def monitor(
    index: Index,
    source: MediaSource,
    *,
    window_s: float = WINDOW_S,
    hop_s: float = WINDOW_HOP_S,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    warps: bool = True,
) -> Timeline:
    """Match a long recording against an index into a timeline of segments.

    Parameters
    ----------
    index : Index
        The references.
    source : str, os.PathLike, bytes or binary file object
        The recording, in any format :func:`acr.signals.audio.decode.decode_audio` reads.
    window_s, hop_s : float
        Length and spacing of the matching windows (:data:`WINDOW_S`, :data:`WINDOW_HOP_S`).
    min_confidence : float
        Segments whose best window is less confident are not reported.
    max_seconds : float or None
        Longest accepted recording (its decoded signal is held in memory).
    warps : bool
        Search speed, pitch and tempo changes beyond the matcher's own few per
        cent where the plain lookup is unsure.

    Returns
    -------
    Timeline

    Raises
    ------
    acr.errors.MediaError
        The recording cannot be decoded, is too long, too short or silent.
    """
    started = time.perf_counter()
    samples = decode_audio(source, sample_rate=SAMPLE_RATE, max_seconds=max_seconds)
    ensure_audible(samples, sample_rate=SAMPLE_RATE)
    decoded = time.perf_counter()
    fingerprints = fingerprint_recording(samples)
    del samples
    fingerprinted = time.perf_counter()
    timeline = _index_timeline(
        index,
        fingerprints,
        window_s=window_s,
        hop_s=hop_s,
        min_confidence=min_confidence,
        warps=warps,
    )
    done = time.perf_counter()
    return Timeline(
        segments=timeline.segments,
        duration_s=fingerprints.duration_s,
        codes=timeline.codes,
        windows=timeline.windows,
        elapsed_s=done - started,
        timings={
            "decode_s": decoded - started,
            "fingerprint_s": fingerprinted - decoded,
            "match_s": done - fingerprinted,
        },
    )


def _index_timeline(
    index: Index,
    fingerprints: Fingerprints,
    *,
    window_s: float,
    hop_s: float,
    min_confidence: float,
    warps: bool,
) -> Timeline:
    # The monitor is the index's second way of matching, beside
    # Index.match_fingerprints: it reads the same lookup and records.
    if index.readonly:
        index.refresh()
    records = {
        key: _Record(r.content_id, r.title, round(r.duration_s / fingerprints.hop_s))
        for key, r in index._records.items()
    }
    return timeline_from_fingerprints(
        fingerprints,
        index._lookup,
        records,
        window_s=window_s,
        hop_s=hop_s,
        min_confidence=min_confidence,
        warps=warps,
    )


def timeline_from_fingerprints(
    fingerprints: Fingerprints,
    lookup: Lookup,
    records: dict[int, _Record],
    *,
    window_s: float = WINDOW_S,
    hop_s: float = WINDOW_HOP_S,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    warps: bool = True,
) -> Timeline:
    """The timeline of a recording's query fingerprints.

    Parameters
    ----------
    fingerprints : Fingerprints
        Query codes of the whole recording (:func:`fingerprint_recording`).
    lookup : Lookup
        The index lookup (:class:`acr.search.Lookup`).
    records : dict
        Content id, title and length in frames of each reference key.
    window_s, hop_s, min_confidence : float
        As for :func:`monitor`.
    warps : bool
        As for :func:`monitor`.

    Returns
    -------
    Timeline
        Its ``elapsed_s`` covers this call only.
    """
    started = time.perf_counter()
    if not window_s > 0 or not hop_s > 0:
        raise ValueError(f"window and hop must be positive, got {window_s:g} and {hop_s:g}")
    window = max(1, round(window_s / fingerprints.hop_s))
    hop = max(1, round(hop_s / fingerprints.hop_s))
    total = max(1, round(fingerprints.duration_s / fingerprints.hop_s))

    def ref_frames(key: int) -> int:
        return records[key].frames

    n_references = max(1, len(records))
    chains: list[_Chain] = []
    open_chains: list[_Chain] = []
    still_open: list[_Chain]
    windows = 0
    for start, block in _windows(fingerprints, lookup, total, window, hop):
        windows += 1
        still_open = []
        for chain in open_chains:
            if start - chain.last_start > (_MAX_MISSING_WINDOWS + 1) * hop:
                chains.append(chain)
            else:
                still_open.append(chain)
        open_chains = still_open
        # Inside a piece, its line explains the window: checking that one line
        # costs a fraction of a full alignment (measured: 0.3 ms against 10 ms).
        followed = next(
            (
                (chain, on_line)
                for chain in open_chains
                if (
                    on_line := chain.extend(
                        start, block.window(start, window, chain.warp), chain.typical_inliers()
                    )
                )
                is not None
            ),
            None,
        )
        if followed is not None:
            followed[0].alignments.append((start, followed[1]))
            continue
        found = _window_alignment(block, start, window, ref_frames, n_references, warps=warps)
        if found is None:
            continue
        alignment, warp = found
        home = next(
            (c for c in open_chains if c.key == alignment.key and c.predicts(start, alignment)),
            None,
        )
        if home is not None:
            home.alignments.append((start, alignment))
            continue
        # Looping music matches itself at several offsets equally well; a window
        # that also supports an open segment's line continues that segment
        # rather than starting a new one at a repeat.
        extended = False
        for chain in open_chains:
            view = block.window(start, window, chain.warp)
            on_line = chain.extend(start, view, alignment.inliers, alignment)
            if on_line is not None:
                chain.alignments.append((start, on_line))
                extended = True
                break
        if not extended:
            open_chains.append(_Chain(alignment.key, [(start, alignment)], warp))
    chains.extend(open_chains)

    kept = [
        c
        for c in chains
        if len(c.alignments) >= MIN_WINDOWS
        and max(a.confidence for _, a in c.alignments) >= min_confidence
    ]
    spans = [_refine(c, fingerprints, lookup, records[c.key].frames, window) for c in kept]
    spans = _resolve_overlaps(sorted(spans, key=lambda s: s.start))
    segments = [
        _to_segment(span, records[span.chain.key], fingerprints, lookup, n_references)
        for span in spans
        if span.end > span.start
    ]
    return Timeline(
        segments=segments,
        duration_s=fingerprints.duration_s,
        codes=len(fingerprints),
        windows=windows,
        elapsed_s=time.perf_counter() - started,
    )


def _windows(
    fingerprints: Fingerprints, lookup: Lookup, total: int, window: int, hop: int
) -> Iterator[tuple[int, _Block]]:
    """``(start frame, its block)`` for every window of the recording.

    Hits are looked up for a block of windows at a time, so memory stays
    bounded and each code is searched about once per warp.
    """
    last_start = max(0, total - window)
    starts = list(range(0, last_start + 1, hop))
    if starts[-1] != last_start:
        starts.append(last_start)  # the recording's tail gets a window too
    for first in range(0, len(starts), _BLOCK_WINDOWS):
        chosen = starts[first : first + _BLOCK_WINDOWS]
        block = _Block(fingerprints, lookup, chosen[0], chosen[-1] + window)
        for start in chosen:
            yield start, block


def _window_alignment(
    block: _Block,
    start: int,
    window: int,
    ref_frames: Callable[[int], int],
    n_references: int,
    *,
    warps: bool,
) -> tuple[Alignment, Warp] | None:
    """The window's best confident alignment (recording frames) and the warp it was found under.

    The rule of :func:`acr.search.identify`: the window is aligned as it is;
    when that leaves it unsure (nothing confident, or a line tilted by
    :data:`~acr.search.TILTED_SCALE` or more), every warp is screened on exact
    code matches, the best few that reach :data:`MIN_SCREEN_VOTES` are aligned
    in full, and the best of those, less the warp penalty, wins if it beats
    the plain alignment.
    """

    def best(view: _View) -> Alignment | None:
        ranked = align(
            view.hits,
            query_frames=max(1, round(window * view.warp.tempo)),
            ref_frames=ref_frames,
            n_references=n_references,
            top_k=1,
            min_confidence=WINDOW_MIN_CONFIDENCE if view.warp.is_identity else 0.0,
        )
        return view.unwarped(ranked[0]) if ranked else None

    plain = best(block.window(start, window, IDENTITY))
    found = None if plain is None else (plain, IDENTITY)
    if not warps or (plain is not None and abs(plain.scale - 1.0) < TILTED_SCALE):
        return found
    screened: list[tuple[int, Warp]] = []
    for warp in WARPS:
        votes = best_vote(block.window(start, window, warp, exact=True).hits)
        if votes >= MIN_SCREEN_VOTES:
            screened.append((votes, warp))
    screened.sort(key=lambda item: item[0], reverse=True)
    for _, warp in screened[:SHORTLIST]:
        warped = best(block.window(start, window, warp))
        if warped is None:
            continue
        penalized = _penalized(warped)
        if penalized.confidence >= WINDOW_MIN_CONFIDENCE and (
            found is None or penalized.evidence > found[0].evidence
        ):
            found = (penalized, warp)
    return found


@dataclass
class _Span:
    """A chain with its refined edges, in recording frames."""

    chain: _Chain
    start: float
    end: float
    intercept: float
    slope: float
    first_hit: float
    last_hit: float


def _refine(
    chain: _Chain, fingerprints: Fingerprints, lookup: Lookup, ref_length: int, window: int
) -> _Span:
    """Edges of a chain's segment from the hits on its line near its first and last windows."""
    intercept, slope = chain.line()
    first_window = chain.alignments[0][0]
    last_window = chain.last_start
    # The piece may begin up to a window before the first window that saw it.
    start = _edge(
        fingerprints,
        lookup,
        chain,
        intercept,
        slope,
        first_window - window,
        first_window + window,
        first=True,
    )
    end = _edge(
        fingerprints,
        lookup,
        chain,
        intercept,
        slope,
        last_window,
        last_window + 2 * window,
        first=False,
    )
    if start is None:
        start = float(first_window)
    if end is None:
        end = float(last_window + window)
    first_hit, last_hit = start, end
    start -= _START_BIAS_FRAMES
    end += 1.0 + _END_BIAS_FRAMES
    # A recording cannot be heard outside itself.
    start = max(start, -intercept / slope, 0.0)
    end = min(end, (ref_length - intercept) / slope, fingerprints.duration_s / fingerprints.hop_s)
    return _Span(chain, start, end, intercept, slope, first_hit, last_hit)


def _edge(
    fingerprints: Fingerprints,
    lookup: Lookup,
    chain: _Chain,
    intercept: float,
    slope: float,
    lo: int,
    hi: int,
    *,
    first: bool,
) -> float | None:
    """The first (or last) anchor frame of the piece within ``[lo, hi)``.

    The anchors whose hits lie on the segment's line are dense inside the piece
    and rare outside it (chance collisions). The edge is the change point that
    maximises "anchors inside minus :data:`_EDGE_DENSITY_SHARE` of the piece's
    own density times frames inside": a chance hit before the start (after the
    end) is taken in only if the stretch it adds is half as dense as the
    piece, so a lone collision half a second away does not move an edge. The
    codes are looked up under the chain's warp.
    """
    frames = fingerprints.frames.astype(np.int64)
    a, b = np.searchsorted(frames, [max(lo, 0), max(hi, 0)])
    if b <= a:
        return None
    codes, warped = warp_codes(fingerprints.codes[a:b], fingerprints.frames[a:b], chain.warp)
    hits = lookup.search(codes, warped)
    mine = hits.keys == chain.key
    q = hits.query_frames[mine] / chain.warp.tempo
    on_line = np.abs(hits.ref_frames[mine] - (intercept + slope * q)) <= _EDGE_INLIER_FRAMES
    q = np.unique(q[on_line]).astype(np.float64)
    if q.size < _EDGE_MIN_HITS:
        return None
    # Density of the piece: that of the densest stretch of the range, which lies inside it.
    densest = int(np.max(np.searchsorted(q, q + _DENSITY_SPAN_FRAMES) - np.arange(q.size)))
    rate = _EDGE_DENSITY_SHARE * densest / _DENSITY_SPAN_FRAMES
    rank = np.arange(q.size, dtype=np.float64)
    # Start at q[i]: anchors kept n - i, frames kept hi - q[i]; end at q[j]: j + 1 and q[j] - lo.
    gain = rate * q - rank if first else rank - rate * q
    return float(q[int(np.argmax(gain))])


def _resolve_overlaps(spans: list[_Span]) -> list[_Span]:
    """Make abutting or overlapping segments disjoint.

    Where two segments overlap (an edge estimate overshot, or a window
    straddling two pieces chained onto both), the boundary goes midway between
    the two edge estimates. Of two segments sharing most of their stretch,
    only the better supported one is kept.
    """
    out: list[_Span] = []
    for span in spans:
        if out and span.start < out[-1].end:
            before = out[-1]
            shared = min(span.end, before.end) - span.start
            if shared >= 0.5 * min(span.end - span.start, before.end - before.start):
                # Mostly the same stretch: a repeat of looping music, or a
                # window that straddled two pieces. The better supported wins.
                if _score(span) > _score(before):
                    out[-1] = span
                continue
            boundary = 0.5 * (before.end + span.start)
            before.end = boundary
            span.start = boundary
        out.append(span)
    return out


def _score(span: _Span) -> int:
    return sum(a.inliers for _, a in span.chain.alignments)


def _to_segment(
    span: _Span, record: _Record, fingerprints: Fingerprints, lookup: Lookup, n_references: int
) -> Segment:
    chain = span.chain
    hop_s = fingerprints.hop_s
    return Segment(
        start_s=span.start * hop_s,
        end_s=span.end * hop_s,
        content_id=record.content_id,
        title=record.title,
        offset_s=(span.intercept + span.slope * span.start) * hop_s,
        confidence=max(a.confidence for _, a in chain.alignments),
        speed=span.slope,
        pitch=_pitch(span, record, fingerprints, lookup, n_references),
        score=_score(span),
        windows=len(chain.alignments),
    )


def _pitch(
    span: _Span, record: _Record, fingerprints: Fingerprints, lookup: Lookup, n_references: int
) -> float:
    """The segment's pitch factor, as :func:`acr.search.identify` reports a sample's.

    Under a speed warp pitch and tempo changed together, so the pitch is the
    measured speed; otherwise the segment's codes are warped to its tempo and
    shifted band by band until most meet its line (``acr.search._measured_pitch``).
    """
    chain = span.chain
    if chain.warp.coupled:
        return span.slope
    first = max(0, int(np.ceil(span.start)))
    frames = fingerprints.frames.astype(np.int64)
    a, b = np.searchsorted(frames, [first, span.end])
    piece = Fingerprints(
        kind=fingerprints.kind,
        codes=fingerprints.codes[a:b],
        frames=(frames[a:b] - first).astype(np.uint32),
        hop_s=fingerprints.hop_s,
        duration_s=(span.end - first) * fingerprints.hop_s,
    )
    best = max((a for _, a in chain.alignments), key=lambda a: a.evidence)
    line = replace(
        best,
        offset_frames=span.intercept + span.slope * first,
        scale=span.slope,
        pitch=chain.warp.pitch,
    )
    query = Query(piece, lookup, lambda _: record.frames, n_references)
    return _measured_pitch(line, query)
