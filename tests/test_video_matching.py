"""Alignment of frame-hash hits: what counts as evidence (acr.video_matching)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from numpy.typing import NDArray

from acr.index.video_lookup import VideoHits
from acr.signals.video.views import HALVES
from acr.video_matching import (
    CORROBORATION,
    DECISIVE_DISTANCE,
    DECISIVE_RIVAL_RATIO,
    DECISIVE_SIGNIFICANCE,
    DEFAULT_MIN_CONFIDENCE,
    TIED_EVIDENCE,
    WITHIN_SHOT,
    VideoAlignment,
    align_video,
    decisive,
    shot_units,
    view_groups,
)

INTERVAL = 0.25
CELLS = 30_000  # about two hours of references at 4 frames/s


def _align(
    frame_times: list[float],
    contents: list[int],
    distance: int,
    view: int = 0,
    *,
    units: list[int] | None = None,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> list[VideoAlignment]:
    """Each sample frame (its own picture, in `view`, shot `units`) hits every content 10 s in."""
    times = np.asarray(frame_times)
    query = np.repeat(np.arange(times.size), len(contents))
    hits = VideoHits(
        query=query.astype(np.int64),
        keys=np.tile(np.asarray(contents, dtype=np.int64), times.size),
        ref_times_s=times[query] + 10.0,
        distances=np.full(query.size, distance, dtype=np.int64),
    )
    return align_video(
        hits,
        query_times_s=times,
        query_groups=np.arange(times.size, dtype=np.int64),
        query_views=np.full(times.size, view, dtype=np.uint8),
        interval_s=INTERVAL,
        total_cells=CELLS,
        sample_s=float(times.max()) + INTERVAL,
        reference_frames=_frames_of(hits),
        reference_s=dict.fromkeys(contents, 60.0),
        query_units=None if units is None else np.asarray(units, dtype=np.int64),
        min_confidence=min_confidence,
    )


def _frames_of(hits: VideoHits) -> Callable[[int], NDArray[np.float64]]:
    """A reference's hashed frames: those the hits show (it is flat elsewhere)."""
    return lambda key: np.unique(hits.ref_times_s[hits.keys == key])


def _align_hits(
    frame_times: list[float],
    frame_views: list[int],
    rows: list[tuple[int, int, float, int]],
    *,
    top_k: int = 1,
    sample_s: float | None = None,
    frames: dict[int, list[float]] | None = None,
) -> list[VideoAlignment]:
    """Align explicit hits ``(query hash, content, reference time, distance)``; hash ``i``
    is a picture of its own at ``frame_times[i]`` in view ``frame_views[i]``. References
    last 60 s and show pictures where the hits are, or at `frames` (by content)."""
    query, keys, ref_times, distances = (np.asarray(column) for column in zip(*rows, strict=True))
    hits = VideoHits(
        query=query.astype(np.int64),
        keys=keys.astype(np.int64),
        ref_times_s=ref_times.astype(np.float64),
        distances=distances.astype(np.int64),
    )
    shown = _frames_of(hits)
    return align_video(
        hits,
        query_times_s=np.asarray(frame_times),
        query_groups=np.arange(len(frame_times), dtype=np.int64),
        query_views=np.asarray(frame_views, dtype=np.uint8),
        interval_s=INTERVAL,
        total_cells=CELLS,
        sample_s=max(frame_times) + INTERVAL if sample_s is None else sample_s,
        reference_frames=lambda key: np.union1d(shown(key), (frames or {}).get(key, [])),
        reference_s=dict.fromkeys(np.unique(keys).tolist(), 60.0),
        top_k=top_k,
        min_confidence=0.0,
    )


def test_close_hits_on_distinct_pictures_align() -> None:
    found = _align([0.0, 0.5, 1.0, 1.5], [7], distance=20)
    assert [a.key for a in found] == [7]
    assert found[0].offset_s == pytest.approx(10.0)
    assert found[0].confidence >= DEFAULT_MIN_CONFIDENCE and found[0].votes == 4
    assert found[0].distance == 20


def test_contents_tied_on_evidence_go_to_the_closest_match() -> None:
    """Near-duplicate adverts: the same shot weighs the same in both."""
    times = [1.0, 1.5, 2.0, 2.5]
    rows = [(i, key, t + 3.0, d) for i, t in enumerate(times) for key, d in ((1, 30), (2, 10))]
    found = _align_hits(times, [0] * 4, rows, top_k=2)
    assert [a.key for a in found] == [2, 1]
    assert found[0].evidence == found[1].evidence
    assert [a.key for a in _align_hits(times, [0] * 4, rows)] == [2]


