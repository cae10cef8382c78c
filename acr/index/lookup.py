"""Stage 4c: the code lookup — postings sorted by code, one table per segment.

A query code is probed as it is and with each of its 24 bits flipped (the
code is 23 bits in a 24-bit word): fingerprint fields are Gray-coded, so a peak
that moved by one band or one frame changes exactly one bit. Each segment's
postings sit in a :class:`~acr.index.segment.PostingTable`, sorted by code,
so a probe is a range, found by binary search among the segment's distinct
codes or, in a large segment, read from a directory addressed by the code.

This replaced a ``faiss.IndexBinaryHash(24, 24)`` with ``nflip = 1`` that cost
about 30 bytes a posting with the arrays beside it; a table costs 4 bytes a
posting plus its directory, can be memory-mapped (:func:`~acr.index.segment.map_table`)
and returns the same hits in the same order: query code by query code, the
exact code first and then bit 23 down to bit 0 flipped, within a probe segment by
segment, within a segment in the segment's order (``tests/test_scale.py``
checks it against FAISS). See ``docs/index-choice.md`` and ``docs/scale.md``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from acr.index.segment import PACKED_BYTES, PostingTable, Segment
from acr.matching import Hits
from acr.signals.audio.codes import CODE_BITS

CODE_BYTES = (CODE_BITS + 7) // 8
assert CODE_BYTES == PACKED_BYTES, "probes flip every bit of the segment's 3-byte code field"
BIT_FLIPS = 1
_PROBES = np.array([0] + [1 << bit for bit in reversed(range(8 * CODE_BYTES))], dtype=np.uint32)
"""XOR masks of the probes, in the order FAISS's flip enumerator visits them."""


class CodeLookup:
    """All live postings of an index, searchable by code."""

    def __init__(self) -> None:
        self._tables: list[PostingTable] = []
        self._live: set[int] = set()
        self._removed: set[int] = set()

    @property
    def postings(self) -> int:
        """Number of postings held, tombstoned ones included."""
        return sum(table.size for table in self._tables)

    def add_segment(self, segment: Segment) -> None:
        """Make a segment's postings searchable."""
        self.add_table(PostingTable.from_segment(segment, CODE_BITS))

    def add_table(self, table: PostingTable) -> None:
        """Make a table's postings searchable (e.g. one memory-mapped from disk)."""
        self._tables.append(table)
        self._live.update(int(key) for key in table.keys)

    def keys(self) -> set[int]:
        """Content keys with searchable postings."""
        return set(self._live)

    def remove_key(self, key: int) -> None:
        """Stop returning a content's postings (a tombstone until compaction)."""
        if key in self._live:
            self._live.discard(key)
            self._removed.add(key)

    def search(
        self, codes: NDArray[np.uint32], frames: NDArray[np.uint32], *, max_flips: int = BIT_FLIPS
    ) -> Hits:
        """Every live posting whose code is within ``max_flips`` bits (at most one) of a query code.

        ``max_flips=0`` returns exact code matches only: one probe instead of
        25, a twentieth of the hits, for a cheap first look.
        """
        masks = _PROBES if max_flips >= 1 else _PROBES[:1]
        probes = (codes.astype(np.uint32)[:, None] ^ masks[None, :]).ravel()
        spans = [table.ranges(probes) for table in self._tables]
        if not spans or codes.size == 0:
            empty = np.zeros(0, dtype=np.int64)
            return Hits(empty, empty, empty)
        # Hits come probe by probe, and within a probe table by table.
        lengths = np.stack([end - start for start, end in spans], axis=1)
        firsts = (np.cumsum(lengths.ravel()) - lengths.ravel()).reshape(lengths.shape)
        if len(self._tables) == 1:
            keys, ref_frames = self._tables[0].decode(_expand(spans[0][0], lengths[:, 0]))
        else:
            total = int(lengths.sum())
            keys = np.empty(total, dtype=np.int64)
            ref_frames = np.empty(total, dtype=np.int64)
            for column, (table, (start, _)) in enumerate(zip(self._tables, spans, strict=True)):
                count = lengths[:, column]
                target = _expand(firsts[:, column], count)
                keys[target], ref_frames[target] = table.decode(_expand(start, count))
        per_code = lengths.sum(axis=1).reshape(codes.size, masks.size).sum(axis=1)
        query_frames = np.repeat(frames.astype(np.int64), per_code)
        if self._removed:
            live = ~np.isin(keys, np.fromiter(self._removed, dtype=np.int64))
            return Hits(query_frames[live], keys[live], ref_frames[live])
        return Hits(query_frames, keys, ref_frames)


def _expand(starts: NDArray[np.int64], counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """Concatenated ``arange(start, start + count)`` over the pairs."""
    total = int(counts.sum())
    ends = np.cumsum(counts)
    return np.repeat(starts - (ends - counts), counts) + np.arange(total, dtype=np.int64)
