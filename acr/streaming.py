"""Early answers for streamed audio: fingerprint chunks as they arrive, answer when sure.

A viewer app streams what its microphone hears; :class:`StreamMatcher` keeps the
query fingerprints of everything heard so far up to date at a cost proportional
to each chunk (:class:`IncrementalFingerprinter`), looks the sample up on a fixed
schedule (every :data:`LOOK_INTERVAL_S` of audio from :data:`FIRST_LOOK_S` on) and
answers at the first look whose evidence passes the threshold. After
:data:`MAX_SECONDS` it gives up.

Looking many times is multiple testing: a sample of unknown music gets a chance
to cross the threshold at every look. The threshold is therefore raised by
``log10(K)`` evidence units, ``K`` being the number of looks the schedule plans
(a Bonferroni correction over looks, on the evidence's own −log10 scale), and
confidences are reported after that correction, so the one-shot threshold keeps
its meaning. A look whose plain lookup is unsure also searches speed, pitch and
tempo warps (:func:`acr.search.identify`, whose warp penalty then applies on top
of the look correction), at most once per :data:`WARP_INTERVAL_S` of audio, at
the final look, and at any look that would answer on a tilted line. See
"Streaming" in ``docs/matching.md`` for the measurements.

Incremental fingerprints equal the batch ones except for one global quantity:
the level floor of peak picking (the signal's mean log power, or 70 dB below its
loudest bin), which the batch takes over the whole sample. The stream takes it,
for each one-second block of peaks, over the audio up to the end of that block,
so it never changes once decided; a look's provisional last block uses
everything heard. Before the first block is final (about 1 s) the stream's
fingerprints are exactly the batch fingerprints of the prefix heard.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import soxr
from numpy.typing import NDArray
from scipy.special import expit, logit

from acr.matching import (
    CONFIDENCE_MIDPOINT,
    CONFIDENCE_SLOPE,
    DEFAULT_MIN_CONFIDENCE,
)
from acr.results import Match, MatchResult
from acr.search import TILTED_SCALE
from acr.signals.audio import KIND, QUERY_FANOUT, QUERY_PEAKS_PER_SECOND
from acr.signals.audio.codes import MAX_DT_FRAMES, pair_codes
from acr.signals.audio.peaks import (
    BLOCK_FRAMES,
    MASK_FRAMES,
    MAX_BIN,
    MIN_BIN,
    NEIGHBOURHOOD,
    SILENCE_DB_BELOW_MAX,
    Peaks,
    peaks_in,
)
from acr.signals.audio.spectrogram import HOP, HOP_S, SAMPLE_RATE, log_spectrogram
from acr.signals.base import Fingerprints

FIRST_LOOK_S = 0.5
"""The first look: the shortest sample the one-shot matcher accepts."""
LOOK_INTERVAL_S = 0.25
"""Audio between looks. Finer looks answer sooner by at most this much but cost a
larger correction (``log10`` of the number of looks) and more lookups."""
MAX_SECONDS = 10.0
"""Give up after this much audio; the one-shot benchmark's 5 s and 10 s samples
already reach 97 % and 99 % top-1 over every degradation."""
WARP_INTERVAL_S = 0.5
"""Audio between looks that may search speed, pitch and tempo warps (:mod:`acr.search`).

A warp search costs thirty-odd lookups, more than the plain look, and is
made only when the plain look is unsure, which for a stream that is never
answered is every look. On the streaming benchmark's quick run, clips played
5 % fast or slow, time-stretched or pitch-shifted were answered by a p90 of
1.3 s of audio with warps at every look, 1.5 s at one every 0.5 s and 2.0 s at
one a second, for 3.3, 1.8 and 1 times the server work per second of audio.
See "Streaming" in ``docs/matching.md``."""

_RESAMPLE_QUALITY = "HQ"
"""As :func:`acr.signals.audio.decode.resample`, so streamed and uploaded PCM agree."""
_BAND = slice(MIN_BIN - 1, MAX_BIN + 1)
"""Spectrogram bins that peak picking looks at (as :func:`~acr.signals.audio.peaks.find_peaks`)."""
_FLOOR_BELOW_MAX = SILENCE_DB_BELOW_MAX / 10.0 * float(np.log(10.0))
_CONTEXT_FRAMES = MASK_FRAMES + NEIGHBOURHOOD[0] // 2
"""Frames before a block that its peaks depend on: the masking trace's reach."""
_LOOKAHEAD_FRAMES = NEIGHBOURHOOD[0] // 2
"""Frames after a block that its peaks depend on: the local-maximum neighbourhood."""
_SILENCE_RMS = 10.0 ** (-60.0 / 20.0)
"""As :func:`~acr.signals.audio.decode.ensure_audible`: below −60 dBFS is silence."""


