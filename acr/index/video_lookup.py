"""The in-memory video hash lookup: FAISS flat binary indexes, one per reference view.

A sampled query frame must find reference frames up to :data:`RADIUS` bits
away: a re-encoded frame is within 10-20 bits of its reference, a cropped or
overlaid one 40-60 (``docs/video.md``). FAISS's hash-based binary indexes
(``IndexBinaryMultiHash``, Meta's choice for PDQ at 31 bits) find neighbours
through exact matches of hash substrings, which by the pigeonhole principle
needs more substrings than the radius has bits: at 64 bits, substrings of
three bits, which match by chance everywhere. A flat index compares every
hash with one popcount pass (about 1.7 billion comparisons a second on one
core here), exact at any radius, and at our scale (hours of video, a few
hundred thousand hashes) that is a few milliseconds a query.

Each reference view (``acr.signals.video.views``) has its own index, and a
query hash is only searched in the indexes of the views it is compared with:
its whole picture in the crop windows, its top half in the top halves.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

import faiss
import numpy as np
from numpy.typing import NDArray

from acr.index.video_segment import VideoSegment
from acr.signals.video.pdq import HASH_BITS
from acr.signals.video.views import COMPARED_WITH, VIEWS

__all__ = ["RADIUS", "VideoHits", "VideoLookup"]

RADIUS: Final = 64
"""Largest Hamming distance of a hit. Unrelated pictures are 100-140 bits apart."""


def _searched() -> NDArray[np.bool_]:
    """Whether a query view (row: any uint8 id) is searched in a reference view's index."""
    table = np.zeros((256, len(VIEWS)), dtype=bool)
    for query_view, compared in COMPARED_WITH.items():
        table[query_view, list(compared)] = True
    return table


_SEARCHED: Final = _searched()


@dataclass(frozen=True)
class VideoHits:
    """Query hashes that found reference hashes within the radius, one row per pair."""

    query: NDArray[np.int64]
    """Index of the query hash."""
    keys: NDArray[np.int64]
    """Catalogue key of the reference."""
    ref_times_s: NDArray[np.float64]
    distances: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.query.size)


class VideoLookup:
    """All live reference hashes of an index, searchable by Hamming distance."""

    def __init__(self) -> None:
        faiss.omp_set_num_threads(1)  # see acr.index.lookup: a busy server gains nothing
        self._faiss = [faiss.IndexBinaryFlat(HASH_BITS) for _ in VIEWS]
        self._view_ids: list[NDArray[np.int64]] = [np.zeros(0, np.int64) for _ in VIEWS]
        self._keys = np.zeros(0, dtype=np.int64)
        self._times_s = np.zeros(0, dtype=np.float64)
        self._live = np.zeros(0, dtype=bool)
        self._ranges: dict[int, list[tuple[int, int]]] = {}
        self._frames: dict[int, NDArray[np.float64]] = {}

    def add_segment(self, segment: VideoSegment) -> None:
        """Make a segment's hashes searchable."""
        base = self._keys.size
        for view, index in enumerate(self._faiss):
            rows = np.flatnonzero(segment.views == view)
            if rows.size:
                index.add(np.ascontiguousarray(segment.hashes[rows]))
                self._view_ids[view] = np.concatenate([self._view_ids[view], base + rows])
        self._keys = np.concatenate([self._keys, segment.posting_keys()])
        self._times_s = np.concatenate([self._times_s, segment.times_ms / 1000.0])
        self._live = np.concatenate([self._live, np.ones(segment.times_ms.size, dtype=bool)])
        for key, start, end in zip(segment.keys, segment.starts, segment.ends, strict=True):
            self._ranges.setdefault(int(key), []).append((base + int(start), base + int(end)))
            times = np.unique(segment.times_ms[start:end]) / 1000.0
            held = self._frames.get(int(key))
            self._frames[int(key)] = times if held is None else np.union1d(held, times)

    def frames(self, key: int) -> NDArray[np.float64]:
        """Times of a content's hashed frames, sorted: its sampled frames that are not flat."""
        return self._frames.get(key, np.zeros(0, dtype=np.float64))

    def keys(self) -> set[int]:
        """Content keys with searchable hashes."""
        return set(self._ranges)

    def __len__(self) -> int:
        return int(self._live.sum())

    def remove_key(self, key: int) -> None:
        """Stop returning a content's hashes (a tombstone until compaction)."""
        for start, end in self._ranges.pop(key, []):
            self._live[start:end] = False
        self._frames.pop(key, None)

    def search(
        self,
        hashes: NDArray[np.uint8],
        views: NDArray[np.uint8],
        *,
        radius: int = RADIUS,
        within: Collection[int] | None = None,
    ) -> VideoHits:
        """Every live reference hash within `radius` bits of a query hash it is compared with.

        `within`, if given, limits the search to those reference views' indexes.
        """
        parts: list[tuple[NDArray[np.int64], ...]] = []
        # One table lookup sorts the query hashes by the indexes they are searched in (an
        # isin per reference view was a fifth of a match).
        searched = _SEARCHED[np.asarray(views, dtype=np.uint8)]
        wanted = searched.any(axis=0)
        if within is not None:
            wanted &= np.isin(np.arange(len(VIEWS)), list(within))
        for view in np.flatnonzero(wanted):
            index = self._faiss[view]
            if index.ntotal == 0:
                continue
            rows = np.flatnonzero(searched[:, view])
            # FAISS range search keeps distances strictly below the radius.
            lims, distances, ids = index.range_search(
                np.ascontiguousarray(hashes[rows]), radius + 1
            )
            which = np.repeat(rows, np.diff(lims.astype(np.int64)))
            postings = self._view_ids[view][ids]
            live = self._live[postings]
            parts.append((which[live], postings[live], distances[live].astype(np.int64)))
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return VideoHits(empty, empty, np.zeros(0, dtype=np.float64), empty)
        query = np.concatenate([p[0] for p in parts])
        postings = np.concatenate([p[1] for p in parts])
        return VideoHits(
            query=query,
            keys=self._keys[postings],
            ref_times_s=self._times_s[postings],
            distances=np.concatenate([p[2] for p in parts]),
        )
