"""Stage 5: from code hits to matches — vote, align, score, decide.

Every hit says "query frame q looks like frame r of content k". True hits of
one content agree on a time alignment ``r ≈ scale · q + offset``; chance hits
scatter. Voting runs in two passes:

1. a coarse histogram over (content, offset) picks a few candidate alignments,
   wide enough that a few per cent of speed drift stays in one bin;
2. for each candidate, a Hough search over a small grid of time scales finds the
   line with the most inliers, and the offset is refined as their median.

The evidence for an alignment is the Poisson surprise of its number of code
hits on the line, given how many hits that content received in all — it grows with agreement and
shrinks for contents that collide with everything (long or repetitive ones) —
and the confidence is a logistic of that evidence, calibrated on audio that is
not in the index (see ``docs/matching.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray
from scipy.special import expit, gammaln, pdtrc

COARSE_BIN_FRAMES = 8
INLIER_FRAMES = 1.5
SCALES = np.linspace(0.97, 1.03, 13)
_SCALES_FROM_ONE = np.argsort(np.abs(SCALES - 1.0), kind="stable")
"""Scale indices nearest 1 first: among equally supported lines the least tilted wins."""
CANDIDATES = 8
MIN_INLIERS = 5
MIN_SEGMENT_FRAMES = 62
"""A stretch shorter than this (about 1 s) is not searched for another reference."""

NOMINATION_CELLS = 4
"""Strongest bins looked at per content nominated (:func:`nominate`)."""

CONFIDENCE_MIDPOINT = 9.29
"""Evidence at which confidence is 0.5."""
CONFIDENCE_SLOPE = 16.23
"""Evidence units per e-fold of the odds.

Both fitted by ``python -m benchmarks.calibrate`` (Platt scaling of every query's
best candidate, right or wrong) on the full benchmark run of 2026-11-26 09:16
UTC: 8,219 candidates, 528 never-indexed negatives. See ``docs/matching.md``."""

DEFAULT_MIN_CONFIDENCE = 0.80
"""The default threshold, from a 0.4 % false-positive budget (the target is 0.5 %):
the confidence of evidence 31.8, which two of the benchmark's 528 never-indexed
negatives exceeded (the third-highest reached 30.2)."""


@dataclass(frozen=True)
class Hits:
    """Index hits of one query, one row per (query code, reference posting) pair."""

    query_frames: NDArray[np.int64]
    keys: NDArray[np.int64]
    ref_frames: NDArray[np.int64]
    complete: bool = True
    """False when a budget of hits left some of the query's probes unread."""


@dataclass(frozen=True)
class Alignment:
    """A consistent time alignment between the query and one reference."""

    key: int
    offset_frames: float
    """Reference frame aligned with query frame 0."""
    scale: float
    """Reference frames per query frame (1.0 = same speed)."""
    inliers: int
    """Code hits on the alignment line."""
    query_start_frame: int
    query_end_frame: int
    evidence: float
    confidence: float
    pitch: float = 1.0
    """Frequency factor of the query relative to the reference (1.0 = same pitch)."""


def confidence_from_evidence(evidence: float) -> float:
    """Map evidence (−log10 of the corrected chance probability) to [0, 1]."""
    return float(expit((evidence - CONFIDENCE_MIDPOINT) / CONFIDENCE_SLOPE))


