"""Nominate, then verify: a look over budget reads its nominees' hits exactly.

``CodeLookup.search_contents`` must return, bit for bit and in the same order,
the hits of an unbudgeted ``search`` whose content is one of those asked for —
over several tables (merged, apart, dense), with tombstones and from
memory-mapped tables — and ``identify`` with a budget so small that every
look goes through nomination must answer as the unbudgeted search does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from acr.demo import synth_song
from acr.index import lookup as lookup_module
from acr.index import segment as segment_module
from acr.index.lookup import CodeLookup
from acr.index.segment import PostingTable, Segment, build_segment, map_table, write_table
from acr.matching import Hits, nominate
from acr.search import Query, identify
from acr.signals.audio import AudioSignal
from acr.signals.audio.codes import CODE_BITS
from acr.signals.base import Fingerprints
from benchmarks import degrade
from tests.conftest import SONG_RATE

SIGNAL = AudioSignal()
SONGS = 9
SECONDS = 30.0
FIELDS = ("query_frames", "keys", "ref_frames")
KEY_SETS = ([2], [1, 3, 9], [6, 5], [4, 7, 8, 2], list(range(1, SONGS + 1)), [42])


@pytest.fixture(scope="module")
def segments() -> list[Segment]:
    """Three segments of real fingerprints of synthetic songs (keys 1..9)."""
    songs = [
        SIGNAL.fingerprint_samples(synth_song(800 + i, SECONDS), SONG_RATE, query=False)
        for i in range(SONGS)
    ]
    return [
        build_segment(
            "audio", SIGNAL.hop_s, [(k + 1, songs[k].codes, songs[k].frames) for k in keys]
        )
        for keys in ([0, 1, 2, 3], [4, 5], [6, 7, 8])
    ]


def _clip(seed: int, start_s: float, rng: np.random.Generator) -> NDArray[np.float32]:
    song = synth_song(seed, SECONDS)
    clip = song[round(start_s * SONG_RATE) : round((start_s + 5.0) * SONG_RATE)]
    return clip + rng.normal(0, 0.05, clip.size).astype(np.float32)


@pytest.fixture(scope="module")
def samples() -> list[Fingerprints]:
    """Noisy excerpts of indexed songs, one played 6 % fast, and a song not indexed."""
    rng = np.random.default_rng(7)
    clips = [_clip(seed, start, rng) for seed, start in ((801, 3.0), (805, 11.0), (808, 20.0))]
    fast = degrade.speed(_clip(803, 6.0, rng), SONG_RATE, 1.06)[: round(4.5 * SONG_RATE)]
    clips += [fast, _clip(899, 2.0, rng)]
    return [SIGNAL.fingerprint_samples(clip, SONG_RATE, query=True) for clip in clips]


def _same(left: Hits, right: Hits) -> bool:
    return all(np.array_equal(getattr(left, name), getattr(right, name)) for name in FIELDS)


def _of(hits: Hits, keys: list[int]) -> Hits:
    mine = np.isin(hits.keys, keys)
    return Hits(hits.query_frames[mine], hits.keys[mine], hits.ref_frames[mine])


def _check_contents(lookup: CodeLookup, samples: list[Fingerprints]) -> None:
    """``search_contents`` is the unbudgeted search filtered to the keys, in its order."""
    for sample in samples:
        for flips in (0, 1):
            full = lookup.search(sample.codes, sample.frames, max_flips=flips)
            for keys in KEY_SETS:
                got = lookup.search_contents(
                    sample.codes, sample.frames, np.array(keys, dtype=np.int64), max_flips=flips
                )
                assert got.complete
                assert _same(got, _of(full, keys))


@pytest.mark.parametrize(
    ("dense", "merged"),
    [(False, True), (False, False), (True, False)],
    ids=["sparse-merged", "sparse-apart", "dense"],
)
def test_contents_get_exactly_their_unbudgeted_hits(
    segments: list[Segment],
    samples: list[Fingerprints],
    dense: bool,
    merged: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(segment_module, "DENSE_MIN_POSTINGS", 0 if dense else 1 << 40)
    monkeypatch.setattr(lookup_module, "MERGE_MAX_POSTINGS", 1 << 40 if merged else 0)
    lookup = CodeLookup()
    for segment in segments:
        lookup.add_segment(segment)
    assert lookup.tables == (1 if merged else len(segments))
    _check_contents(lookup, samples)
    # Tombstoned contents are not returned, as by the search.
    for key in (2, 6):
        lookup.remove_key(key)
    _check_contents(lookup, samples)
    got = lookup.search_contents(
        samples[0].codes, samples[0].frames, np.array([2, 6], dtype=np.int64)
    )
    assert got.keys.size == 0


def test_mapped_tables_give_the_same_content_hits(
    segments: list[Segment], samples: list[Fingerprints], tmp_path: Path
) -> None:
    mapped = CodeLookup()
    for i, segment in enumerate(segments):
        path = tmp_path / f"{i}.post"
        write_table(PostingTable.from_segment(segment, CODE_BITS), path)
        mapped.add_table(map_table(path, CODE_BITS))
    _check_contents(mapped, samples)


def test_the_true_content_is_nominated_from_a_small_sample(
    segments: list[Segment], samples: list[Fingerprints]
) -> None:
    lookup = CodeLookup()
    for segment in segments:
        lookup.add_segment(segment)
    for sample, key in zip(samples[:3], (2, 6, 9), strict=False):
        full = lookup.search(sample.codes, sample.frames, max_flips=0)
        budget = full.keys.size // 4
        sampled = lookup.search(
            sample.codes, sample.frames, max_flips=0, max_hits=budget, sample_hits=budget // 2
        )
        assert not sampled.complete and 0 < sampled.keys.size <= budget // 2
        assert nominate(sampled, 1).tolist() == [key]
        assert nominate(sampled, 3).size <= 3
    empty = np.zeros(0, dtype=np.int64)
    assert nominate(Hits(empty, empty, empty), 4).size == 0


class _Spy:
    """A lookup that records how it was asked."""

    def __init__(self, lookup: CodeLookup) -> None:
        self.lookup = lookup
        self.verified = 0

    def search(
        self,
        codes: NDArray[np.uint32],
        frames: NDArray[np.uint32],
        *,
        max_flips: int = 1,
        max_hits: int | None = None,
        sample_hits: int | None = None,
    ) -> Hits:
        return self.lookup.search(
            codes, frames, max_flips=max_flips, max_hits=max_hits, sample_hits=sample_hits
        )

    def search_contents(
        self,
        codes: NDArray[np.uint32],
        frames: NDArray[np.uint32],
        keys: NDArray[np.int64],
        *,
        max_flips: int = 1,
    ) -> Hits:
        self.verified += 1
        return self.lookup.search_contents(codes, frames, keys, max_flips=max_flips)


def test_a_look_over_budget_answers_as_the_unbudgeted_search(
    segments: list[Segment], samples: list[Fingerprints]
) -> None:
    lookup = CodeLookup()
    for segment in segments:
        lookup.add_segment(segment)

    def ref_frames(_: int) -> int:
        return round(SECONDS / SIGNAL.hop_s)

    answers = []
    for sample in samples:
        unbudgeted = identify(Query(sample, lookup, ref_frames, SONGS, max_hits=None))
        # Within the budget: the looks read everything, nothing is nominated.
        within = _Spy(lookup)
        assert identify(Query(sample, within, ref_frames, SONGS)) == unbudgeted
        # Every look over budget (the warp screen, within its own budget, reads
        # its looks whole: a screen of a few hits each would rank warps by chance).
        tiny = _Spy(lookup)
        query = Query(
            sample,
            tiny,
            ref_frames,
            SONGS,
            max_hits=64,
            nomination_hits=32,
            nominees=3,
        )
        assert identify(query) == unbudgeted
        assert tiny.verified > 0 and query.nominated
        answers.append(unbudgeted.ranked[0].key if unbudgeted.ranked else None)
    assert answers == [2, 6, 9, 4, None]