# -- evidence and the look correction ---------------------------------------------------------


def evidence_from_confidence(confidence: float) -> float:
    """Invert :func:`acr.matching.confidence_from_evidence` (±inf at 0 and 1)."""
    return float(CONFIDENCE_MIDPOINT + CONFIDENCE_SLOPE * logit(confidence))


@dataclass(frozen=True)
class LookPlan:
    """When a stream is looked up, and so how much the threshold is raised.

    Attributes
    ----------
    first_s : float
        Audio heard at the first look.
    interval_s : float
        Audio between scheduled looks.
    max_s : float
        Audio after which the stream ends (a last look covers what remains).
    """

    first_s: float = FIRST_LOOK_S
    interval_s: float = LOOK_INTERVAL_S
    max_s: float = MAX_SECONDS

    def __post_init__(self) -> None:
        if not (0 < self.first_s <= self.max_s and self.interval_s > 0):
            raise ValueError("need 0 < first_s <= max_s and interval_s > 0")

    @property
    def looks(self) -> int:
        """Most looks a stream can take: every scheduled one, plus the final one."""
        return math.floor((self.max_s - self.first_s) / self.interval_s + 1e-9) + 2

    @property
    def penalty(self) -> float:
        """Evidence added to the threshold: ``log10(looks)`` (Bonferroni over looks)."""
        return math.log10(self.looks)

    def look_time(self, k: int) -> float:
        """Audio heard at scheduled look ``k`` (0-based)."""
        return self.first_s + k * self.interval_s


def corrected_confidence(confidence: float, penalty: float) -> float:
    """The confidence of a look's evidence less the look ``penalty`` (evidence units)."""
    if penalty == 0.0 or confidence in (0.0, 1.0):
        return confidence
    return float(expit(logit(confidence) - penalty / CONFIDENCE_SLOPE))


def raw_threshold(min_confidence: float, penalty: float) -> float:
    """The uncorrected confidence a look must reach for ``min_confidence`` after correction."""
    if min_confidence <= 0.0 or min_confidence >= 1.0:
        return min_confidence
    return float(expit(logit(min_confidence) + penalty / CONFIDENCE_SLOPE))


# -- incremental fingerprints -----------------------------------------------------------------


def _join(a: Peaks, b: Peaks) -> Peaks:
    return Peaks(
        np.concatenate([a.frames, b.frames]),
        np.concatenate([a.hz, b.hz]),
        np.concatenate([a.strength, b.strength]),
    )


def _from(peaks: Peaks, frame: int) -> Peaks:
    """The peaks at or after ``frame`` (peaks are sorted by frame)."""
    start = int(np.searchsorted(peaks.frames, frame, side="left"))
    return Peaks(peaks.frames[start:], peaks.hz[start:], peaks.strength[start:])


_NO_PEAKS = Peaks(
    np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)
)


