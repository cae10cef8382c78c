"""Stage 4c: the in-memory code lookup, a FAISS binary hash index.

``faiss.IndexBinaryHash`` keys each 24-bit code into a hash table and, with
``nflip = 1``, also probes every code one bit away. Fingerprint fields are
Gray-coded, so a peak that moved by one band or one frame is still found. The
FAISS id of each code is its position in the posting arrays kept beside it
(content key and frame), so a search returns postings directly.

Why this index and not a float index (IVF, HNSW): codes are discrete hashes, so
the right neighbourhood is "equal or one bit off", which a hash table answers
exactly in constant time per probe; see ``docs/index-choice.md`` for the measurements.
"""

from __future__ import annotations

import faiss
import numpy as np
from numpy.typing import NDArray

from acr.index.segment import PACKED_BYTES, Segment, packed_bytes
from acr.matching import Hits
from acr.signals.audio.codes import CODE_BITS

CODE_BYTES = (CODE_BITS + 7) // 8
assert CODE_BYTES == PACKED_BYTES, "FAISS vectors and segment records share one layout"
BIT_FLIPS = 1


class CodeLookup:
    """All live postings of an index, searchable by code."""

    def __init__(self) -> None:
        # A query is a few thousand small probes. On an idle machine two OpenMP
        # threads halved a lookup, on a busy one they made it 3.7x slower
        # (benchmarks/index_choice.py); a server is busy, and gets its
        # concurrency from serving queries in parallel instead.
        faiss.omp_set_num_threads(1)
        self._faiss = faiss.IndexBinaryHash(8 * CODE_BYTES, 8 * CODE_BYTES)
        self._faiss.nflip = BIT_FLIPS
        self._keys = np.zeros(0, dtype=np.int64)
        self._frames = np.zeros(0, dtype=np.int64)
        self._live = np.zeros(0, dtype=bool)
        self._ranges: dict[int, list[tuple[int, int]]] = {}

    def add_segment(self, segment: Segment) -> None:
        """Make a segment's postings searchable."""
        base = self._keys.size
        n = segment.codes.size
        if n:
            ids = np.arange(base, base + n, dtype=np.int64)
            self._faiss.add_with_ids(packed_bytes(segment.codes), ids)
        self._keys = np.concatenate([self._keys, segment.posting_keys()])
        self._frames = np.concatenate([self._frames, segment.frames.astype(np.int64)])
        self._live = np.concatenate([self._live, np.ones(n, dtype=bool)])
        for key, start, end in zip(segment.keys, segment.starts, segment.ends, strict=True):
            self._ranges.setdefault(int(key), []).append((base + int(start), base + int(end)))

    def keys(self) -> set[int]:
        """Content keys with searchable postings."""
        return set(self._ranges)

    def remove_key(self, key: int) -> None:
        """Stop returning a content's postings (a tombstone until compaction)."""
        for start, end in self._ranges.pop(key, []):
            self._live[start:end] = False

    def search(
        self, codes: NDArray[np.uint32], frames: NDArray[np.uint32], *, max_flips: int = BIT_FLIPS
    ) -> Hits:
        """Every live posting whose code is within ``max_flips`` bits (at most one) of a query code.

        ``max_flips=0`` returns exact code matches only: the same hash probes, a
        twentieth of the hits, for a cheap first look.
        """
        if codes.size == 0 or self._keys.size == 0:
            empty = np.zeros(0, dtype=np.int64)
            return Hits(empty, empty, empty)
        query = packed_bytes(codes)
        # FAISS range search keeps distances strictly below the radius.
        lims, _, ids = self._faiss.range_search(query, min(max_flips, BIT_FLIPS) + 1)
        which_query = np.repeat(np.arange(codes.size), np.diff(lims.astype(np.int64)))
        live = self._live[ids]
        ids = ids[live]
        return Hits(
            query_frames=frames[which_query[live]].astype(np.int64),
            keys=self._keys[ids],
            ref_frames=self._frames[ids],
        )