def test_a_tie_goes_to_the_alignment_that_keeps_the_sample_inside_its_reference() -> None:
    """Content 1 shows the shot from its own start, so on it the sample would begin 0.75 s
    before the reference does; content 2 explains the same frames from inside."""
    times = [1.0, 1.5, 2.0, 2.5]
    rows = [(i, 1, t - 0.75, 10) for i, t in enumerate(times)]
    rows += [(i, 2, t + 3.0, 30) for i, t in enumerate(times)]
    found = _align_hits(times, [0] * 4, rows, top_k=2)
    assert [a.key for a in found] == [2, 1]
    assert found[1].offset_s == pytest.approx(-0.75)
    assert found[0].explained == 11 and found[1].explained == 8


def test_tied_contents_go_to_the_one_that_is_flat_where_the_sample_is() -> None:
    """Near-duplicates share a shot; the sample opens on a fade. Content 1 fades too, content 2
    shows another picture there: the flat frames tell them apart, not the evidence."""
    times = [1.0, 1.5, 2.0, 2.5, 3.0]
    rows = [
        (i, key, t + 10.0, 20 if key == 2 else 24) for i, t in enumerate(times) for key in (1, 2)
    ]
    other = [10.0, 10.25, 10.5, 10.75]  # content 2's own shot before the shared one
    found = _align_hits(times, [0] * 5, rows, top_k=2, frames={2: other})
    assert found[0].evidence == found[1].evidence and found[1].distance < found[0].distance
    assert [a.key for a in found] == [1, 2]
    assert [a.explained for a in found] == [13, 9]


def test_evidence_beyond_a_tie_outweighs_the_flat_frames() -> None:
    """Ranked by what they explain only when tied: one more clear picture decides."""
    times = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    rows = [(i, 1, t + 10.0, 20) for i, t in enumerate(times[:5])]
    rows += [(i, 2, t + 20.0, 20) for i, t in enumerate(times)]
    found = _align_hits(times, [0] * 7, rows, top_k=2, frames={2: [20.0, 20.25, 20.5, 20.75]})
    assert found[0].evidence - found[1].evidence >= TIED_EVIDENCE
    assert found[0].explained < found[1].explained
    assert [a.key for a in found] == [2, 1]


def test_a_half_is_corroborated_only_by_a_view_with_evidence_of_its_own() -> None:
    """Shared graphics in the bottom half, and a few chance whole-picture hits at the radius."""
    bottom = HALVES[1]
    times = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    half = [(i, 7, t + 10.0, 20) for i, t in enumerate(times)]
    [alone] = _align_hits(times, [bottom] * 6, half)

    def with_whole(distance: int) -> VideoAlignment:
        whole = [(6 + i, 7, t + 10.0, distance) for i, t in enumerate(times[:3])]
        return _align_hits(times + times[:3], [bottom] * 6 + [0] * 3, half + whole)[0]

    weak, strong = with_whole(62), with_whole(20)
    assert 3 * (65 - 62) / (65 - 52) < CORROBORATION <= 3
    assert weak.evidence == pytest.approx(alone.evidence)
    assert strong.evidence == pytest.approx(2 * alone.evidence)


def test_hits_at_the_edge_of_the_radius_are_not_evidence() -> None:
    """Unrelated footage with similar graphics lands 56-64 bits from reference frames."""
    assert _align([0.0, 0.5, 1.0, 1.5], [7], distance=62) == []


def test_adjacent_frames_alone_cannot_place_a_sample() -> None:
    assert _align([0.0, 0.25], [7], distance=20, min_confidence=0.0) == []
    assert [a.key for a in _align([0.0, 0.5], [7], distance=20, min_confidence=0.0)] == [7]
    assert [a.key for a in _align([0.0, 0.5, 1.0], [7], distance=20)] == [7]


def test_pictures_shared_by_many_contents_weigh_little() -> None:
    """A caption box or slate near frames of six contents says little about any of them."""
    assert _align([0.0, 0.5, 1.0], [1, 2, 3, 4, 5, 6], distance=40) == []
    assert [a.key for a in _align([0.0, 0.5, 1.0], [1, 2], distance=40)] in ([1], [2])