class IncrementalFingerprinter:
    """Query fingerprints of a signal that arrives in chunks.

    Each :meth:`push` resamples the chunk to the working rate (soxr's streaming
    resampler), computes only the spectrogram frames it completes, and settles
    the peaks of every one-second block whose neighbourhood is complete and the
    codes of every anchor whose pairing zone is settled. :meth:`fingerprints`
    adds, on demand, the provisional peaks and codes of the unsettled tail (at
    most about two seconds, whatever the length of the stream), computed as the
    batch fingerprinter would at the end of a signal.

    Parameters
    ----------
    sample_rate : int
        Rate of the pushed PCM.
    level : tuple of float, optional
        ``(mean, max)`` log power of the band, fixed instead of taken from the
        audio heard so far. With the whole signal's values the result equals
        :func:`acr.signals.audio.fingerprint_query` exactly (a test hook), in
        its one pass: a stream is not fingerprinted a second time half a hop
        in while it is short, as a short one-shot sample is.
    """

    def __init__(self, sample_rate: int, *, level: tuple[float, float] | None = None) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self._resampler: Any = (
            None
            if sample_rate == SAMPLE_RATE
            else soxr.ResampleStream(
                sample_rate, SAMPLE_RATE, 1, dtype="float32", quality=_RESAMPLE_QUALITY
            )
        )
        self._level = level
        self._reference = level[0] if level is not None else 0.0
        self._samples = np.zeros(0, dtype=np.float32)
        """Working-rate samples from the start of the next frame on."""
        self._n_samples = 0
        self._n_frames = 0
        self._band = np.zeros((0, _BAND.stop - _BAND.start), dtype=np.float32)
        self._band_start = 0
        """Frame of ``_band``'s first row."""
        self._row_sum: list[float] = []
        """Cumulative sum of band log power over frames ``[0, t]``."""
        self._row_max: list[float] = []
        """Running maximum of band log power over frames ``[0, t]``."""
        self._settled_blocks = 0
        self._open_peaks = _NO_PEAKS
        """Settled peaks at or after ``_settled_anchor`` (still needed as pair targets)."""
        self._settled_anchor = 0
        """Codes of anchors before this frame are settled."""
        self._codes: list[NDArray[np.uint32]] = []
        self._frames: list[NDArray[np.uint32]] = []
        self._closed = False

    @property
    def duration_s(self) -> float:
        """Audio received so far, at the working rate."""
        return self._n_samples / SAMPLE_RATE

    def push(self, pcm: NDArray[np.floating[Any]]) -> None:
        """Add a chunk of mono samples (float, in [-1, 1]) at :attr:`sample_rate`."""
        if self._closed:
            raise ValueError("the stream is finished")
        chunk = np.ascontiguousarray(pcm, dtype=np.float32).reshape(-1)
        if self._resampler is not None:
            chunk = np.asarray(self._resampler.resample_chunk(chunk, last=False), np.float32)
        self._add(chunk)

    def finish(self) -> Fingerprints:
        """Flush the resampler and return the fingerprints of the whole stream."""
        if not self._closed:
            if self._resampler is not None:
                empty = np.zeros(0, dtype=np.float32)
                self._add(np.asarray(self._resampler.resample_chunk(empty, last=True), np.float32))
            self._closed = True
        return self.fingerprints()

    def fingerprints(self) -> Fingerprints:
        """Settled codes plus the provisional codes of the tail, as of now."""
        tail = self._tail_peaks()
        codes, frames = pair_codes(_join(self._open_peaks, tail), fanout=QUERY_FANOUT)
        return Fingerprints(
            kind=KIND,
            codes=np.concatenate([*self._codes, codes]).astype(np.uint32),
            frames=np.concatenate([*self._frames, frames]).astype(np.uint32),
            hop_s=HOP_S,
            duration_s=self.duration_s,
        )

    # -- internals --------------------------------------------------------------------------

    def _add(self, chunk: NDArray[np.float32]) -> None:
        self._n_samples += chunk.shape[0]
        self._samples = np.concatenate([self._samples, chunk])
        spectrum = log_spectrogram(self._samples)
        if spectrum.shape[0]:
            band = spectrum[:, _BAND]
            # Consumed samples are dropped; the next frame starts HOP after the last one.
            self._samples = self._samples[spectrum.shape[0] * HOP :]
            sums = np.cumsum(band.sum(axis=1, dtype=np.float64))
            maxima = np.maximum.accumulate(band.max(axis=1).astype(np.float64))
            base_sum = self._row_sum[-1] if self._row_sum else 0.0
            base_max = self._row_max[-1] if self._row_max else -np.inf
            self._row_sum.extend((sums + base_sum).tolist())
            self._row_max.extend(np.maximum(maxima, base_max).tolist())
            self._band = np.concatenate([self._band, band])
            self._n_frames += spectrum.shape[0]
        while self._n_frames >= (self._settled_blocks + 1) * BLOCK_FRAMES + _LOOKAHEAD_FRAMES:
            self._settle_block()

    def _floor(self, frames: int) -> float:
        """Level below which a bin is background, from the first ``frames`` frames."""
        if self._level is not None:
            mean, top = self._level
        else:
            mean = self._row_sum[frames - 1] / (frames * self._band.shape[1])
            top = self._row_max[frames - 1]
        return max(mean, top - _FLOOR_BELOW_MAX)

    def _settle_block(self) -> None:
        first = self._settled_blocks * BLOCK_FRAMES
        stop = first + BLOCK_FRAMES
        row0 = max(0, first - _CONTEXT_FRAMES)
        rows = self._band[row0 - self._band_start : stop + _LOOKAHEAD_FRAMES - self._band_start]
        peaks = peaks_in(
            rows,
            floor=self._floor(stop),
            reference=self._reference,
            peaks_per_second=QUERY_PEAKS_PER_SECOND,
            n_frames=stop,
            row0=row0,
            first=first,
            stop=stop,
        )
        self._open_peaks = _join(self._open_peaks, peaks)
        self._settled_blocks += 1
        # An anchor's pairs are settled once every peak within its pairing reach is.
        anchor_stop = stop - MAX_DT_FRAMES
        if anchor_stop > self._settled_anchor:
            codes, frames = pair_codes(self._open_peaks, fanout=QUERY_FANOUT)
            settled = frames < anchor_stop
            self._codes.append(codes[settled])
            self._frames.append(frames[settled])
            self._settled_anchor = anchor_stop
            self._open_peaks = _from(self._open_peaks, anchor_stop)
        # Keep only the band rows that the next block's context needs.
        keep_from = max(0, stop - _CONTEXT_FRAMES)
        self._band = self._band[keep_from - self._band_start :]
        self._band_start = keep_from

    def _tail_peaks(self) -> Peaks:
        first = self._settled_blocks * BLOCK_FRAMES
        if self._n_frames <= first:
            return _NO_PEAKS
        row0 = max(0, first - _CONTEXT_FRAMES)
        rows = self._band[row0 - self._band_start :]
        floor = self._floor(self._n_frames)
        return peaks_in(
            rows,
            floor=floor,
            reference=self._reference,
            peaks_per_second=QUERY_PEAKS_PER_SECOND,
            n_frames=self._n_frames,
            row0=row0,
            first=first,
            stop=self._n_frames,
        )


