"""Stage 6: the search — which lookups a query makes and which alignment wins.

A sample is looked up as it is first, on exact code matches alone (one probe
a code). A clear recording meets its reference in so many exact codes that
the alignment is beyond doubt there, and the search stops; otherwise the
codes are looked up again with their one-bit neighbours (24 probes a code,
about ten times the hits and the time). Most samples are the reference played
at its own speed, give or take the few per cent that the matcher's Hough
search absorbs, and are answered there. Only when that look finds nothing
confident is the sample warped (:mod:`acr.signals.audio.warp`): every
hypothesis of the grid — speed, pitch alone, tempo alone, up to ±10 % — is
looked up for exact code matches only (one probe a code instead of 25) and
scored by its strongest vote; the few best hypotheses are then looked up in
full and aligned like the sample itself.

Looking at many hypotheses gives chance more tries, so a warped alignment's
evidence is reduced by ``log10`` of the number of hypotheses (the same
Bonferroni correction, on the evidence's own scale, that the streaming
matcher applies to its looks).

The procedure only sees a :class:`Lookup`, so a sharded index that
concatenates the hits of its shards gets the single-node answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from acr.matching import (
    COARSE_BIN_FRAMES,
    DEFAULT_MIN_CONFIDENCE,
    INLIER_FRAMES,
    Alignment,
    Hits,
    best_per_reference,
    best_vote,
    candidate_alignments,
    confidence_from_evidence,
    nominate,
    segment_alignments,
)
from acr.signals.audio.codes import F1_BANDS_PER_OCTAVE
from acr.signals.audio.warp import IDENTITY, Warp, warp_codes, warp_grid
from acr.signals.base import Fingerprints

WARPS = warp_grid()
"""Hypotheses tried when the sample does not match as it is."""
SHORTLIST = 3
"""Hypotheses looked up in full after the exact-code screen."""
TILTED_SCALE = 0.015
"""A sample aligned at a scale this far from 1 is searched under the warps too:
a larger change fits the matcher's scales over part of the sample only, and
such a partial line gets the offset wrong by a fraction of a second."""
WARP_PENALTY = 10.0
"""Evidence taken off a warped alignment.

