"""Stage 4c: the code lookup — postings sorted by code, one table per segment.

A query code is probed as it is and with each of its 23 bits flipped:
fingerprint fields are Gray-coded, so a peak that moved by one band or one
frame changes exactly one bit. Each segment's postings sit in a
:class:`~acr.index.segment.PostingTable`, sorted by code, so a probe is a
range: read from a directory addressed by the code in a large table, or found
among a small table's distinct codes by a binary search that a directory of
their leading bits narrows to a few entries.

This replaced a ``faiss.IndexBinaryHash(24, 24)`` with ``nflip = 1`` that cost
about 30 bytes a posting with the arrays beside it; a table costs 4 bytes a
posting plus its directory, can be memory-mapped (:func:`~acr.index.segment.map_table`)
and returns the same hits in the same order: query code by query code, the
exact code first and then bit 22 down to bit 0 flipped (FAISS also flips bit
23, which no 23-bit code has), within a probe segment by segment, within a
segment in the segment's order (``tests/test_scale.py`` checks it against
FAISS). See ``docs/index-choice.md`` and ``docs/scale.md``.

A look too large to read whole is answered by nomination and verification
(:class:`acr.search.Query`): :meth:`CodeLookup.search` reads a sample of its
rarest probes, and :meth:`CodeLookup.search_contents` reads every posting of a
few contents under every probe, by binary search within each probe's range.

The probing and the decoding of postings are compiled with Numba: they are a
loop over tens of thousands of probes per query whose every step depends on
the last, which NumPy can only express as several passes over temporary
arrays (measured: 7.2 → 2.8 ms a query on the benchmark index).
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numpy.typing import NDArray

from acr.index.segment import PostingTable, Segment
from acr.matching import Hits
from acr.signals.audio.codes import CODE_BITS

BIT_FLIPS = 1
_PROBES = np.array([0] + [1 << bit for bit in reversed(range(CODE_BITS))], dtype=np.uint32)
"""XOR masks of the probes, in the order FAISS's flip enumerator visits them."""
DIRECTORY_BITS = 16
"""Leading code bits addressed by a small table's directory, at most: 2^16 + 1
entries leave a few distinct codes per entry to search; a table with fewer
distinct codes gets a directory about their number long."""
MERGE_MAX_POSTINGS = 1 << 22
"""Small segments are merged in memory into tables of up to this many postings
(about 14 h of audio): re-sorting one costs about 0.3 s."""