# -- the matcher ------------------------------------------------------------------------------


class Matcher(Protocol):
    """What a stream is looked up in: an :class:`~acr.index.store.Index` or a ``SharedIndex``."""

    def match_fingerprints(
        self,
        fingerprints: Fingerprints,
        *,
        top_k: int = 1,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        started: float | None = None,
        warps: bool = True,
    ) -> MatchResult: ...


@dataclass(frozen=True)
class Look:
    """One lookup of a stream: how much was heard and how good the best candidate was."""

    heard_s: float
    codes: int
    best_content_id: str | None
    best_evidence: float
    """Uncorrected evidence of the best candidate (−inf when there is none)."""
    elapsed_ms: float
    warps: bool = False
    """Whether this look could search warps (it does only when the plain lookup is unsure)."""


@dataclass
class StreamMatcher:
    """Identify a stream of PCM chunks as early as the evidence allows.

    Parameters
    ----------
    index : Matcher
        Where to look.
    sample_rate : int
        Rate of the pushed chunks.
    min_confidence : float
        The one-shot threshold; answers must reach it after the look correction.
    plan : LookPlan
        When to look and when to give up.
    top_k : int
        Confident candidates kept per look (the API falls back on the next one when
        the library no longer serves the best).
    level : tuple of float, optional
        Passed to :class:`IncrementalFingerprinter` (tests only).
    warp_interval_s : float
        Audio between looks that may search warps (:data:`WARP_INTERVAL_S`);
        the final look always may. ``math.inf``: only the final look.

    Examples
    --------
    >>> matcher = StreamMatcher(index, sample_rate=16000)   # doctest: +SKIP
    >>> for chunk in chunks:                                # doctest: +SKIP
    ...     if (match := matcher.push(chunk)) is not None:
    ...         break
    ... else:
    ...     match = matcher.finish()
    """

    index: Matcher
    sample_rate: int
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    plan: LookPlan = field(default_factory=LookPlan)
    top_k: int = 1
    level: tuple[float, float] | None = None
    warp_interval_s: float = WARP_INTERVAL_S
    looks: list[Look] = field(default_factory=list, init=False)
    candidates: list[Match] = field(default_factory=list, init=False)
    """Confident candidates of the last look, best first, confidences corrected."""
    answer: Match | None = field(default=None, init=False)
    """The first confident best candidate, once there is one."""
    done: bool = field(default=False, init=False)
    """No more audio is taken: maximum duration reached or :meth:`finish` called."""

    def __post_init__(self) -> None:
        self._fingerprinter = IncrementalFingerprinter(self.sample_rate, level=self.level)
        self._received = 0
        self._limit = round(self.plan.max_s * self.sample_rate)
        self._next_look = 0
        self._looked_at = -1
        self._sum = 0.0
        self._squares = 0.0
        self._raw_threshold = raw_threshold(self.min_confidence, self.plan.penalty)
        if not self.warp_interval_s > 0:
            raise ValueError(f"warp_interval_s must be positive, got {self.warp_interval_s:g}")
        self._next_warp_s = self.warp_interval_s

    @property
    def heard_s(self) -> float:
        """Audio received so far, in seconds."""
        return self._received / self.sample_rate

    @property
    def silent(self) -> bool:
        """Whether everything heard is digital silence or below −60 dBFS RMS."""
        if self._received == 0:
            return True
        mean = self._sum / self._received
        return math.sqrt(max(0.0, self._squares / self._received - mean * mean)) < _SILENCE_RMS

    def fingerprints(self) -> Fingerprints:
        """The query fingerprints of everything heard so far."""
        return self._fingerprinter.fingerprints()

    def push(self, pcm: NDArray[np.floating[Any]]) -> Match | None:
        """Add a chunk; return the best confident candidate if this chunk led to a look.

        The caller normally stops at the first answer; one that keeps pushing (for
        instance because it cannot serve that content) gets later looks, all within
        the planned number. Audio beyond the plan's ``max_s`` is ignored;
        reaching it runs :meth:`finish`.
        """
        if self.done:
            return None
        chunk = np.ascontiguousarray(pcm, dtype=np.float32).reshape(-1)
        chunk = chunk[: max(0, self._limit - self._received)]
        self._received += chunk.shape[0]
        block = chunk.astype(np.float64)
        self._sum += float(block.sum())
        # Not np.dot: a BLAS call, whose threads spin on a busy machine (8 ms, not 0.07).
        self._squares += float(np.einsum("i,i->", block, block))
        self._fingerprinter.push(chunk)
        if self._received >= self._limit:
            return self.finish()
        if self.heard_s + 1e-9 >= self.plan.look_time(self._next_look):
            # A large chunk may pass several scheduled looks: it is looked at once.
            while self.heard_s + 1e-9 >= self.plan.look_time(self._next_look):
                self._next_look += 1
            return self._look(self._fingerprinter.fingerprints())
        return None

    def finish(self) -> Match | None:
        """End the stream: a last look at whatever was not looked at yet."""
        if self.done:
            return None
        self.done = True
        fingerprints = self._fingerprinter.finish()
        if self._received == self._looked_at:
            return None
        if self.heard_s < self.plan.first_s:
            return None
        return self._look(fingerprints, final=True)

    def _look(self, fingerprints: Fingerprints, *, final: bool = False) -> Match | None:
        started = time.perf_counter()
        self._looked_at = self._received
        best_evidence = -math.inf
        best_id: str | None = None
        confident: list[Match] = []
        # Warps cost thirty-odd lookups where the look costs one: an unsure look
        # searches them only once enough new audio arrived since the last that could.
        warps = final or self.heard_s + 1e-9 >= self._next_warp_s
        if warps:
            # On a fixed grid, so that chunks that do not divide the interval do
            # not push every later warped look back.
            steps = math.floor(self.heard_s / self.warp_interval_s + 1e-9) + 1
            self._next_warp_s = steps * self.warp_interval_s
        if len(fingerprints):
            # Asked with no threshold: the best candidate's evidence is kept for the
            # benchmark's false-positive analysis; the threshold is applied here.
            # A warped candidate comes with the warp penalty already taken off.
            def ask(warped: bool) -> MatchResult:
                return self.index.match_fingerprints(
                    fingerprints,
                    top_k=max(1, self.top_k),
                    min_confidence=0.0,
                    started=started,
                    warps=warped,
                )

            result = ask(warps)
            top = result.matches[0] if result.matches else None
            if (
                not warps
                and top is not None
                and top.confidence >= self._raw_threshold
                and abs(top.speed - 1.0) >= TILTED_SCALE
            ):
                # An answer on a tilted line is searched under the warps first, as
                # identify does: the tilt fits part of the sample and misplaces the offset.
                warps = True
                result = ask(True)
            if result.matches:
                best_evidence = evidence_from_confidence(result.matches[0].confidence)
                best_id = result.matches[0].content_id
            confident = [
                replace(m, confidence=corrected_confidence(m.confidence, self.plan.penalty))
                for m in result.matches
                if m.confidence >= self._raw_threshold
            ]
        self.candidates = [m for m in confident if m.confidence >= self.min_confidence]
        self.looks.append(
            Look(
                heard_s=self.heard_s,
                codes=len(fingerprints),
                best_content_id=best_id,
                best_evidence=best_evidence,
                elapsed_ms=(time.perf_counter() - started) * 1000.0,
                warps=warps,
            )
        )
        best = self.candidates[0] if self.candidates else None
        if self.answer is None:
            self.answer = best
        return best