def align(
    hits: Hits,
    *,
    query_frames: int,
    ref_frames: Callable[[int], int],
    n_references: int,
    top_k: int = 1,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> list[Alignment]:
    """Find the best alignments of a query, best first.

    Parameters
    ----------
    hits : Hits
        Every code hit of the query in the index.
    query_frames : int
        Length of the query in frames.
    ref_frames : callable
        Length in frames of the reference with a given key.
    n_references : int
        Number of references searched (for the multiple-test correction).
    top_k : int
        Number of distinct references to return at most.
    min_confidence : float
        Alignments below this confidence are not returned.

    Returns
    -------
    list of Alignment
        At most ``top_k``, one per reference, by decreasing evidence.
    """
    fitted = candidate_alignments(
        hits, query_frames=query_frames, ref_frames=ref_frames, n_references=n_references
    )
    return best_per_reference(fitted, top_k=top_k, min_confidence=min_confidence)


def candidate_alignments(
    hits: Hits, *, query_frames: int, ref_frames: Callable[[int], int], n_references: int
) -> list[Alignment]:
    """The alignment fitted at each of the strongest coarse candidates, best first.

    Several may name one reference (music that repeats itself); see
    :func:`best_per_reference` for one each. Parameters as :func:`align`.
    """
    if hits.keys.size == 0:
        return []
    fitted: list[Alignment] = []
    of_key: dict[int, tuple[NDArray[np.int64], NDArray[np.int64]]] = {}
    for key, coarse_offset in _coarse_candidates(hits, CANDIDATES):
        if key not in of_key:
            mine = hits.keys == key
            of_key[key] = hits.query_frames[mine], hits.ref_frames[mine]
        query, ref = of_key[key]
        alignment = _fit(
            query, ref, key, coarse_offset, query_frames, ref_frames(key), n_references
        )
        if alignment is not None:
            fitted.append(alignment)
    return sorted(fitted, key=lambda a: a.evidence, reverse=True)


def best_per_reference(
    fitted: list[Alignment], *, top_k: int, min_confidence: float
) -> list[Alignment]:
    """The best of ``fitted`` (best first) for each reference, the ``top_k`` strongest confident."""
    best: dict[int, Alignment] = {}
    for alignment in fitted:
        best.setdefault(alignment.key, alignment)
    return [a for a in best.values() if a.confidence >= min_confidence][:top_k]


def segment_alignments(
    hits: Hits,
    first: Alignment,
    *,
    query_frames: int,
    ref_frames: Callable[[int], int],
    n_references: int,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    max_segments: int = 4,
) -> list[Alignment]:
    """Explain the query as consecutive pieces of different references.

    A sample that straddles the end of one advert and the start of the next
    holds two alignments over disjoint stretches of the query. Starting from
    the best alignment ``first``, the query frames it explains are removed and
    the rest is searched again.

    Returns
    -------
    list of Alignment
        Confident alignments over disjoint query stretches, in query time order.
    """
    found = [first]
    remaining = hits
    while len(found) < max_segments:
        last = found[-1]
        unexplained = max(last.query_start_frame, query_frames - 1 - last.query_end_frame)
        if unexplained < MIN_SEGMENT_FRAMES:
            break
        outside = (remaining.query_frames < last.query_start_frame) | (
            remaining.query_frames > last.query_end_frame
        )
        remaining = Hits(
            remaining.query_frames[outside], remaining.keys[outside], remaining.ref_frames[outside]
        )
        if remaining.keys.size < MIN_INLIERS:
            break
        best = align(
            remaining,
            query_frames=query_frames,
            ref_frames=ref_frames,
            n_references=n_references,
            top_k=1,
            min_confidence=min_confidence,
        )
        if not best:
            break
        found.append(best[0])
    return sorted(found, key=lambda a: a.query_start_frame)


def best_vote(hits: Hits) -> int:
    """Votes of the strongest coarse (key, offset) bin, merged with its neighbours.

    A cheap score for comparing lookups of the same sample (say, under different
    warps) before aligning any of them.
    """
    if hits.keys.size == 0:
        return 0
    _, votes = _top_cells(_sorted_cells(hits)[0], 1)
    return int(votes[0])


def nominate(hits: Hits, count: int) -> NDArray[np.int64]:
    """The ``count`` contents owning the strongest coarse (key, offset) bins, strongest first.

    A cheap vote over a sample of a query's hits (say, its rarest probes)
    names the contents worth reading in full
    (:meth:`acr.index.lookup.CodeLookup.search_contents`).
    """
    if hits.keys.size == 0 or count < 1:
        return np.zeros(0, dtype=np.int64)
    cells, span, _ = _sorted_cells(hits)
    # A content may own several strong bins (music repeats itself).
    best, votes = _top_cells(cells, NOMINATION_CELLS * count)
    keys = best[votes > 0] // span
    _, first = np.unique(keys, return_index=True)
    return keys[np.sort(first)][:count]


def _sorted_cells(hits: Hits) -> tuple[NDArray[np.int64], int, int]:
    """Every hit's coarse (key, offset) cell ``key * span + bin``, sorted; span and lowest bin.

    One empty bin pads each key's row on both sides, so neighbours never cross
    from one key into the next.
    """
    coarse = np.floor_divide(hits.ref_frames - hits.query_frames, COARSE_BIN_FRAMES)
    low = int(coarse.min())
    span = int(coarse.max()) - low + 3
    return np.sort(hits.keys * span + (coarse - low + 1)), span, low


@numba.njit(cache=True, nogil=True)
def _top_cells(cells: NDArray[np.int64], count: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The ``count`` cells of a sorted cell list with most votes, each merged with its neighbours.

    Runs of equal values are the cells; a drifting alignment spreads over
    adjacent bins, so each cell is scored with both neighbours' votes. Ranked
    by merged votes, ties by cell ascending; unused places hold -1 votes.
    """
    best_cells = np.zeros(count, dtype=np.int64)
    best_votes = np.full(count, -1, dtype=np.int64)
    start = 0
    previous_cell = cells[0] - 2
    previous_votes = 0
    while start < cells.size:
        cell = cells[start]
        end = start + 1
        while end < cells.size and cells[end] == cell:
            end += 1
        following = end
        while following < cells.size and cells[following] == cell + 1:
            following += 1
        votes = following - start
        if previous_cell == cell - 1:
            votes += previous_votes
        previous_cell = cell
        previous_votes = end - start
        start = end
        if votes <= best_votes[count - 1]:
            continue
        at = count - 1
        while at > 0 and best_votes[at - 1] < votes:
            best_votes[at] = best_votes[at - 1]
            best_cells[at] = best_cells[at - 1]
            at -= 1
        best_votes[at] = votes
        best_cells[at] = cell
    return best_cells, best_votes


def _coarse_candidates(hits: Hits, count: int) -> list[tuple[int, int]]:
    """The (key, offset) bins with most votes, each merged with its neighbours."""
    cells, span, low = _sorted_cells(hits)
    best, votes = _top_cells(cells, count)
    return [
        (
            int(cell // span),
            (int(cell % span) - 1 + low) * COARSE_BIN_FRAMES + COARSE_BIN_FRAMES // 2,
        )
        for cell, vote in zip(best, votes, strict=True)
        if vote > 0
    ]


def _fit(
    q_all: NDArray[np.int64],
    r_all: NDArray[np.int64],
    key: int,
    coarse_offset: int,
    query_frames: int,
    ref_length: int,
    n_references: int,
) -> Alignment | None:
    """Hough search over scale and offset around one coarse candidate, on one key's hits."""
    drift = (SCALES.max() - 1.0) * query_frames + 2 * COARSE_BIN_FRAMES
    found, scale_index, offset, matched, first, last = _hough(
        q_all, r_all, coarse_offset, drift, SCALES, _SCALES_FROM_ONE, INLIER_FRAMES, MIN_INLIERS
    )
    if not found:
        return None
    evidence = _evidence(matched, int(q_all.size), query_frames, ref_length, n_references)
    return Alignment(
        key=key,
        offset_frames=float(offset),
        scale=float(SCALES[scale_index]),
        inliers=int(matched),
        query_start_frame=int(first),
        query_end_frame=int(last),
        evidence=evidence,
        confidence=confidence_from_evidence(evidence),
    )


@numba.njit(cache=True, nogil=True)
def _hough(
    q_all: NDArray[np.int64],
    r_all: NDArray[np.int64],
    coarse_offset: int,
    drift: float,
    scales: NDArray[np.float64],
    scale_order: NDArray[np.int64],
    inlier_frames: float,
    min_inliers: int,
) -> tuple[bool, int, float, int, int, int]:
    """The line ``r = scale · q + offset`` with most hits near a coarse offset.

    Returns whether one was found with enough support, the index of its scale,
    its offset, the code hits on it, and the first and last query frame they
    cover.
    """
    # The line is fitted on distinct (query frame, reference frame) pairs, so that
    # an anchor with many codes does not pull it more than one with few.
    packed = np.empty(q_all.size, dtype=np.int64)
    n = 0
    for i in range(q_all.size):
        if abs((r_all[i] - q_all[i]) - coarse_offset) <= drift:
            packed[n] = q_all[i] * (1 << 32) + r_all[i]
            n += 1
    packed = np.sort(packed[:n])
    distinct = 0
    for i in range(n):
        if i == 0 or packed[i] != packed[i - 1]:
            packed[distinct] = packed[i]
            distinct += 1
    if distinct < min_inliers:
        return False, 0, 0.0, 0, 0, 0
    q = np.empty(distinct, dtype=np.float64)
    r = np.empty(distinct, dtype=np.float64)
    for i in range(distinct):
        q[i] = np.float64(packed[i] >> 32)
        r[i] = np.float64(packed[i] & 0xFFFFFFFF)
    offsets = np.empty((scales.size, distinct), dtype=np.int64)
    for s in range(scales.size):
        for i in range(distinct):
            offsets[s, i] = np.int64(np.rint(r[i] - scales[s] * q[i]))
    low = offsets.min() - 1
    width = offsets.max() - low + 2
    histogram = np.zeros((scales.size, width), dtype=np.int64)
    for s in range(scales.size):
        for i in range(distinct):
            histogram[s, offsets[s, i] - low] += 1
    # A one-frame jitter splits votes between adjacent offsets: pool them. A
    # short sample's inliers span too few frames to tell nearby scales apart;
    # of equally supported lines the one nearest scale 1 is taken, not the
    # first of the grid (which biased short samples to 0.97).
    best, best_scale, best_offset = -1, 0, 0
    for s in scale_order:
        for o in range(width):
            pooled = histogram[s, o]
            if o > 0:
                pooled += histogram[s, o - 1]
            if o + 1 < width:
                pooled += histogram[s, o + 1]
            if pooled > best:
                best, best_scale, best_offset = pooled, s, o
    scale = scales[best_scale]
    base = np.float64(best_offset + low)
    residuals = np.empty(distinct, dtype=np.float64)
    inliers = 0
    for i in range(distinct):
        residual = r[i] - scale * q[i] - base
        if abs(residual) <= inlier_frames:
            residuals[inliers] = residual
            inliers += 1
    if inliers < min_inliers:
        return False, 0, 0.0, 0, 0, 0
    offset = base + np.median(residuals[:inliers])
    # Evidence counts every code hit on the line: each is a separate 23-bit
    # collision, and the background below is counted in the same unit.
    on_line = np.empty(q_all.size, dtype=np.int64)
    matched = 0
    for i in range(q_all.size):
        if abs(np.float64(r_all[i]) - scale * np.float64(q_all[i]) - offset) <= inlier_frames:
            on_line[matched] = q_all[i]
            matched += 1
    frames = np.sort(on_line[:matched])
    covered = 0
    for i in range(matched):
        if i == 0 or frames[i] != frames[i - 1]:
            covered += 1
    if covered < min_inliers:
        return False, 0, 0.0, 0, 0, 0
    return True, best_scale, offset, matched, frames[0], frames[matched - 1]


def _evidence(
    inliers: int, total_hits: int, query_frames: int, ref_length: int, n_references: int
) -> float:
    """−log10 of the chance of this many inliers if the content's hits were random.

    Chance hits of a content spread over every offset at which the query could
    overlap it; an inlier band covers ``2·INLIER_FRAMES + 1`` of them for each
    scale tried. The probability is corrected for every offset, scale and
    reference that was effectively tested.
    """
    positions = max(ref_length + query_frames, 1)
    band = (2 * INLIER_FRAMES + 1) / positions
    expected = max(total_hits * band, 1e-3)
    tail = _log10_poisson_tail(inliers, expected)
    tests = positions * SCALES.size * max(n_references, 1)
    return float(-tail - np.log10(tests))


def _log10_poisson_tail(k: int, mean: float) -> float:
    """log10 P(X ≥ k) for X ~ Poisson(mean), without underflow.

    Far in the tail the sum is its first term times a geometric factor,
    ``pmf(k) / (1 - mean / (k + 1))``, which bounds it tightly from above.
    """
    if k <= 0:
        return 0.0
    if k + 1 <= 2.0 * mean:
        return float(np.log10(max(float(pdtrc(k - 1, mean)), 1e-300)))
    log_pmf = -mean + k * np.log(mean) - float(gammaln(k + 1))
    return float((log_pmf - np.log1p(-mean / (k + 1))) / np.log(10.0))