class CodeLookup:
    """All live postings of an index, searchable by code."""

    def __init__(self) -> None:
        self._tables: list[PostingTable] = []
        self._directories: list[_Directory | None] = []
        self._owners: list[NDArray[np.int64]] = []
        self._merged: list[bool] = []
        """Whether each table is an in-memory one that later small segments may join."""
        self._live: set[int] = set()
        self._removed: set[int] = set()

    @property
    def tables(self) -> int:
        """Number of posting tables searched (small segments share one)."""
        return len(self._tables)

    @property
    def postings(self) -> int:
        """Number of postings held, tombstoned ones included."""
        return sum(table.size for table in self._tables)

    def add_segment(self, segment: Segment) -> None:
        """Make a segment's postings searchable.

        A small segment joins the last small one in memory: a service that
        indexes uploads one by one would otherwise probe one table per upload.
        """
        table = PostingTable.from_segment(segment, CODE_BITS)
        last = self._tables[-1] if self._tables else None
        if (
            last is not None
            and self._merged[-1]
            and table.codes is not None
            and last.size + table.size <= MERGE_MAX_POSTINGS
        ):
            self._tables.pop()
            self._directories.pop()
            self._owners.pop()
            self._merged.pop()
            table = last.followed_by(table)
        self._append(table, merged=table.codes is not None)

    def add_table(self, table: PostingTable) -> None:
        """Make a table's postings searchable as it is (e.g. one memory-mapped from disk)."""
        self._append(table, merged=False)

    def _append(self, table: PostingTable, *, merged: bool) -> None:
        self._tables.append(table)
        self._directories.append(None if table.codes is None else _directory(table.codes))
        self._owners.append(_owners(np.asarray(table.bases)))
        self._merged.append(merged)
        self._live.update(int(key) for key in table.keys)

    def make_resident(self, max_bytes: int | None = None) -> int:
        """Fault its memory-mapped tables into this process now, if they fit in ``max_bytes``.

        A lookup reads postings all over its tables, and a process pays a fault
        for each page it touches first, and a read from disk for a page not in
        the page cache (after a restart): at 10,000 h the first 40 matches of a
        fresh process took 76-85 ms at the median and 0.7-0.8 s at p95 on a cold
        page cache, 20-21 ms and 154-165 ms with the tables made resident first,
        which read 13 GB in 6.4 s (``docs/scale.md``). Tables larger than ``max_bytes``
        together are left to fault in as they are read, so that they do not
        push everything else out of memory.

        Parameters
        ----------
        max_bytes : int, optional
            Default: three quarters of the memory available now (Linux's
            ``MemAvailable``: free memory and the page cache it may drop, where
            the tables' own pages already are if another process mapped them).

        Returns
        -------
        int
            Bytes made resident: 0 when the tables do not fit, or the kernel
            cannot (Linux before 5.14, other systems).
        """
        if max_bytes is None:
            max_bytes = _memory_available() * 3 // 4
        mapped = sum(table.mapped_bytes for table in self._tables)
        if mapped > max_bytes:
            return 0
        return sum(table.mapped_bytes for table in self._tables if table.make_resident())

    def keys(self) -> set[int]:
        """Content keys with searchable postings."""
        return set(self._live)

    def remove_key(self, key: int) -> None:
        """Stop returning a content's postings (a tombstone until compaction)."""
        if key in self._live:
            self._live.discard(key)
            self._removed.add(key)

    def code_counts(self) -> NDArray[np.int64]:
        """Postings stored under every code (``2**CODE_BITS`` counts), tombstoned ones included.

        ``code_counts()[probes_of(codes, max_flips)]`` is what each probe of
        a query would read; a sharded index sums its shards' counts once per
        snapshot to choose the probes under a budget as a single node would.
        """
        counts = np.zeros(1 << CODE_BITS, dtype=np.int64)
        for table in self._tables:
            offsets = np.asarray(table.offsets, dtype=np.int64)
            sizes = offsets[1:] - offsets[:-1]
            if table.codes is None:
                counts[: sizes.size] += sizes
            else:
                counts[np.asarray(table.codes)] += sizes
        return counts

    def search(
        self,
        codes: NDArray[np.uint32],
        frames: NDArray[np.uint32],
        *,
        max_flips: int = BIT_FLIPS,
        max_hits: int | None = None,
        sample_hits: int | None = None,
        lengths: NDArray[np.int64] | None = None,
    ) -> Hits:
        """Every live posting whose code is within ``max_flips`` bits (at most one) of a query code.

        ``max_flips=0`` returns exact code matches only: one probe instead of
        24, a twentieth of the hits, for a cheap first look.

        With ``max_hits``, a query whose probes hold more postings than that
        reads only its rarest probes (:func:`rarest_probes`), up to
        ``sample_hits`` postings if given (a sample to nominate contents
        from, :meth:`search_contents`), else up to ``max_hits``; ``lengths``
        are the probe lengths to choose by when this lookup is one shard of an
        index (the whole index's, from its summed :meth:`code_counts`), else
        its own.
        """
        probes = probes_of(codes, max_flips)
        per_code = probes.size // max(1, codes.size)
        if not self._tables or codes.size == 0:
            empty = np.zeros(0, dtype=np.int64)
            return Hits(empty, empty, empty)
        spans = [
            _ranges(table, directory, probes)
            for table, directory in zip(self._tables, self._directories, strict=True)
        ]
        complete = True
        if max_hits is not None:
            if lengths is None:
                lengths = np.sum([end - start for start, end in spans], axis=0)
            if int(lengths.sum()) > max_hits and sample_hits is not None:
                max_hits = sample_hits
            kept = rarest_probes(lengths, max_hits, per_code=per_code)
            complete = bool(kept.all())
            spans = [(start, np.where(kept, end, start)) for start, end in spans]
        hits = _decoded(
            [
                (table, owners, start[:, None], end[:, None])
                for table, owners, (start, end) in zip(
                    self._tables, self._owners, spans, strict=True
                )
            ],
            np.repeat(frames.astype(np.int64), per_code),
        )
        if self._removed:
            live = ~np.isin(hits.keys, np.fromiter(self._removed, dtype=np.int64))
            return Hits(hits.query_frames[live], hits.keys[live], hits.ref_frames[live], complete)
        return Hits(hits.query_frames, hits.keys, hits.ref_frames, complete)

    def search_contents(
        self,
        codes: NDArray[np.uint32],
        frames: NDArray[np.uint32],
        keys: NDArray[np.int64],
        *,
        max_flips: int = BIT_FLIPS,
    ) -> Hits:
        """The hits of :meth:`search` without a budget, of the contents ``keys`` only.

        Within a probe's range a table's postings are in timeline order by
        content (the contents' postings are laid end to end), so one content's
        postings under a probe are a sub-range that two binary searches find,
        whatever the other contents hold: the cost is the probes times the
        contents asked for, not the postings under the probes. Only tables
        holding one of ``keys`` are probed. The hits are those of an
        unbudgeted :meth:`search` whose key is in ``keys``, in the same order.
        """
        probes = probes_of(codes, max_flips)
        per_code = probes.size // max(1, codes.size)
        wanted = np.setdiff1d(
            np.asarray(keys, dtype=np.int64), np.fromiter(self._removed, dtype=np.int64)
        )
        spans: list[_Ranges] = []
        for table, directory, owners in zip(
            self._tables, self._directories, self._owners, strict=True
        ):
            held = np.flatnonzero(np.isin(table.keys, wanted))
            if held.size == 0 or codes.size == 0:
                continue
            starts, ends = _ranges(table, directory, probes)
            bases = np.asarray(table.bases)
            lows = bases[held]
            following = np.append(bases, np.iinfo(np.int64).max)
            highs = following[held + 1]
            sub_starts = np.empty((probes.size, held.size), dtype=np.int64)
            sub_ends = np.empty((probes.size, held.size), dtype=np.int64)
            _content_ranges(
                starts, ends, np.asarray(table.postings), lows, highs, sub_starts, sub_ends
            )
            spans.append((table, owners, sub_starts, sub_ends))
        # Within a table, the contents' sub-ranges in timeline order: search's order.
        return _decoded(spans, np.repeat(frames.astype(np.int64), per_code))


