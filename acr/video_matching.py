"""Temporal alignment of a sample's frame hashes against the references.

A hit says: this query frame looks like that reference frame, so the sample
may start ``ref_time - query_time`` into that reference. Hits are voted on
``(content, offset)`` with offsets binned at the sampling interval, each vote
spread over the neighbouring bins so that a sample frame taken between two
reference samples, a dropped or duplicated frame or another frame rate (24,
25, 30, 50, 60 fps all sample to the same presentation times) still lands on
the alignment.

Votes are counted per *distinct picture*, not per frame or per view: the
sample's frames are grouped into runs of near-identical pictures (a static
scene, a freeze frame) and each group votes once on each bin, however many
of its frames and views hit. Five seconds of one still picture are one
piece of evidence, not twenty.

Evidence is then weighed against chance, as in the audio matcher: a group
that hits ``c`` cells out of the ``M`` offset cells of the whole catalogue
would hit a given cell by chance with probability ``c / M``. The expected
number of chance votes on a cell is the sum over groups, ``lam``; observing
``k`` votes has a chance probability ``P(Poisson(lam) >= k)``, and with ``M``
cells to look at, the probability that some wrong cell does as well is at
most ``M * P``. The confidence is ``1 - M * P`` (at least 0). A picture that
recurs all over the catalogue (a black frame — already dropped for its
quality —, a channel ident, a static scene shared by several contents) hits
many cells and weighs little; a transition between two shots hits the few
cells of either shot and does not add up to an alignment on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy.special import gammaincc

from acr.index.video_lookup import RADIUS, VideoHits
from acr.results import Match, MatchResult
from acr.signals.video.pdq import hamming

__all__ = [
    "DEFAULT_MIN_CONFIDENCE",
    "FUSION_FLOOR",
    "VideoAlignment",
    "align_video",
    "fuse",
    "picture_groups",
]

DEFAULT_MIN_CONFIDENCE: Final = 0.8
"""Below this a candidate is not reported: at most a 20 % chance that some wrong
alignment gathers as many votes (the audio matcher's default threshold too)."""

SAME_PICTURE: Final = 32
"""Sample frames whose hashes are this close show the same picture (one vote between them)."""

MIN_VOTES: Final = 2
"""An alignment needs at least two distinct pictures: one alone cannot place a sample in time."""

_SPREAD: Final = 1
"""A vote also counts on the bins this many sampling intervals either side."""


@dataclass(frozen=True)
class VideoAlignment:
    """A sample aligned on a reference."""

    key: int
    offset_s: float
    """Where in the reference the sample's time 0 is."""
    votes: int
    """Distinct pictures of the sample found on this alignment."""
    confidence: float
    first_s: float
    last_s: float
    """Sample times of the first and last frames found on the alignment."""


def picture_groups(
    hashes: NDArray[np.uint8], frame_of: NDArray[np.int64], whole: NDArray[np.bool_]
) -> NDArray[np.int64]:
    """Group id of each sample frame: consecutive frames showing one picture share it.

    Parameters
    ----------
    hashes : ndarray of uint8, shape (n, 32)
        The sample's hashes.
    frame_of : ndarray of int64, shape (n,)
        Frame number of each hash (0, 1, ... in time order).
    whole : ndarray of bool, shape (n,)
        Whether each hash is of the whole picture, the one compared between frames.

    Returns
    -------
    ndarray of int64, shape (n_frames,)
        A frame starts a new group unless its whole-picture hash is within
        :data:`SAME_PICTURE` bits of the group's first frame; a frame without
        one joins the group before it.
    """
    n_frames = int(frame_of.max()) + 1 if frame_of.size else 0
    groups = np.zeros(n_frames, dtype=np.int64)
    picture: dict[int, NDArray[np.uint8]] = {
        int(f): hashes[i] for i, f in zip(np.flatnonzero(whole), frame_of[whole], strict=True)
    }
    representative: NDArray[np.uint8] | None = None
    current = -1
    for frame in range(n_frames):
        own = picture.get(frame)
        if own is not None and (
            representative is None or int(hamming(own, representative)) > SAME_PICTURE
        ):
            current += 1
            representative = own
        groups[frame] = max(current, 0)
    return groups


def align_video(
    hits: VideoHits,
    *,
    query_times_s: NDArray[np.float64],
    query_groups: NDArray[np.int64],
    interval_s: float,
    total_cells: int,
    top_k: int = 1,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> list[VideoAlignment]:
    """The best alignments of a sample, by decreasing confidence (one per content).

    Parameters
    ----------
    hits : VideoHits
        Reference hashes found near the sample's hashes.
    query_times_s : ndarray of float64, shape (n,)
        Time of each query hash (``hits.query`` indexes it).
    query_groups : ndarray of int64, shape (n,)
        Picture group of each query hash (see :func:`picture_groups`).
    interval_s : float
        Sampling interval, the width of an offset bin.
    total_cells : int
        Offset bins in the whole catalogue (its sampled frames), ``M`` above.
    """
    if len(hits) == 0:
        return []
    times = query_times_s[hits.query]
    offsets = hits.ref_times_s - times
    bins = np.round(offsets / interval_s).astype(np.int64)
    groups = query_groups[hits.query]
    spread = np.arange(-_SPREAD, _SPREAD + 1)
    cell_key = np.repeat(hits.keys, spread.size)
    cell_bin = (bins[:, None] + spread[None, :]).reshape(-1)
    cell_group = np.repeat(groups, spread.size)
    # One vote per (cell, group): the unique triples.
    triples = np.unique(np.stack([cell_key, cell_bin, cell_group], axis=1), axis=0)
    cells, votes = np.unique(triples[:, :2], axis=0, return_counts=True)
    # Chance: the share of the catalogue's cells each group hits.
    _, cells_per_group = np.unique(triples[:, 2], return_counts=True)
    lam = float(np.minimum(cells_per_group / max(total_cells, 1), 1.0).sum())
    # Among cells with as many votes (the spread makes neighbours tie), the one with
    # the most votes on the bin itself, then the closest hits, is the alignment.
    exact = _per_cell(cells, np.unique(np.stack([hits.keys, bins, groups], axis=1), axis=0))
    closeness = _per_cell(
        cells, np.stack([hits.keys, bins], axis=1), weights=RADIUS + 1 - hits.distances
    )
    order = np.lexsort((cells[:, 1], -closeness, -exact, -votes))
    found: list[VideoAlignment] = []
    seen: set[int] = set()
    for index in order:
        k = int(votes[index])
        if k < MIN_VOTES:
            break
        key = int(cells[index, 0])
        if key in seen:
            continue
        seen.add(key)
        confidence = _confidence(k, lam, total_cells)
        if confidence < min_confidence:
            continue
        found.append(
            _alignment(
                key, int(cells[index, 1]), k, confidence, hits, times, offsets, bins, interval_s
            )
        )
        if len(found) == top_k:
            break
    found.sort(key=lambda a: (-a.confidence, -a.votes))
    return found


def _per_cell(
    cells: NDArray[np.int64],
    rows: NDArray[np.int64],
    weights: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """For each ``(key, bin)`` cell, the number (or total weight) of `rows` on it."""

    def code(pairs: NDArray[np.int64]) -> NDArray[np.int64]:
        return pairs[:, 0] * (1 << 32) + (pairs[:, 1] + (1 << 31))

    cell_codes = code(cells)  # sorted: cells come from np.unique
    where = np.searchsorted(cell_codes, code(rows[:, :2]))
    totals = np.zeros(cells.shape[0], dtype=np.int64)
    np.add.at(totals, where, 1 if weights is None else weights)
    return totals


def _confidence(votes: int, lam: float, total_cells: int) -> float:
    """``1 - M * P(Poisson(lam) >= votes)``, at least 0."""
    # P(X >= k) for X ~ Poisson(lam) is the regularized lower gamma P(k, lam) = 1 - Q(k, lam).
    tail = 1.0 - float(gammaincc(votes, lam)) if lam > 0 else 0.0
    if tail < 1e-12:  # 1 - Q loses precision: bound the tail by its first term, lam^k e^-lam / k!
        tail = math.exp(votes * math.log(max(lam, 1e-300)) - lam - math.lgamma(votes + 1))
    return max(0.0, 1.0 - total_cells * tail)


def _alignment(
    key: int,
    bin_: int,
    votes: int,
    confidence: float,
    hits: VideoHits,
    times: NDArray[np.float64],
    offsets: NDArray[np.float64],
    bins: NDArray[np.int64],
    interval_s: float,
) -> VideoAlignment:
    """Refine the offset: the median over the sample's frames of their own estimate.

    A frame's estimate is its closest hit on the alignment, moved between that
    reference frame and its neighbours by the vertex of the parabola through
    the three distances: reference frames are a sampling interval apart, the
    sample's frames fall anywhere between them.
    """
    chosen = np.flatnonzero((hits.keys == key) & (np.abs(bins - bin_) <= _SPREAD))
    frame_times = times[chosen]
    estimates = []
    for t in np.unique(frame_times):
        mine = chosen[frame_times == t]
        best = int(mine[np.argmin(hits.distances[mine])])
        same = mine[hits.query[mine] == hits.query[best]]
        lag = (hits.ref_times_s[same] - hits.ref_times_s[best]) / interval_s
        before, after = same[np.abs(lag + 1) < 0.5], same[np.abs(lag - 1) < 0.5]
        estimate = float(offsets[best])
        if before.size and after.size:
            low, middle = float(hits.distances[before].min()), float(hits.distances[best])
            high = float(hits.distances[after].min())
            curvature = low - 2 * middle + high
            if curvature > 0:
                shift = (low - high) / (2 * curvature)
                estimate += float(np.clip(shift, -0.5, 0.5)) * interval_s
        estimates.append(estimate)
    return VideoAlignment(
        key=key,
        offset_s=float(np.median(estimates)) if estimates else bin_ * interval_s,
        votes=votes,
        confidence=confidence,
        first_s=float(frame_times.min()) if chosen.size else 0.0,
        last_s=float(frame_times.max()) if chosen.size else 0.0,
    )


AGREEMENT_S: Final = 1.0
"""Audio and video candidates for one content agree when their offsets differ by less."""

FUSION_FLOOR: Final = 0.2
"""Each signal reports candidates down to this confidence when its evidence is to be fused:
two signals that are each fairly sure of the same moment are surer together."""


def fuse(
    audio: MatchResult | None,
    video: MatchResult | None,
    *,
    top_k: int = 1,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> MatchResult:
    """One answer from the audio and the video match of the same sample.

    A content that both signals place at the same moment (offsets within
    :data:`AGREEMENT_S`) gets the confidence of independent evidence,
    ``1 - (1 - c_audio) * (1 - c_video)``, and the audio match's offset and
    speed (its hop is 16 ms, the video's 250 ms). Any other candidate keeps
    its own confidence. Candidates below `min_confidence` are dropped.

    Parameters
    ----------
    audio, video : MatchResult or None
        The two results (None when the sample has no such signal), matched
        with ``min_confidence`` at most :data:`FUSION_FLOOR` so that weak
        evidence can still add up.
    """
    found = [r for r in (audio, video) if r is not None]
    if not found:
        raise ValueError("fuse needs at least one result")
    audio_matches = audio.matches if audio is not None else []
    video_matches = video.matches if video is not None else []
    fused: list[Match] = []
    used: set[int] = set()
    for a in audio_matches:
        partner = next(
            (
                i
                for i, v in enumerate(video_matches)
                if i not in used
                and v.content_id == a.content_id
                and abs(v.offset_s - a.offset_s) < AGREEMENT_S
            ),
            None,
        )
        if partner is None:
            fused.append(a)
            continue
        used.add(partner)
        v = video_matches[partner]
        confidence = 1.0 - (1.0 - a.confidence) * (1.0 - v.confidence)
        fused.append(replace(a, confidence=confidence, score=a.score + v.score))
    fused += [v for i, v in enumerate(video_matches) if i not in used]
    kept = sorted(
        (m for m in fused if m.confidence >= min_confidence), key=lambda m: -m.confidence
    )[: max(1, top_k)]
    segments = kept[:1]
    if audio is not None and kept and audio.segments and kept[0] in audio_matches:
        segments = audio.segments
    return MatchResult(
        matches=kept,
        segments=segments,
        query_duration_s=max(r.query_duration_s for r in found),
        query_codes=sum(r.query_codes for r in found),
        elapsed_ms=max(r.elapsed_ms for r in found),
    )
