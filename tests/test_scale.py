"""The code lookup at scale: code-ordered posting tables answer exactly like FAISS did.

The reference is the lookup this project used before (a ``faiss.IndexBinaryHash``
with one-bit flips and posting arrays beside it), kept here as the oracle: the
tables must return the same hits *in the same order*, over several segments,
with tombstones, for exact-only looks, and from a memory-mapped file.
"""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np
import pytest
from numpy.typing import NDArray

from acr.demo import synth_song
from acr.index import lookup as lookup_module
from acr.index import segment as segment_module
from acr.index.lookup import CodeLookup, probes_of, rarest_probes
from acr.index.segment import (
    PostingTable,
    Segment,
    build_segment,
    map_table,
    packed_bytes,
    write_table,
)
from acr.matching import Hits
from acr.search import HIT_BUDGET, Query, identify
from acr.signals.audio import AudioSignal
from acr.signals.audio.codes import CODE_BITS
from acr.signals.base import Fingerprints
from tests.conftest import SONG_RATE

SIGNAL = AudioSignal()


class FaissLookup:
    """The previous ``CodeLookup``: FAISS hash index, ids are posting positions."""

    def __init__(self) -> None:
        faiss.omp_set_num_threads(1)
        self.index = faiss.IndexBinaryHash(24, 24)
        self.index.nflip = 1
        self.keys = np.zeros(0, dtype=np.int64)
        self.frames = np.zeros(0, dtype=np.int64)
        self.live = np.zeros(0, dtype=bool)

    def add_segment(self, segment: Segment) -> None:
        base = self.keys.size
        ids = np.arange(base, base + segment.codes.size, dtype=np.int64)
        self.index.add_with_ids(packed_bytes(segment.codes), ids)
        self.keys = np.concatenate([self.keys, segment.posting_keys()])
        self.frames = np.concatenate([self.frames, segment.frames.astype(np.int64)])
        self.live = np.concatenate([self.live, np.ones(segment.codes.size, dtype=bool)])

    def remove_key(self, key: int) -> None:
        self.live[self.keys == key] = False

    def search(self, codes: NDArray[np.uint32], frames: NDArray[np.uint32], max_flips: int) -> Hits:
        lims, _, ids = self.index.range_search(packed_bytes(codes), max_flips + 1)
        which = np.repeat(np.arange(codes.size), np.diff(lims.astype(np.int64)))
        live = self.live[ids]
        ids = ids[live]
        return Hits(frames[which[live]].astype(np.int64), self.keys[ids], self.frames[ids])


@pytest.fixture(scope="module")
def segments() -> list[Segment]:
    """Three segments of real fingerprints of synthetic songs (keys 1..9)."""
    songs = [
        SIGNAL.fingerprint_samples(synth_song(700 + i, 30.0), SONG_RATE, query=False)
        for i in range(9)
    ]
    return [
        build_segment(
            "audio", SIGNAL.hop_s, [(k + 1, songs[k].codes, songs[k].frames) for k in keys]
        )
        for keys in ([0, 1, 2, 3], [4, 5], [6, 7, 8])
    ]


@pytest.fixture(scope="module")
def queries() -> list[tuple[NDArray[np.uint32], NDArray[np.uint32]]]:
    """Noisy excerpts of indexed songs, and one song that is not indexed."""
    rng = np.random.default_rng(5)
    found = []
    for seed, start in ((701, 3.0), (705, 11.0), (708, 20.0), (799, 0.0)):
        clip = synth_song(seed, 30.0)[round(start * SONG_RATE) : round((start + 5.0) * SONG_RATE)]
        clip = clip + rng.normal(0, 0.05, clip.size).astype(np.float32)
        query = SIGNAL.fingerprint_samples(clip, SONG_RATE, query=True)
        found.append((query.codes, query.frames))
    return found


FIELDS = ("query_frames", "keys", "ref_frames")


def _same(left: Hits, right: Hits) -> bool:
    return all(np.array_equal(getattr(left, name), getattr(right, name)) for name in FIELDS)