_Ranges = tuple[PostingTable, NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]
"""A table, its :func:`_owners`, and ``starts``/``ends`` of ranges of its postings,
one row a probe and one column a range (several: one a content)."""


def _decoded(spans: list[_Ranges], probe_frames: NDArray[np.int64]) -> Hits:
    """The hits of the ranges: probe by probe, within a probe table by table, within a
    table range by range (each probe's row of every table, in order)."""
    if not spans:
        empty = np.zeros(0, dtype=np.int64)
        return Hits(empty, empty, empty)
    lengths = [end - start for _, _, start, end in spans]
    per_table = np.stack([length.sum(axis=1) for length in lengths], axis=1)
    firsts = (np.cumsum(per_table.ravel()) - per_table.ravel()).reshape(per_table.shape)
    total = int(per_table.sum())
    query_frames = np.empty(total, dtype=np.int64)
    keys = np.empty(total, dtype=np.int64)
    ref_frames = np.empty(total, dtype=np.int64)
    for column, ((table, owners, start, end), length) in enumerate(
        zip(spans, lengths, strict=True)
    ):
        within = np.cumsum(length, axis=1) - length
        _decode_into(
            start.ravel(),
            end.ravel(),
            (firsts[:, column, None] + within).ravel(),
            np.repeat(probe_frames, start.shape[1]),
            np.asarray(table.postings),
            np.asarray(table.bases),
            np.asarray(table.keys),
            owners,
            query_frames,
            keys,
            ref_frames,
        )
    return Hits(query_frames, keys, ref_frames)


