"""Temporal alignment of a sample's frame hashes against the references.

A hit says: this query frame looks like that reference frame, so the sample
may start ``ref_time - query_time`` into that reference. Hits are voted on
``(content, offset)`` with offsets binned at the sampling interval, each vote
spread over the neighbouring bins so that a sample frame taken between two
reference samples, a dropped or duplicated frame or another frame rate (24,
25, 30, 50, 60 fps all sample to the same presentation times) still lands on
the alignment.

Votes are counted per *distinct picture of a view*, not per frame: the
sample's hashes of each view (the whole picture, each half, an inset) are
grouped into runs of near-identical pictures (a static scene, a freeze
frame; a caption box or one side of a split screen that stays while the rest
moves) and each group votes once on each bin, however many of its frames
hit. Five seconds of one still picture are one piece of evidence, not
twenty. The views of one frame are not independent evidence either: a cell
is as good as its best view.

A vote is not worth one: it weighs as much as its most telling hit, by
distance (1 within :data:`CLEAR` bits, falling to 0 at the radius: unrelated
footage with a similar caption box, lower third or slate over a smooth
background lands 56-64 bits from reference frames) and by rarity (a query
view that comes as close to more than :data:`SHARED_BY` contents is shared
graphics, and its weight is divided among them). The weighed votes of a cell
are its *evidence*; an alignment needs :data:`MIN_EVIDENCE` and frames at
least :data:`MIN_SPAN` sampling intervals apart (adjacent frames are nearly
the same picture: a chance likeness of one carries over to the next). A half
that no other view finds on the same alignment counts
:data:`UNCORROBORATED_HALF`: an overlay leaves the whole picture or another
half matching too, shared graphics are confined to one part.

Evidence is then weighed against chance, as in the audio matcher: a group
that hits ``c`` cells out of the ``M`` offset cells of the whole catalogue
would hit a given cell by chance with probability ``c / M``. The expected
number of chance votes on a cell is the sum over groups, ``lam``; evidence
``k`` has a chance probability ``P(Poisson(lam) >= k)`` (the regularized
gamma function, for any real ``k``), and with ``M`` cells to look at, the
probability that some wrong cell does as well is at most ``M * P``. The
confidence is ``1 - M * P`` (at least 0), with ``lam`` of the cell's best
view. A picture that recurs all over the catalogue (a black frame — already
dropped for its quality —, a channel ident, a static scene shared by several
contents) hits many cells and weighs little; a transition between two shots
hits the few cells of either shot and does not add up to an alignment on its
own.

Two things are decided after the evidence. *Ties*: contents found on the same
stretch of the sample with evidence less than one picture apart (the shots two
near-duplicate adverts share) are ranked by how many of the sample's sampling
slots each alignment explains, flat slots included: where the twins differ the
sample often shows a fade, black or a smooth picture, which the true reference
shows too. *Placement*: the offset comes from the hits near the chosen cell,
unless another view of the sample fits the reference's framing clearly better
at a cell of its own nearby (a zoom cropped by 5 % looks, through the halves,
like a moment half a second earlier).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit, gammainc

from acr.index.video_lookup import RADIUS, VideoHits
from acr.results import Match, MatchResult
from acr.signals.video.pdq import hamming
from acr.signals.video.views import HALVES, WHOLE

__all__ = [
    "DECISIVE_COVERAGE",
    "DECISIVE_DISTANCE",
    "DECISIVE_RIVALS",
    "DECISIVE_RIVAL_RATIO",
    "DECISIVE_SIGNIFICANCE",
    "DEFAULT_MIN_CONFIDENCE",
    "FUSION_FLOOR",
    "VideoAlignment",
    "align_video",
    "concatenate_hits",
    "decisive",
    "fuse",
    "picture_groups",
    "shot_units",
    "view_groups",
]

DEFAULT_MIN_CONFIDENCE: Final = 0.8
"""Below this a candidate is not reported: at most a 20 % chance that some wrong
alignment gathers as many votes (the audio matcher's default threshold too)."""

SAME_PICTURE: Final = 32
"""Sample frames whose hashes are this close show the same picture (one vote between them)."""

MIN_EVIDENCE: Final = 1.5
"""An alignment needs more evidence than one clearly matching picture (see
:func:`align_video`): one alone cannot place a sample in time. Two distinct pictures of
one shot count 1.74 (see :data:`WITHIN_SHOT`)."""

MIN_SPAN: Final = 1.5
"""The frames found on an alignment must lie at least this many sampling intervals apart:
adjacent frames show nearly the same picture, so a chance likeness of one carries over
to the next, and together they are not independent evidence."""

CLEAR: Final = 52
"""A hit this close is clear evidence of the same picture (see :func:`_strength`)."""

SHARED_BY: Final = 2.0
"""A hit whose query view comes as close to more contents than this is shared graphics: its
weight is divided among them beyond this many (see :func:`_rivals`)."""

RIVAL_MARGIN: Final = 8
"""A content is a rival of a hit when the hit's query view comes within this many bits of
the hit's own distance there, and clearly close (see :func:`_rivals`)."""

UNCORROBORATED_HALF: Final = 0.5
"""Weight of the evidence of a half (top, bottom, left, right) when no other view of the
sample is found on the same alignment."""

CORROBORATION: Final = 1.0
"""Evidence another view needs on an alignment to corroborate a half there: one clearly
matching picture. (An unseen clip's bottom half, under a caption band, was corroborated
by three whole-picture hits at 60-64 bits, 0.34 of evidence, and answered at 0.95; at
0.5 its filmed copy still was. Held out, the rule cost two 1 s caption samples, whose
top half was corroborated by 0.69 and 0.92.)"""

WITHIN_SHOT: Final = 0.15
"""Correlation of the votes of one shot's pictures (see :func:`_within_shots`)."""

SHOT_BREAK: Final = RADIUS
"""Consecutive sample frames farther apart than this are in different shots."""

CONFIDENCE_MIDPOINT: Final = 0.54
"""Significance (see :func:`_significance`) of an even chance of being right, among
alignments with :data:`MIN_EVIDENCE`: fitted on held-out material
(``python -m benchmarks.video.calibrate``; -2.07), then raised so that the default
threshold lies half a unit above the most significant held-out negative (2.83 of 864,
a filmed clip of an unseen programme). Refitted after the overscan crops, straightened
screens and lower quality floor changed what evidence a sample brings."""

CONFIDENCE_SLOPE: Final = 2.01
"""Significance per unit of log-odds of being right (fitted with the midpoint)."""

TIED_EVIDENCE: Final = 1.0
"""Contents are tied when they are found on the same stretch of the sample (first and last
frame) with evidence less than one clearly matching picture apart, and are then ranked by
how much of the sample they explain (see :func:`align_video`): the shots two
near-duplicate adverts share are the same evidence in each, up to which of their frames
the sampling happened to catch (24 fps: 11.28 against 11.05 for the same shot)."""

DECISIVE_SIGNIFICANCE: Final = 10.0
"""Significance of the first look's best alignment (the whole picture and the halves,
:data:`acr.signals.video.views.FIRST_LOOK`) at which the crop windows are not looked up
(see :func:`decisive`). Measured on the held-out calibration set
(``benchmarks.video.calibrate``; 858 files matched at 1, 2 and 5 s): no negative's first
look reached 0 (the full lookup's best: 0.62); the most significant first-look answer
that the full lookup overturned was 7.8 (a picture-in-picture sample, whose inset meets
only the whole window in the first look). Two units above it (a hundredth of the chance):
454 of 570 positives at 5 s are settled by the first look, every one as the full lookup
answers it (one 2 s answer moves by 0.39 s, within the offset tolerance)."""

DECISIVE_RIVAL_RATIO: Final = 0.5
"""The best other content of a decisive answer has less than this share of its evidence."""

DECISIVE_COVERAGE: Final = 0.8
"""Share of the sample a decisive alignment's frames must span, and the sample must lie
inside the reference on it: a line that explains only part of the sample may leave the
rest to another reference, or to a better-placed line (the audio side's rule too).
Held-out, it left 414 of the 454 decisions at 5 s and changed no answer."""

DECISIVE_DISTANCE: Final = SAME_PICTURE
"""Median distance (bits) of a decisive alignment's frames to their closest hits: the
sample shows the reference's own pictures, re-encoded, rescaled or overlaid in a part a
half leaves out. A whole picture or a half that only resembles the reference's (a crop,
a filmed screen, an inset) also resembles the frames either side of the right ones, the
more so on a zoom or a pan: the crop windows place it (a 5 % crop of a slow zoom, settled
by the first look at 36 bits, was 0.56 s off; the windows found it within 0.44 s)."""

DECISIVE_SLACK_S: Final = 0.25
"""Tolerance of those two checks: one sampling interval."""

DECISIVE_RIVALS: Final = 2
"""Alignments (the best and its strongest rival) that :func:`decisive` looks at."""

PLACEMENT_BINS: Final = 4
"""Offset bins (a second) either side of an alignment within which another view of the
sample may place it (see :func:`_placing_hits`): the views of a 5 % crop of a zoom put it
up to 1.1 s apart (the halves 0.52 s early, the overscan crops 0.36 s and the whole
picture 0.58 s late)."""

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
    evidence: float
    """Their votes weighed by closeness and shared with rival contents, each shot's votes
    discounted for their correlation (see :func:`align_video`)."""
    significance: float
    """``-log10`` of the chance that some wrong alignment gathers as much evidence."""
    confidence: float
    first_s: float
    last_s: float
    """Sample times of the first and last frames found on the alignment."""
    distance: float = 0.0
    """Median over the sample's frames of their closest hit near the alignment, in bits:
    a few bits for the same picture re-encoded or scaled, 30-60 for a cropped, inset or
    filmed one."""
    explained: int = 0
    """Sampling slots of the sample the alignment accounts for: a frame found on it, or a
    slot where the reference is flat (no hash). A slot that falls outside the reference,
    or where the reference shows a picture that the sample's frame is not found on
    (or is flat), is not explained."""


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


def view_groups(
    hashes: NDArray[np.uint8], frame_of: NDArray[np.int64], views: NDArray[np.uint8]
) -> NDArray[np.int64]:
    """Group id of each hash: the runs of one picture of each view (see :func:`picture_groups`).

    A view keeps its picture while others change (a static caption box or
    one side of a split screen under a moving picture): it is one piece of
    evidence, however many whole pictures pass. Ids are distinct across views.
    """
    groups = np.zeros(views.shape[0], dtype=np.int64)
    base = 0
    for view in np.unique(views):
        rows = np.flatnonzero(views == view)
        own = picture_groups(hashes[rows], frame_of[rows], np.ones(rows.size, dtype=bool))
        groups[rows] = base + own[frame_of[rows]]
        base += int(own.max()) + 1
    return groups


def shot_units(
    hashes: NDArray[np.uint8], frame_of: NDArray[np.int64], views: NDArray[np.uint8]
) -> NDArray[np.int64]:
    """Unit id of each hash: runs of frames whose whole picture changes without a cut.

    Pictures of one shot are not independent evidence: a slowly moving
    picture that happens to look like a reference's slowly moving picture
    looks like it frame after frame. A frame starts a new unit when its
    whole-picture hash is more than :data:`SHOT_BREAK` bits from the
    previous frame's; a frame without one stays in the unit before it.
    Every view of a frame is in the frame's unit.
    """
    n_frames = int(frame_of.max()) + 1 if frame_of.size else 0
    whole = np.flatnonzero(views == WHOLE)
    picture = {int(frame_of[i]): hashes[i] for i in whole}
    units = np.zeros(n_frames, dtype=np.int64)
    previous: NDArray[np.uint8] | None = None
    current = 0
    for frame in range(n_frames):
        own = picture.get(frame)
        if own is not None:
            if previous is not None and int(hamming(own, previous)) > SHOT_BREAK:
                current += 1
            previous = own
        units[frame] = current
    found: NDArray[np.int64] = units[frame_of]
    return found


def align_video(
    hits: VideoHits,
    *,
    query_times_s: NDArray[np.float64],
    query_groups: NDArray[np.int64],
    query_views: NDArray[np.uint8],
    interval_s: float,
    total_cells: int,
    sample_s: float,
    reference_frames: Callable[[int], NDArray[np.float64]],
    reference_s: Mapping[int, float],
    query_units: NDArray[np.int64] | None = None,
    top_k: int = 1,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> list[VideoAlignment]:
    """The best alignments of a sample (one per content), by decreasing evidence.

    Contents *tied* (found on the same stretch of the sample, evidence within
    :data:`TIED_EVIDENCE`: the shots two near-duplicates share are the same evidence
    in each) are ranked by how much of the sample they explain
    (:attr:`VideoAlignment.explained`), then by evidence, then by how closely their
    frames match (:attr:`VideoAlignment.distance`). Where the near-duplicates differ
    the sample often shows nothing to hash (a fade, black, a smooth picture), and the
    flat frames are the difference: the true reference is flat there too, while its
    sibling shows a picture, or lies before its own start.

    Parameters
    ----------
    hits : VideoHits
        Reference hashes found near the sample's hashes.
    query_times_s : ndarray of float64, shape (n,)
        Time of each query hash (``hits.query`` indexes it).
    query_groups : ndarray of int64, shape (n,)
        Picture group of each query hash (see :func:`view_groups`).
    query_views : ndarray of uint8, shape (n,)
        View of each query hash.
    interval_s : float
        Sampling interval, the width of an offset bin.
    total_cells : int
        Offset bins in the whole catalogue (its sampled frames), ``M`` above.
    sample_s : float
        Duration of the sample; its sampling slots without a hash are flat.
    reference_frames : callable
        Times of a reference's hashed (not flat) frames, sorted, by key.
    reference_s : mapping of int to float
        Duration of each reference, by key.
    query_units : ndarray of int64, shape (n,), optional
        Shot of each query hash (see :func:`shot_units`); by default every
        picture group is its own shot.
    """
    if len(hits) == 0:
        return []
    times = query_times_s[hits.query]
    frames = np.unique(query_times_s, return_inverse=True)[1].reshape(-1)[hits.query]
    offsets = hits.ref_times_s - times
    bins = np.round(offsets / interval_s).astype(np.int64)
    groups = query_groups[hits.query]
    views = query_views[hits.query].astype(np.int64)
    spread = np.arange(-_SPREAD, _SPREAD + 1)
    cell_key = np.repeat(hits.keys, spread.size)
    cell_bin = (bins[:, None] + spread[None, :]).reshape(-1)
    cell_group = np.repeat(groups, spread.size)
    # One vote per (cell, picture of a view): the unique triples, each with the sample
    # times of the frames behind it and the weight of its most telling hit: close, and
    # not shared graphics.
    triples, of_triple = _unique_rows(
        np.stack([cell_key, cell_bin, cell_group], axis=1), return_inverse=True
    )
    of_triple = of_triple.reshape(-1)
    rivals = _rivals(hits.query, hits.keys, hits.distances)
    telling = _strength(hits.distances) * np.minimum(1.0, SHARED_BY / rivals)
    weights = np.zeros(triples.shape[0])
    np.maximum.at(weights, of_triple, np.repeat(telling, spread.size))
    first = np.full(triples.shape[0], np.inf)
    np.minimum.at(first, of_triple, np.repeat(times, spread.size))
    last = np.full(triples.shape[0], -np.inf)
    np.maximum.at(last, of_triple, np.repeat(times, spread.size))
    view_of_group = np.zeros(int(query_groups.max()) + 1, dtype=np.int64)
    view_of_group[groups] = views
    triple_view = view_of_group[triples[:, 2]]
    # The views of one frame are not independent evidence: each view's pictures are
    # counted on their own, and a cell is as good as its best view.
    candidates, of_candidate = _unique_rows(
        np.stack([triples[:, 0], triples[:, 1], triple_view], axis=1),
        return_inverse=True,
    )
    of_candidate = of_candidate.reshape(-1)
    votes = np.bincount(of_candidate, minlength=candidates.shape[0])
    # Pictures of one shot are not independent evidence (see :func:`shot_units`).
    units = np.arange(query_groups.size, dtype=np.int64) if query_units is None else query_units
    unit_of_group = np.full(int(query_groups.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(unit_of_group, query_groups, units)
    evidence = _within_shots(
        of_candidate, unit_of_group[triples[:, 2]], weights, candidates.shape[0]
    )
    span = np.full(candidates.shape[0], -np.inf)
    np.maximum.at(span, of_candidate, last)
    start = np.full(candidates.shape[0], np.inf)
    np.minimum.at(start, of_candidate, first)
    span -= start
    # A half that no other view corroborates is half the evidence: an overlay (a logo,
    # a caption band, an inset) leaves the whole picture or another half matching too,
    # while shared graphics over smooth backgrounds are confined to one part. A view
    # corroborates only with evidence of its own: a few chance hits at the radius do not.
    cells = _unique_rows(candidates[:, :2])[0]
    at_cell = _cell_index(cells, candidates)
    strong = evidence >= CORROBORATION
    others = np.bincount(at_cell, weights=strong, minlength=cells.shape[0])[at_cell] - strong
    alone = np.isin(candidates[:, 2], HALVES) & (others < 0.5)
    evidence[alone] *= UNCORROBORATED_HALF
    # Chance, per view: the share of the catalogue's cells each picture hits.
    group_ids, cells_per_group = np.unique(triples[:, 2], return_counts=True)
    lam = np.zeros(int(views.max()) + 1)
    np.add.at(lam, view_of_group[group_ids], np.minimum(cells_per_group / max(total_cells, 1), 1.0))
    # Among candidates with as much evidence (the spread makes neighbours tie), the one
    # with the most votes on the bin itself, then the closest hits, is the alignment.
    exact = _per_cell(cells, _unique_rows(np.stack([hits.keys, bins, groups], axis=1))[0])
    closeness = _per_cell(
        cells, np.stack([hits.keys, bins], axis=1), weights=RADIUS + 1 - hits.distances
    )
    order = np.lexsort((candidates[:, 1], -closeness[at_cell], -exact[at_cell], -evidence))
    rank_of = np.empty_like(order)
    rank_of[order] = np.arange(order.size)
    found: list[VideoAlignment] = []
    tied: list[bool] = []
    best = -1  # the candidate of found[0]
    seen: set[int] = set()
    for index in order:
        strength = float(evidence[index])
        # Contents tied with the best (see TIED_EVIDENCE) are aligned too, to be ranked
        # among themselves below: the shots near-duplicates share weigh the same in each.
        tie = bool(found) and (
            strength > found[0].evidence - TIED_EVIDENCE
            and abs(start[index] - start[best]) < 0.5 * interval_s
            and abs(span[index] - span[best]) < 0.5 * interval_s
        )
        if strength < MIN_EVIDENCE or (
            len(found) >= top_k and strength <= found[0].evidence - TIED_EVIDENCE
        ):
            break
        key = int(candidates[index, 0])
        if (
            key in seen
            or span[index] < MIN_SPAN * interval_s - 1e-6
            or (len(found) >= top_k and not tie)
        ):
            continue
        seen.add(key)
        significance = _significance(strength, float(lam[candidates[index, 2]]), total_cells)
        confidence = _confidence(significance)
        if confidence < min_confidence:
            continue
        if not found:
            best = index
        bin_ = int(candidates[index, 1])
        of_key = np.flatnonzero(hits.keys == key)
        on_cell = _on_alignment(of_key, bin_, bins)
        alignment = _alignment(
            key,
            bin_,
            int(votes[index]),
            strength,
            significance,
            confidence,
            hits,
            on_cell,
            _placing_hits(
                index, of_key, on_cell, candidates, evidence, rank_of, hits, bins, views, frames
            ),
            times,
            frames,
            offsets,
            interval_s,
        )
        explained = _explained(
            alignment.offset_s,
            times[_on_alignment(of_key, round(alignment.offset_s / interval_s), bins)],
            sample_s,
            interval_s,
            reference_frames(key),
            reference_s.get(key, 0.0),
        )
        found.append(replace(alignment, explained=explained))
        tied.append(tie or len(found) == 1)
    # Tied contents by what they explain, then evidence and closeness; the rest by evidence.
    ranks = [
        (not t, -a.explained if t else 0, -a.evidence, a.distance)
        for a, t in zip(found, tied, strict=True)
    ]
    found = [found[k] for k in sorted(range(len(found)), key=ranks.__getitem__)]
    return found[:top_k]


def decisive(
    ranked: list[VideoAlignment], sample_s: float, reference_s: Mapping[int, float]
) -> bool:
    """Whether the first look's alignments (best first, no threshold) settle the sample.

    The crop windows add evidence for a cropped, inset or filmed sample; a
    sample whose whole picture and halves are already far beyond chance, with
    no other content close, does not need them. The best must reach
    :data:`DECISIVE_SIGNIFICANCE`, its frames must span
    :data:`DECISIVE_COVERAGE` of the sample (`sample_s` seconds), lie inside
    its reference (`reference_s`: duration by key) and match it within
    :data:`DECISIVE_DISTANCE` bits (median), and the next content must have
    less than :data:`DECISIVE_RIVAL_RATIO` of its evidence.
    """
    if (
        not ranked
        or ranked[0].significance < DECISIVE_SIGNIFICANCE
        or ranked[0].distance > DECISIVE_DISTANCE
    ):
        return False
    best = ranked[0]
    slack = DECISIVE_SLACK_S
    inside = -slack <= best.offset_s <= reference_s.get(best.key, 0.0) - sample_s + slack
    if not inside or best.last_s - best.first_s + slack < DECISIVE_COVERAGE * sample_s:
        return False
    return len(ranked) < 2 or ranked[1].evidence < DECISIVE_RIVAL_RATIO * best.evidence


def concatenate_hits(parts: list[VideoHits]) -> VideoHits:
    """The hits of several lookups of one sample as one set."""
    return VideoHits(
        query=np.concatenate([p.query for p in parts]),
        keys=np.concatenate([p.keys for p in parts]),
        ref_times_s=np.concatenate([p.ref_times_s for p in parts]),
        distances=np.concatenate([p.distances for p in parts]),
    )


def _unique_rows(
    rows: NDArray[np.int64], *, return_inverse: bool = False, return_counts: bool = False
) -> tuple[NDArray[np.int64], ...]:
    """``np.unique(rows, axis=0, ...)`` for integer rows, as a sort of one integer per row.

    The rows are packed into int64 codes (mixed radix over each column's range), which
    keeps their lexicographic order, so the result is the same as ``np.unique``'s with
    ``axis=0`` (which sorts the rows as opaque records, several times slower: it was a
    third of a match's time). Returns the unique rows, then the inverse and the counts
    if asked for.
    """
    n, width = rows.shape
    low = rows.min(axis=0) if n else np.zeros(width, dtype=np.int64)
    span = (rows.max(axis=0) - low + 1) if n else np.ones(width, dtype=np.int64)
    if float(np.prod(span.astype(np.float64))) < 2.0**62:
        codes = np.zeros(n, dtype=np.int64)
        for column in range(width):
            codes = codes * span[column] + (rows[:, column] - low[column])
    else:  # too far apart to pack: rank each column first (ranks keep the order)
        codes = np.zeros(n, dtype=np.int64)
        for column in range(width):
            values, ranks = np.unique(rows[:, column], return_inverse=True)
            codes = codes * values.size + ranks.reshape(-1)
    unique_codes, first, inverse, counts = np.unique(
        codes, return_index=True, return_inverse=True, return_counts=True
    )
    result: list[NDArray[np.int64]] = [rows[first]]
    if return_inverse:
        result.append(inverse.reshape(-1).astype(np.int64))
    if return_counts:
        result.append(counts.astype(np.int64))
    del unique_codes
    return tuple(result)


def _strength(distances: NDArray[np.int64]) -> NDArray[np.float64]:
    """Weight of a hit from its distance: 1 within :data:`CLEAR` bits, falling linearly
    to 0 just past :data:`RADIUS`, where unrelated pictures with similar graphics land."""
    return np.clip((RADIUS + 1 - distances) / (RADIUS + 1 - CLEAR), 0.0, 1.0)


def _rivals(
    query: NDArray[np.int64], keys: NDArray[np.int64], distances: NDArray[np.int64]
) -> NDArray[np.int64]:
    """For each hit, the contents its query hash comes about as close to (at least 1).

    A view of a picture that is near frames of several contents (a caption
    box, a slate, a lower third over a smooth background; a shot two
    near-duplicate adverts share) says little about which one the sample is:
    its weight is shared between them beyond :data:`SHARED_BY`, as an inverse
    document frequency. A content is a rival when the query hash has a hit on it
    within :data:`RIVAL_MARGIN` bits of this hit and within :data:`CLEAR` bits;
    far hits already weigh little, and rivals there are mostly chance.
    """
    pairs, of_pair = _unique_rows(np.stack([query, keys], axis=1), return_inverse=True)
    nearest = np.full(pairs.shape[0], RADIUS + 1, dtype=np.int64)
    np.minimum.at(nearest, of_pair.reshape(-1), distances)
    stride = 2 * (RADIUS + RIVAL_MARGIN + 2)
    codes = np.sort(pairs[:, 0] * stride + nearest)
    reach = np.minimum(distances + RIVAL_MARGIN, CLEAR)
    upto = np.searchsorted(codes, query * stride + reach, side="right")
    found: NDArray[np.int64] = upto - np.searchsorted(codes, query * stride, side="left")
    return np.maximum(found, 1)


def _code(pairs: NDArray[np.int64]) -> NDArray[np.int64]:
    """One sortable integer per ``(key, bin)`` row."""
    codes: NDArray[np.int64] = pairs[:, 0] * (1 << 32) + (pairs[:, 1] + (1 << 31))
    return codes


def _cell_index(cells: NDArray[np.int64], rows: NDArray[np.int64]) -> NDArray[np.int64]:
    """Row of `cells` (sorted, unique ``(key, bin)`` rows) of each of `rows`."""
    found: NDArray[np.int64] = np.searchsorted(_code(cells), _code(rows[:, :2]))
    return found


def _per_cell(
    cells: NDArray[np.int64],
    rows: NDArray[np.int64],
    weights: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """For each ``(key, bin)`` cell, the number (or total weight) of `rows` on it."""
    totals = np.zeros(cells.shape[0], dtype=np.int64)
    np.add.at(totals, _cell_index(cells, rows), 1 if weights is None else weights)
    return totals


def _within_shots(
    owner: NDArray[np.int64], unit: NDArray[np.int64], weights: NDArray[np.float64], size: int
) -> NDArray[np.float64]:
    """Sum of weights per owner, each shot's ``n`` votes ``s`` counted ``s / (1 + (n - 1) rho)``.

    ``rho`` (:data:`WITHIN_SHOT`) is the correlation of chance likenesses
    within a shot: one vote counts fully, many votes of one shot count at most
    ``1 / rho``.
    """
    pairs, of_pair = _unique_rows(np.stack([owner, unit], axis=1), return_inverse=True)
    of_pair = of_pair.reshape(-1)
    total = np.bincount(of_pair, weights=weights, minlength=pairs.shape[0])
    count = np.bincount(of_pair, minlength=pairs.shape[0])
    discounted = total / (1.0 + (count - 1) * WITHIN_SHOT)
    summed = np.bincount(pairs[:, 0], weights=discounted, minlength=size)
    return summed.astype(np.float64)


def _significance(evidence: float, lam: float, total_cells: int) -> float:
    """``-log10(M * P(Poisson(lam) >= evidence))``: how far the evidence is beyond chance."""
    # P(X >= k) for X ~ Poisson(lam) is the regularized lower gamma P(k, lam).
    tail = float(gammainc(evidence, lam)) if lam > 0 else 0.0
    if tail < 1e-12:  # bound the tail by its first term, lam^k e^-lam / k!, in logs
        log_tail = evidence * math.log(max(lam, 1e-300)) - lam - math.lgamma(evidence + 1)
    else:
        log_tail = math.log(tail)
    return -(math.log(max(total_cells, 1)) + log_tail) / math.log(10.0)


def _confidence(significance: float) -> float:
    """Probability that an alignment this significant is right (logistic, see module notes)."""
    return float(expit((significance - CONFIDENCE_MIDPOINT) / CONFIDENCE_SLOPE))


def _on_alignment(
    of_key: NDArray[np.int64], bin_: int, bins: NDArray[np.int64]
) -> NDArray[np.int64]:
    """The hits among `of_key` (a content's) within :data:`_SPREAD` bins of an alignment's bin."""
    found: NDArray[np.int64] = of_key[np.abs(bins[of_key] - bin_) <= _SPREAD]
    return found


def _explained(
    offset_s: float,
    found_s: NDArray[np.float64],
    sample_s: float,
    interval_s: float,
    reference_frames: NDArray[np.float64],
    reference_s: float,
) -> int:
    """Sampling slots of the sample that an alignment explains (see
    :attr:`VideoAlignment.explained`): `offset_s` is the alignment's, `found_s` the sample
    times of the hits on it.

    A slot (a multiple of the interval) inside the reference is explained when a
    frame of the sample there is found on the alignment, or when the reference is
    flat there (none of its hashed frames within half an interval): a flat sample
    frame where the reference is flat too, or one the reference's higher quality floor
    left out (:data:`acr.signals.video.MIN_QUALITY` against the sample's
    :data:`acr.signals.video.QUERY_MIN_QUALITY`: a smooth picture raised by a
    contrast change). A flat sample frame where the reference shows a picture, or a
    picture not found on it, is not. Counted, never weighed: evidence still decides
    between contents that are not tied.
    """
    slots = np.arange(max(1, round(sample_s / interval_s)))
    half = 0.5 * interval_s
    found = np.zeros(slots.size, dtype=bool)
    found[np.clip(np.round(found_s / interval_s).astype(np.int64), 0, slots.size - 1)] = True
    at = offset_s + slots * interval_s
    inside = (at >= -half) & (at <= reference_s + half)
    nearest = np.full(slots.size, np.inf)
    if reference_frames.size:
        after = np.clip(np.searchsorted(reference_frames, at), 0, reference_frames.size - 1)
        before = np.clip(after - 1, 0, reference_frames.size - 1)
        nearest = np.minimum(
            np.abs(reference_frames[after] - at), np.abs(reference_frames[before] - at)
        )
    flat = nearest > half
    return int(np.sum(inside & (found | flat)))


def _median_closest(chosen: NDArray[np.int64], hits: VideoHits, frames: NDArray[np.int64]) -> float:
    """Median over the sample's frames (`frames`: each hit's) of their closest hit among
    `chosen`, in bits; infinite without hits."""
    if chosen.size == 0:
        return math.inf
    closest = np.full(int(frames.max()) + 1, RADIUS + 1, dtype=np.int64)
    np.minimum.at(closest, frames[chosen], hits.distances[chosen])
    return float(np.median(closest[closest <= RADIUS]))


def _placing_hits(
    index: int,
    of_key: NDArray[np.int64],
    on_cell: NDArray[np.int64],
    candidates: NDArray[np.int64],
    evidence: NDArray[np.float64],
    rank_of: NDArray[np.int64],
    hits: VideoHits,
    bins: NDArray[np.int64],
    views: NDArray[np.int64],
    frames: NDArray[np.int64],
) -> NDArray[np.int64]:
    """The hits that place the alignment of candidate `index` in time (`of_key`: the hits
    on its content; `on_cell`: those near its cell).

    Those near its cell, of every view, unless a view of the sample with evidence of
    its own (:data:`MIN_EVIDENCE`) has its best cell on the same content within
    :data:`PLACEMENT_BINS` and matches the reference clearly more closely there (the
    median of each frame's closest hit, more than :data:`RIVAL_MARGIN` bits closer:
    not about as close): then that view's hits near that cell. On a zoom or a
    pan, a view that does not fit the reference's framing (a half of a cropped
    picture) looks most like a moment before or after the true one; the view that
    fits best places it best.
    """
    key, bin_ = int(candidates[index, 0]), int(candidates[index, 1])
    placing, closest = on_cell, _median_closest(on_cell, hits, frames)
    if closest <= RIVAL_MARGIN:  # no view can come clearly closer
        return placing
    near = np.flatnonzero(
        (candidates[:, 0] == key)
        & (np.abs(candidates[:, 1] - bin_) <= PLACEMENT_BINS)
        & (evidence >= MIN_EVIDENCE)
    )
    for view in np.unique(candidates[near, 2]):
        rows = near[candidates[near, 2] == view]
        cell = int(rows[np.argmin(rank_of[rows])])
        mine = _on_alignment(of_key, int(candidates[cell, 1]), bins)
        mine = mine[views[mine] == view]
        distance = _median_closest(mine, hits, frames)
        if distance < closest - RIVAL_MARGIN:
            placing, closest = mine, distance
    return placing


def _alignment(
    key: int,
    bin_: int,
    votes: int,
    evidence: float,
    significance: float,
    confidence: float,
    hits: VideoHits,
    on_cell: NDArray[np.int64],
    placing: NDArray[np.int64],
    times: NDArray[np.float64],
    frames: NDArray[np.int64],
    offsets: NDArray[np.float64],
    interval_s: float,
) -> VideoAlignment:
    """An alignment from the hits on its cell (`on_cell`) and those that place it.

    The offset is the median over the sample's frames of their own estimate: a frame's
    closest hit among `placing` (see :func:`_placing_hits`), moved between that
    reference frame and its neighbours by the vertex of the parabola through the three
    distances: reference frames are a sampling interval apart, the sample's frames fall
    anywhere between them.
    """
    frame_times = times[placing]
    estimates = []
    for t in np.unique(frame_times):
        mine = placing[frame_times == t]
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
    found = times[on_cell]
    return VideoAlignment(
        key=key,
        offset_s=float(np.median(estimates)) if estimates else bin_ * interval_s,
        votes=votes,
        evidence=evidence,
        significance=significance,
        confidence=confidence,
        first_s=float(found.min()) if found.size else 0.0,
        last_s=float(found.max()) if found.size else 0.0,
        distance=min(_median_closest(on_cell, hits, frames), float(RADIUS)),
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