def _probe_masks(flips: int) -> NDArray[np.uint32]:
    """A code's probes: itself, then (with flips) bit 22 down to bit 0 flipped."""
    bits = reversed(range(CODE_BITS)) if flips else []
    return np.array([0, *(1 << bit for bit in bits)], dtype=np.uint32)


@pytest.mark.parametrize(
    ("dense", "merged"),
    [(False, True), (False, False), (True, False)],
    ids=["sparse-merged", "sparse-apart", "dense"],
)
def test_tables_return_faiss_hits_in_faiss_order(
    segments: list[Segment],
    queries: list[tuple[NDArray[np.uint32], NDArray[np.uint32]]],
    dense: bool,
    merged: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(segment_module, "DENSE_MIN_POSTINGS", 0 if dense else 1 << 40)
    monkeypatch.setattr(lookup_module, "MERGE_MAX_POSTINGS", 1 << 40 if merged else 0)
    reference, tables = FaissLookup(), CodeLookup()
    for segment in segments:
        reference.add_segment(segment)
        tables.add_segment(segment)
    assert tables.keys() == set(range(1, 10))
    assert tables.tables == (1 if merged else len(segments))
    for flips in (0, 1):
        for codes, frames in queries:
            expected = reference.search(codes, frames, flips)
            got = tables.search(codes, frames, max_flips=flips)
            assert expected.keys.size > 0
            assert _same(got, expected)
    for key in (2, 6):
        reference.remove_key(key)
        tables.remove_key(key)
    assert tables.keys() == set(range(1, 10)) - {2, 6}
    for codes, frames in queries:
        got = tables.search(codes, frames)
        assert not np.isin(got.keys, [2, 6]).any()
        assert _same(got, reference.search(codes, frames, 1))


def test_mapped_table_answers_like_the_segment(
    segments: list[Segment],
    queries: list[tuple[NDArray[np.uint32], NDArray[np.uint32]]],
    tmp_path: Path,
) -> None:
    in_memory, mapped = CodeLookup(), CodeLookup()
    for i, segment in enumerate(segments):
        table = PostingTable.from_segment(segment, CODE_BITS)
        path = tmp_path / f"{i}.post"
        assert write_table(table, path) == path.stat().st_size
        in_memory.add_table(table)
        mapped.add_table(map_table(path, CODE_BITS))
    assert mapped.postings == sum(s.codes.size for s in segments)
    for codes, frames in queries:
        assert _same(mapped.search(codes, frames), in_memory.search(codes, frames))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(Exception, match="corrupt"):
        map_table(path, CODE_BITS)


def test_rarest_probes_fill_the_budget_codes_first_rarest_first() -> None:
    # Two codes of three probes each: the code itself, then two neighbours.
    lengths = np.array([9, 0, 3, 5, 1, 3], dtype=np.int64)
    assert rarest_probes(lengths, 21, per_code=3).all()
    assert rarest_probes(lengths, 100, per_code=3).all()
    # Codes first (5 then 9), then neighbours rarest first (0, 1, then the two 3s in probe order).
    assert rarest_probes(lengths, 18, per_code=3).tolist() == [True, True, True, True, True, False]
    assert rarest_probes(lengths, 15, per_code=3).tolist() == [True, True, False, True, True, False]
    assert rarest_probes(lengths, 13, per_code=3).tolist() == [
        False,
        False,
        False,
        True,
        False,
        False,
    ]
    # Exact lookups: one probe a code, rarest first.
    assert rarest_probes(lengths, 10, per_code=1).tolist() == [False, True, True, False, True, True]


@pytest.fixture
def tables(segments: list[Segment]) -> CodeLookup:
    """All three segments in one lookup."""
    lookup = CodeLookup()
    for segment in segments:
        lookup.add_segment(segment)
    return lookup


def test_a_lookup_over_budget_reads_only_its_rarest_probes(
    tables: CodeLookup,
    queries: list[tuple[NDArray[np.uint32], NDArray[np.uint32]]],
) -> None:
    for flips in (0, 1):
        for codes, frames in queries:
            lengths = tables.code_counts()[probes_of(codes, flips)]
            full = tables.search(codes, frames, max_flips=flips)
            assert int(lengths.sum()) == full.keys.size
            assert _same(
                tables.search(codes, frames, max_flips=flips, max_hits=full.keys.size), full
            )
            budget = full.keys.size // 4
            got = tables.search(codes, frames, max_flips=flips, max_hits=budget)
            assert 0 < got.keys.size <= budget
            assert full.complete and not got.complete
            # Exactly the hits of the kept probes, in probe order: rebuild them one probe at a time.
            probes = probes_of(codes, flips)
            assert np.array_equal(probes, (codes[:, None] ^ _probe_masks(flips)[None, :]).ravel())
            kept = rarest_probes(lengths, budget, per_code=_probe_masks(flips).size)
            frames_per_probe = np.repeat(frames, _probe_masks(flips).size)
            parts = [
                tables.search(probes[i : i + 1], frames_per_probe[i : i + 1], max_flips=0)
                for i in np.flatnonzero(kept)
            ]
            expected = Hits(*(np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS))
            assert _same(got, expected)
            # The probes left out are the common ones (codes and neighbours apart).
            own = np.arange(lengths.size) % _probe_masks(flips).size == 0
            for group in (own, ~own):
                if (group & kept).any() and (group & ~kept).any():
                    assert lengths[group & ~kept].min() >= lengths[group & kept].max()


def test_a_budget_keeps_the_answer_while_capping_the_work(
    tables: CodeLookup,
    queries: list[tuple[NDArray[np.uint32], NDArray[np.uint32]]],
) -> None:
    songs = [(701, 3.0), (705, 11.0), (708, 20.0)]
    for (seed, start_s), (codes, frames) in zip(songs, queries, strict=False):
        sample = Fingerprints("audio", codes, frames, SIGNAL.hop_s, 5.0)
        full = tables.search(codes, frames).keys.size
        for budget in (HIT_BUDGET, full // 4):
            query = Query(sample, tables, lambda _: round(30.0 / SIGNAL.hop_s), 9, max_hits=budget)
            best = identify(query, warps=False).ranked[0]
            assert best.key == seed - 700 + 1
            assert abs(best.offset_frames * SIGNAL.hop_s - start_s) < 0.1


def _rss_file_bytes() -> int:
    """File-backed memory mapped into this process (``RssFile`` of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile line")


@pytest.mark.skipif(
    not Path("/proc/self/status").exists()
    or tuple(int(p) for p in os.uname().release.split(".")[:2]) < (5, 14),
    reason="MADV_POPULATE_READ is Linux 5.14+",
)
def test_mapped_tables_are_made_resident_when_they_fit(
    queries: list[tuple[NDArray[np.uint32], NDArray[np.uint32]]], tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    n_codes, n_postings = 50_000, 8_000_000  # 32 MB of postings
    table = PostingTable(
        keys=np.array([1], dtype=np.int64),
        bases=np.array([0], dtype=np.int64),
        codes=np.sort(rng.choice(1 << CODE_BITS, n_codes, replace=False)).astype(np.uint32),
        offsets=np.linspace(0, n_postings, n_codes + 1).astype(np.int64),
        postings=rng.integers(0, 1 << 20, n_postings, dtype=np.uint32),
    )
    write_table(table, tmp_path / "t.post")
    in_memory, mapped = CodeLookup(), CodeLookup()
    in_memory.add_table(table)
    mapped.add_table(map_table(tmp_path / "t.post", CODE_BITS))
    assert in_memory.make_resident() == 0  # nothing mapped

    before = _rss_file_bytes()
    assert mapped.make_resident(max_bytes=n_postings) == 0  # 32 MB do not fit in 8 MB
    assert _rss_file_bytes() - before < 4 << 20

    resident = mapped.make_resident()
    assert resident == table.postings.nbytes + table.codes.nbytes + table.offsets.nbytes
    assert _rss_file_bytes() - before >= 0.95 * resident
    for codes, frames in queries:
        assert _same(mapped.search(codes, frames), in_memory.search(codes, frames))