def rarest_probes(lengths: NDArray[np.int64], max_hits: int, *, per_code: int) -> NDArray[np.bool_]:
    """Which probes to read so that a query reads at most ``max_hits`` postings.

    All of them when they fit. Otherwise the codes themselves come first and
    their one-bit neighbours after, each group rarest first, as many as fit:
    a code shared by many references is weak evidence for any one of them — a
    chance hit on it is as likely as a true one — and costs in proportion to
    its postings; a neighbour probe finds a true hit only when the sample
    moved a peak by a band or a frame, about a twentieth as often as the code
    itself. A reference's true hits come through codes of every kind, rare
    ones included, so the answer survives while the cost stops growing with
    the index.

    Parameters
    ----------
    lengths : ndarray of int64
        Postings under each probe, in probe order.
    max_hits : int
        Most postings to read.
    per_code : int
        Probes of each code (the code itself first).

    Returns
    -------
    ndarray of bool
        One flag a probe. Ties are broken by probe order, so every shard of an
        index that is given the whole index's lengths keeps the same probes.
    """
    if int(lengths.sum()) <= max_hits:
        return np.ones(lengths.size, dtype=bool)
    neighbour = np.arange(lengths.size) % per_code != 0
    order = np.lexsort((lengths, neighbour))
    kept = np.zeros(lengths.size, dtype=bool)
    kept[order[np.cumsum(lengths[order]) <= max_hits]] = True
    return kept


def probes_of(codes: NDArray[np.uint32], max_flips: int) -> NDArray[np.uint32]:
    """Every probe of ``codes``: code by code, the code itself then each one-bit flip."""
    masks = _PROBES if max_flips >= 1 else _PROBES[:1]
    return (codes.astype(np.uint32)[:, None] ^ masks[None, :]).ravel()


_Directory = tuple[NDArray[np.int64], int]
"""Index in a table's sorted distinct codes of the first code of each prefix
(and the end), and how far a code is shifted to give its prefix."""


def _memory_available() -> int:
    """Bytes of memory available without swapping (all of it where the system does not say)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _directory(codes: NDArray[np.uint32]) -> _Directory:
    """The directory of a table's distinct codes, about as many entries as codes."""
    bits = min(DIRECTORY_BITS, max(1, int(codes.size).bit_length()))
    shift = CODE_BITS - bits
    edges = np.arange((1 << bits) + 1, dtype=np.int64) << shift
    return np.searchsorted(np.asarray(codes), edges).astype(np.int64), shift


OWNER_STRETCH_BITS = 10
"""A table's timeline is cut in stretches of ``2**10`` frames (about 12 s) to find
a posting's content: a stretch holds the boundaries of few contents."""


def _owners(bases: NDArray[np.int64]) -> NDArray[np.int64]:
    """The content at the start of each stretch of a table's timeline, up to its last base."""
    if bases.size == 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange((int(bases[-1]) >> OWNER_STRETCH_BITS) + 1, dtype=np.int64)
    found = np.searchsorted(bases, starts << OWNER_STRETCH_BITS, "right") - 1
    return np.maximum(found, 0).astype(np.int64)