def test_a_half_no_other_view_corroborates_counts_half() -> None:
    """Shared graphics over a smooth background are confined to one part of the picture."""
    bottom = HALVES[1]
    times = [0.0, 0.5, 1.0, 1.5]
    half = _align(times, [7], distance=20, view=bottom, min_confidence=0.0)
    whole = _align(times, [7], distance=20, min_confidence=0.0)
    assert half[0].evidence == pytest.approx(0.5 * whole[0].evidence)
    assert _align(times, [7], distance=20, view=bottom) == []
    assert [a.key for a in _align([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], [7], 20, view=bottom)] == [7]


def test_a_view_that_keeps_its_picture_is_one_piece_of_evidence() -> None:
    rng = np.random.default_rng(5)
    frames = 6
    whole = rng.integers(0, 256, (frames, 32), dtype=np.uint8)  # a new picture every frame
    half = np.repeat(rng.integers(0, 256, (1, 32), dtype=np.uint8), frames, axis=0)
    hashes = np.concatenate([whole, half])
    frame_of = np.tile(np.arange(frames, dtype=np.int64), 2)
    views = np.repeat(np.array([0, HALVES[1]], dtype=np.uint8), frames)
    groups = view_groups(hashes, frame_of, views)
    assert np.unique(groups[views == 0]).size == frames
    assert np.unique(groups[views == HALVES[1]]).size == 1
    assert not set(groups[views == 0]) & set(groups[views == HALVES[1]])


def test_a_shot_is_one_unit_and_a_cut_starts_another() -> None:
    rng = np.random.default_rng(9)
    bits = np.unpackbits(rng.integers(0, 256, 32, dtype=np.uint8))
    drifting = [np.packbits(bits)]
    for _ in range(5):  # a slow pan: each frame 12 bits from the one before
        bits = bits.copy()
        bits[rng.choice(256, 12, replace=False)] ^= 1
        drifting.append(np.packbits(bits))
    cuts = rng.integers(0, 256, (2, 32), dtype=np.uint8)  # two unrelated pictures
    hashes = np.concatenate([np.stack(drifting), cuts])
    frame_of = np.arange(8, dtype=np.int64)
    whole = np.zeros(8, dtype=np.uint8)
    assert shot_units(hashes, frame_of, whole).tolist() == [0, 0, 0, 0, 0, 0, 1, 2]
    assert np.unique(view_groups(hashes, frame_of, whole)[:6]).size > 1  # the pan moves on


def test_pictures_of_one_shot_are_not_independent_evidence() -> None:
    """A slowly moving picture that looks like a reference's looks like it frame after frame."""
    times = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    [apart] = _align(times, [7], distance=50, units=[0, 1, 2, 3, 4, 5], min_confidence=0.0)
    [together] = _align(times, [7], distance=50, units=[0] * 6, min_confidence=0.0)
    assert apart.votes == together.votes == 6
    assert together.evidence == pytest.approx(6 / (1 + 5 * WITHIN_SHOT))
    assert together.evidence < apart.evidence / 1.5
    assert together.confidence < apart.confidence


def _alignment(
    key: int, significance: float, evidence: float, distance: float = 10.0
) -> VideoAlignment:
    return VideoAlignment(key, 10.0, 4, evidence, significance, 1.0, 0.0, 4.75, distance)


def test_only_an_overwhelming_answer_without_a_close_rival_is_decisive() -> None:
    strong = _alignment(1, DECISIVE_SIGNIFICANCE + 1, 8.0)
    durations = {1: 60.0, 2: 60.0}
    assert decisive([strong], 5.0, durations)
    assert decisive([strong, _alignment(2, 2.0, 8.0 * DECISIVE_RIVAL_RATIO * 0.9)], 5.0, durations)
    assert not decisive(
        [strong, _alignment(2, 2.0, 8.0 * DECISIVE_RIVAL_RATIO * 1.1)], 5.0, durations
    )
    assert not decisive([_alignment(1, DECISIVE_SIGNIFICANCE - 0.1, 8.0)], 5.0, durations)
    assert not decisive([], 5.0, durations)
    # A line that leaves part of the sample outside its reference, or spans too little of it.
    assert not decisive([strong], 5.0, {1: 12.0})
    assert not decisive([strong], 10.0, durations)
    # A picture that only resembles the reference's (a crop of a zoom): the windows place it.
    far = _alignment(1, DECISIVE_SIGNIFICANCE + 1, 8.0, distance=DECISIVE_DISTANCE + 4)
    assert not decisive([far], 5.0, durations)