The best of many hypotheses is a maximum over many chance scores, and its
tail is heavier than ``log10`` of the number tried would correct. On 1,551
clips of never-indexed music (``python -m benchmarks.warp_penalty``; clip
positions and seed disjoint from the benchmark's negatives) the best warped
evidence exceeded the plain one by 5.4 at the 99th percentile and 9.2 at the
99.9th. Without warps 5 clips crossed the default threshold; with warps 11
under the Bonferroni ``log10(29)``, 7 under a penalty of 8, and 6 under 10 or
12: 10 is the least penalty that a larger one does not improve on."""
DECISIVE_EVIDENCE = 64.0
"""Evidence of an exact-code alignment at which the full lookup is skipped.

Twice the strongest evidence any never-indexed negative of the benchmark has
reached (31.8, the full lookup's; exact codes give chance fewer hits still).
On the load benchmark's 122 excerpts of 5 s at 10 dB SNR, 86 ended the
search there (with the rival test below), every one naming the content the
full lookup named."""
DECISIVE_COVERAGE = 0.8
"""Share of the sample an exact-code alignment must span to end the search:
one that explains only part of it may leave a stretch to another reference."""
DECISIVE_RIVAL_RATIO = 0.5
"""The strongest other alignment of an exact-code answer that ends the search
has less than this share of its evidence.

Looping music repeats passages with small changes, and exact codes alone
cannot always tell the original from the repeat: both lines are genuine, and
the full lookup, with two to three times the hits on each, re-weighs them. On
the audio benchmark's run of 2026-11-26 (ended 18:56 UTC), the exact look alone
moved 13 answers to a repeat; in the 9 of them re-examined, the rival had 0.64
to 1.0 of the chosen line's evidence. Half leaves a margin below that."""
PITCH_SEARCH_BANDS = 1
"""Band steps tried either side when measuring a match's pitch."""
GRID_PITCH_BANDS = max(abs(warp.pitch_bands) for warp in WARPS)
"""The largest pitch shift of the warp grid, in bands."""
HIT_BUDGET = 1 << 19
"""Most postings one lookup reads whole; a look whose probes hold more is
answered by nomination and verification (see :class:`Query`).

A code's postings grow with the indexed hours, so a query's hits (and the
time to vote over them) would grow linearly with the catalogue: about 1,500
exact hits per indexed hour for a 5 s sample, ten times that with the
one-bit neighbours. Over the budget, a look reads a sample of its rarest
probes (:func:`acr.index.lookup.rarest_probes`), nominates a few contents
from it and reads every posting those contents hold under its probes: the
work no longer grows with the catalogue, and a nominated reference is
aligned exactly as without a budget. Reading a look whole is cheaper than
nominating up to a few hundred thousand hits; the benchmark catalogue
(1.8 h) stays below (its largest look, a 10 s clip's codes with their
neighbours, holds about 200,000 postings), so its answers are unchanged.
``python -m benchmarks.scale`` measures the rest from 10 to 10,000 hours."""
NOMINATION_HITS = 1 << 16
"""Postings read, rarest probes first, to nominate contents when a look is over budget."""
NOMINEES = 4
"""Contents nominated by a look over budget, then read in full."""
SCREEN_BUDGET = 1 << 21
"""Postings the warp screen's exact looks share: each reads whole within its share.

Larger than :data:`HIT_BUDGET`, as it was before there were nominations:
the benchmark catalogue's screens stay whole (its largest, a 10 s clip's
exact codes under a warp, holds about 23,000 postings, below a 29th of it)."""
SCREEN_HITS = 1 << 18
"""Postings the warp screen's exact looks read together when they are over their share
of :data:`SCREEN_BUDGET` (the rarest probes of each)."""


class Lookup(Protocol):
    """What the search needs of an index: hits for codes, within a budget of hits.

    ``search`` reads, when the probes of ``codes`` hold more than
    ``max_hits`` postings, only the rarest probes, up to ``sample_hits``
    postings if given (else ``max_hits``), and marks the hits incomplete;
    ``search_contents`` returns the hits an unbudgeted ``search`` would,
    restricted to the contents ``keys``.
    """

    def search(
        self,
        codes: NDArray[np.uint32],
        frames: NDArray[np.uint32],
        *,
        max_flips: int = ...,
        max_hits: int | None = ...,
        sample_hits: int | None = ...,
    ) -> Hits: ...

    def search_contents(
        self,
        codes: NDArray[np.uint32],
        frames: NDArray[np.uint32],
        keys: NDArray[np.int64],
        *,
        max_flips: int = ...,
    ) -> Hits: ...


@dataclass(frozen=True)
class Identification:
    """The alignments of one sample, in its own time base.

    Attributes
    ----------
    ranked : list of Alignment
        Best first, one per reference, at most ``top_k``. Query frames and
        scales are those of the sample as recorded; ``scale`` is the total
        tempo (reference frames per sample frame) and ``pitch`` the frequency factor.
    pieces : list of Alignment
        Disjoint stretches of the sample explained by different references,
        in sample order (empty when nothing matched).
    query_frames : int
        Length of the sample in frames.
    """

    ranked: list[Alignment]
    pieces: list[Alignment]
    query_frames: int


@dataclass(frozen=True)
class Query:
    """One sample's search: where to look and how to score what is found.

    Attributes
    ----------
    fingerprints : Fingerprints
        Query fingerprints of the sample.
    lookup : Lookup
        The index (or all its shards) to search.
    ref_frames : callable
        Length in frames of the reference with a given key.
    n_references : int
        Number of references searched (for the multiple-test correction).
    max_hits : int or None
        The budget of one lookup (:data:`HIT_BUDGET`): a look whose probes
        hold more postings is answered by nomination and verification; None
        reads every probe.
    nomination_hits : int
        Postings a look over budget reads, rarest probes first, to nominate
        contents from (:data:`NOMINATION_HITS`).
    nominees : int
        Contents nominated (:data:`NOMINEES`).
    screen_budget : int
        Postings the warp screen's looks share (:data:`SCREEN_BUDGET`).
    screen_hits : int
        Postings they read together, rarest probes first, when over their
        shares (:data:`SCREEN_HITS`).

    Notes
    -----
    **Nominate, then verify.** Chance hits grow with the indexed hours, but
    an alignment of one reference depends only on that reference's own hits
    (and the number of references). So a look whose probes hold more than
    ``max_hits`` postings reads only its rarest probes up to
    ``nomination_hits``, votes over (content, offset) bins and nominates the
    ``nominees`` strongest contents (:func:`acr.matching.nominate`); then it
    reads every posting of those contents under every probe
    (``Lookup.search_contents``): exactly the hits an unbudgeted look would
    give them. A nominated reference therefore gets the alignment, evidence
    and confidence of the unbudgeted search, and whenever the true reference
    is nominated the answer is the unbudgeted answer. The nominees of a warp
    are chosen once (by its first look over budget) and kept for its later
    looks. Looks within the budget read every probe, as before.
    """

    fingerprints: Fingerprints
    lookup: Lookup
    ref_frames: Callable[[int], int]
    n_references: int
    max_hits: int | None = HIT_BUDGET
    nomination_hits: int = NOMINATION_HITS
    nominees: int = NOMINEES
    screen_budget: int = SCREEN_BUDGET
    screen_hits: int = SCREEN_HITS
    nominated: dict[Warp, NDArray[np.int64]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    """Contents nominated under each warp looked up over budget so far."""
    within: set[Warp] = field(default_factory=set, init=False, compare=False, repr=False)
    """Warps whose exact look was within the budget."""

    @property
    def frames(self) -> int:
        """Length of the sample in frames."""
        return max(1, round(self.fingerprints.duration_s / self.fingerprints.hop_s))

    def hits(self, warp: Warp, *, exact: bool = False) -> Hits:
        """Look the sample's codes up as they would be under ``warp``.

        ``exact`` returns exact code matches only, without the one-bit flips.
        Within the budget, every hit; over it, every hit of the nominated
        contents (see the class notes).
        """
        codes, frames = warp_codes(self.fingerprints.codes, self.fingerprints.frames, warp)
        flips = 0 if exact else 1
        if self.max_hits is None:
            return self.lookup.search(codes, frames, max_flips=flips)
        if not exact and warp not in self.nominated and warp not in self.within:
            # A full look samples the codes before their neighbours: when the
            # exact look is over budget, its sample is the full look's, at a
            # twenty-fourth of the probes.
            self._sampled(warp, codes, frames, exact=True)
        keys = self.nominated.get(warp)
        if keys is None:
            sample = self._sampled(warp, codes, frames, exact=exact)
            if sample is not None:
                return sample
            keys = self.nominated[warp]
        return self.lookup.search_contents(codes, frames, keys, max_flips=flips)

    def _sampled(
        self, warp: Warp, codes: NDArray[np.uint32], frames: NDArray[np.uint32], *, exact: bool
    ) -> Hits | None:
        """The look's hits if within the budget; else None, its nominees recorded."""
        sample = self.lookup.search(
            codes,
            frames,
            max_flips=0 if exact else 1,
            max_hits=self.max_hits,
            sample_hits=self.nomination_hits,
        )
        if sample.complete:
            if exact:
                self.within.add(warp)
            return sample
        self.nominated[warp] = nominate(sample, self.nominees)
        return None

    def screen(self, warp: Warp, *, share: int) -> Hits:
        """Exact-code hits under ``warp`` for a screen of ``share`` warps sharing one budget.

        Over its share of :attr:`screen_budget`, the look reads only its rarest
        probes, up to its share of :attr:`screen_hits` (marked incomplete).
        """
        codes, frames = warp_codes(self.fingerprints.codes, self.fingerprints.frames, warp)
        if self.max_hits is None:
            return self.lookup.search(codes, frames, max_flips=0)
        return self.lookup.search(
            codes,
            frames,
            max_flips=0,
            max_hits=self.screen_budget // share,
            sample_hits=self.screen_hits // share,
        )

    def key_hits(self, warp: Warp, key: int, *, exact: bool = False) -> Hits:
        """Every hit of one content under ``warp``, whatever the budget."""
        codes, frames = warp_codes(self.fingerprints.codes, self.fingerprints.frames, warp)
        keys = np.array([key], dtype=np.int64)
        return self.lookup.search_contents(codes, frames, keys, max_flips=0 if exact else 1)

    def align(
        self, warp: Warp, hits: Hits, *, top_k: int, min_confidence: float
    ) -> list[Alignment]:
        """The best alignments of hits found under ``warp`` (frames warped, evidence raw)."""
        return best_per_reference(
            self.candidates(warp, hits), top_k=top_k, min_confidence=min_confidence
        )

    def candidates(self, warp: Warp, hits: Hits) -> list[Alignment]:
        """Every candidate's alignment of hits found under ``warp``, best first."""
        return candidate_alignments(
            hits,
            query_frames=max(1, round(self.frames * warp.tempo)),
            ref_frames=self.ref_frames,
            n_references=self.n_references,
        )


def identify(
    query: Query,
    *,
    top_k: int = 1,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    warps: bool = True,
) -> Identification:
    """Align a sample with the references, under a warp if it was played differently.

    Parameters
    ----------
    query : Query
        The sample and the index to search.
    top_k : int
        Number of distinct references to return at most.
    min_confidence : float
        Alignments below this confidence are not returned.
    warps : bool
        Search speed, pitch and tempo changes beyond the matcher's own few per
        cent when the sample does not match as it is.

    Returns
    -------
    Identification
    """
    top_k = max(1, top_k)
    exact = hits = query.hits(IDENTITY, exact=True)
    fitted = query.candidates(IDENTITY, hits)
    ranked = best_per_reference(fitted, top_k=top_k, min_confidence=min_confidence)
    if not _decisive(fitted, query.frames):
        hits = query.hits(IDENTITY)
        ranked = query.align(IDENTITY, hits, top_k=top_k, min_confidence=min_confidence)
    warp = IDENTITY
    unsure = (
        not ranked
        or ranked[0].confidence < max(min_confidence, DEFAULT_MIN_CONFIDENCE)
        or abs(ranked[0].scale - 1.0) >= TILTED_SCALE
    )
    if warps and unsure and len(query.fingerprints):
        warped = best_warp(query, top_k=top_k)
        if warped is not None:
            penalized = [_penalized(a) for a in warped[2]]
            if penalized[0].confidence >= min_confidence and (
                not ranked or penalized[0].evidence > ranked[0].evidence
            ):
                warp, hits, ranked = warped[0], warped[1], penalized
    if not ranked:
        return Identification([], [], query.frames)
    pieces = segment_alignments(
        hits,
        ranked[0],
        query_frames=max(1, round(query.frames * warp.tempo)),
        ref_frames=query.ref_frames,
        n_references=query.n_references,
        min_confidence=min_confidence,
    )
    if not warp.is_identity:
        pieces = [p if p is ranked[0] else _penalized(p) for p in pieces]
        pieces = [p for p in pieces if p.confidence >= min_confidence]
    best = _unwarped(ranked[0], warp)
    if not warp.coupled:
        looked = exact if warp.is_identity else None
        best = replace(best, pitch=_measured_pitch(best, query, exact=looked))
    return Identification(
        ranked=[best, *(_unwarped(a, warp) for a in ranked[1:])],
        pieces=[best if p is ranked[0] else _unwarped(p, warp) for p in pieces],
        query_frames=query.frames,
    )


def _decisive(fitted: list[Alignment], query_frames: int) -> bool:
    """Whether exact-code alignments (best first) settle the sample.

    The best must be overwhelming, untilted and span the sample, and the best
    of the other lines (elsewhere in that reference, or in another) must have
    less than :data:`DECISIVE_RIVAL_RATIO` of its evidence.
    """
    if not fitted:
        return False
    best = fitted[0]
    span = best.query_end_frame - best.query_start_frame
    if (
        best.evidence < DECISIVE_EVIDENCE
        or abs(best.scale - 1.0) >= TILTED_SCALE
        or span < DECISIVE_COVERAGE * query_frames
    ):
        return False
    rival = next(
        (
            a
            for a in fitted[1:]
            if a.key != best.key or abs(a.offset_frames - best.offset_frames) > COARSE_BIN_FRAMES
        ),
        None,
    )
    return rival is None or rival.evidence < DECISIVE_RIVAL_RATIO * best.evidence


def best_warp(query: Query, *, top_k: int = 1) -> tuple[Warp, Hits, list[Alignment]] | None:
    """The warp of the grid under which the sample aligns best, before any penalty.

    Every warp is screened on exact code matches, scored by the votes of its
    strongest (content, offset) bin; the best few are looked up in full and
    aligned. The screen's lookups share one budget of hits
    (:attr:`Query.screen_budget`; over it, each reads its rarest probes up to
    its share of :attr:`Query.screen_hits`): in a large index the screen
    would otherwise cost as many whole lookups as there are warps, on every
    sample that matches nothing.

    Returns
    -------
    tuple or None
        The winning warp, its hits and its alignments (raw evidence, frames
        warped), or None when no warp aligns at all.
    """
    screened: list[tuple[int, Warp]] = []
    for warp in WARPS:
        votes = best_vote(query.screen(warp, share=len(WARPS)))
        if votes:
            screened.append((votes, warp))
    screened.sort(key=lambda item: item[0], reverse=True)
    winner: tuple[Warp, Hits, list[Alignment]] | None = None
    for _, warp in screened[:SHORTLIST]:
        hits = query.hits(warp)
        ranked = query.align(warp, hits, top_k=top_k, min_confidence=0.0)
        if ranked and (winner is None or ranked[0].evidence > winner[2][0].evidence):
            winner = (warp, hits, ranked)
    return winner


def _measured_pitch(alignment: Alignment, query: Query, *, exact: Hits | None = None) -> float:
    """The pitch factor under which most of the sample's codes meet the alignment exactly.

    The codes are warped to the alignment's tempo and shifted by whole bands
    around the pitch it was found at; the count of exact hits on its line
    peaks at the true shift, located between bands by a parabola through the
    peak and its neighbours. ``exact`` are the sample's exact-code hits as it
    is, if the search has them: an untilted alignment's unshifted count is
    read from them instead of looked up again (most answers). Only the
    aligned content's hits count, so only they are looked up.
    """
    start = round(math.log2(alignment.pitch) * F1_BANDS_PER_OCTAVE)
    counts: dict[int, int] = {}

    def on_line(hits: Hits) -> int:
        mine = hits.keys == alignment.key
        residual = hits.ref_frames[mine] - hits.query_frames[mine] - alignment.offset_frames
        return int(np.count_nonzero(np.abs(residual) <= INLIER_FRAMES))

    if exact is not None and alignment.scale == 1.0:
        counts[0] = on_line(exact)

    def count(bands: int) -> int:
        if bands not in counts:
            warp = Warp(tempo=alignment.scale, pitch_bands=bands)
            counts[bands] = on_line(query.key_hits(warp, alignment.key, exact=True))
        return counts[bands]

    def strongest(shifts: range) -> int:
        # Ties go to the shift nearest the pitch the alignment was found at.
        return max(shifts, key=lambda bands: (count(bands), -abs(bands - start)))

    peak = strongest(range(start - PITCH_SEARCH_BANDS, start + PITCH_SEARCH_BANDS + 1))
    if count(peak) == 0:
        # Found through one-bit neighbours, with no exact code on its line near
        # that pitch (a shift of a few bands that the look absorbed): try every
        # shift of the grid rather than report the pitch it was found at.
        peak = strongest(range(-GRID_PITCH_BANDS, GRID_PITCH_BANDS + 1))
        if count(peak) == 0:
            return alignment.pitch
    # Climb while the peak sits on the edge of what was tried.
    for _ in range(len(WARPS)):
        if count(peak - 1) > count(peak):
            peak -= 1
        elif count(peak + 1) > count(peak):
            peak += 1
        else:
            break
    below, at, above = count(peak - 1), count(peak), count(peak + 1)
    curvature = below - 2 * at + above
    shift = 0.5 * (below - above) / curvature if curvature < 0 else 0.0
    return float(2.0 ** ((peak + shift) / F1_BANDS_PER_OCTAVE))


def _penalized(alignment: Alignment) -> Alignment:
    """The alignment with its evidence corrected for the warps tried."""
    evidence = alignment.evidence - WARP_PENALTY
    return replace(alignment, evidence=evidence, confidence=confidence_from_evidence(evidence))


def _unwarped(alignment: Alignment, warp: Warp) -> Alignment:
    """Express an alignment found on warped frames in the sample's own frames."""
    if warp.is_identity:
        return alignment
    scale = alignment.scale * warp.tempo
    return replace(
        alignment,
        scale=scale,
        pitch=scale if warp.coupled else warp.pitch,
        query_start_frame=round(alignment.query_start_frame / warp.tempo),
        query_end_frame=round(alignment.query_end_frame / warp.tempo),
    )