def _ranges(
    table: PostingTable, directory: _Directory | None, probes: NDArray[np.uint32]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``[start, end)`` in the table's postings of each probed code (empty when absent)."""
    if table.codes is None or directory is None:
        # A dense table: its offsets are addressed by the code itself.
        inside = probes < table.offsets.size - 1
        at = np.where(inside, probes, 0)
        return np.where(inside, table.offsets[at], 0), np.where(inside, table.offsets[at + 1], 0)
    starts = np.empty(probes.size, dtype=np.int64)
    ends = np.empty(probes.size, dtype=np.int64)
    _sparse_ranges(
        np.asarray(table.codes),
        *directory,
        np.asarray(table.offsets),
        probes,
        starts,
        ends,
    )
    return starts, ends


@numba.njit(cache=True, nogil=True)
def _sparse_ranges(
    codes: NDArray[np.uint32],
    directory: NDArray[np.int64],
    shift: int,
    offsets: NDArray[np.int64],
    probes: NDArray[np.uint32],
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
) -> None:
    """Binary search of each probe among the codes its directory entry spans."""
    for i in range(probes.size):
        probe = probes[i]
        prefix = probe >> shift
        starts[i] = 0
        ends[i] = 0
        if prefix + 1 >= directory.size:
            continue
        low = directory[prefix]
        high = directory[prefix + 1]
        while low < high:
            middle = (low + high) >> 1
            if codes[middle] < probe:
                low = middle + 1
            else:
                high = middle
        if low < codes.size and codes[low] == probe:
            starts[i] = offsets[low]
            ends[i] = offsets[low + 1]


@numba.njit(cache=True, nogil=True)
def _content_ranges(
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    postings: NDArray[np.unsignedinteger],
    lows: NDArray[np.int64],
    highs: NDArray[np.int64],
    sub_starts: NDArray[np.int64],
    sub_ends: NDArray[np.int64],
) -> None:
    """Where each content's postings lie within each probe's range.

    Content ``c`` owns the timeline positions ``[lows[c], highs[c])``; a
    range's postings of earlier contents come before it and of later ones
    after it, so the first position not below ``lows[c]`` and the first not
    below ``highs[c]`` bound its postings (binary searches). Writes
    ``sub_starts[probe, c]`` and ``sub_ends[probe, c]``.
    """
    for i in range(starts.size):
        for c in range(lows.size):
            sub_starts[i, c] = _first_not_below(postings, starts[i], ends[i], lows[c])
            sub_ends[i, c] = _first_not_below(postings, sub_starts[i, c], ends[i], highs[c])


@numba.njit(cache=True, nogil=True, inline="always")
def _first_not_below(postings: NDArray[np.unsignedinteger], low: int, high: int, bound: int) -> int:
    """The first place in ``postings[low:high]`` whose position is not below ``bound``."""
    while low < high:
        middle = (low + high) >> 1
        if np.int64(postings[middle]) < bound:
            low = middle + 1
        else:
            high = middle
    return low


@numba.njit(cache=True, nogil=True)
def _decode_into(
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    firsts: NDArray[np.int64],
    probe_frames: NDArray[np.int64],
    postings: NDArray[np.unsignedinteger],
    bases: NDArray[np.int64],
    table_keys: NDArray[np.int64],
    owners: NDArray[np.int64],
    query_frames: NDArray[np.int64],
    keys: NDArray[np.int64],
    ref_frames: NDArray[np.int64],
) -> None:
    """Write the hits of every probe's range from ``firsts[probe]`` on.

    A posting is a timeline position; its content is the last whose base is
    not after it: the content its stretch starts in (:func:`_owners`), or one
    of the few that begin later in the stretch. (A binary search among all
    the table's contents cost three times as much: its branches cannot be
    predicted.)
    """
    n_contents = bases.size
    last_stretch = owners.size - 1
    for i in range(starts.size):
        at = firsts[i]
        for j in range(starts[i], ends[i]):
            position = np.int64(postings[j])
            stretch = position >> OWNER_STRETCH_BITS
            content = owners[stretch if stretch < last_stretch else last_stretch]
            while content + 1 < n_contents and bases[content + 1] <= position:
                content += 1
            query_frames[at] = probe_frames[i]
            keys[at] = table_keys[content]
            ref_frames[at] = position - bases[content]
            at += 1
