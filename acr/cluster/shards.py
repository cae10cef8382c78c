"""Shards: contents partitioned by catalogue key, and what one shard holds.

A content lives in exactly one shard (``key mod n_shards``), so every hit of a
content comes from one shard and the coordinator's concatenation of all
shards' hits is, up to order, the single-node lookup's hits — and the
matcher's answer does not depend on the order of hits (it votes over
``np.unique`` cells and medians). Shards read the same segment files from
shared storage; each keeps a posting table of its own contents per segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from acr.index.catalogue import Catalogue, ContentRecord
from acr.index.directory import CATALOGUE_FILE, SEGMENT_DIR
from acr.index.lookup import CodeLookup
from acr.index.segment import PostingTable, Segment, map_table, read_segment, write_table
from acr.signals.audio.codes import CODE_BITS


def shard_of(keys: NDArray[np.int64], n_shards: int) -> NDArray[np.int64]:
    """The shard of each content key."""
    return np.mod(keys, n_shards)


@dataclass(frozen=True)
class Snapshot:
    """One committed state of the index, as every shard must serve it.

    Attributes
    ----------
    generation : int
        The catalogue's generation (bumped by every commit).
    segments : tuple of str
        Live segment files, in catalogue order.
    live_keys : ndarray of int64
        Sorted keys of the live contents; postings of other keys are tombstones.
    """

    generation: int
    segments: tuple[str, ...]
    live_keys: NDArray[np.int64]


def read_snapshot(index_dir: Path) -> tuple[Snapshot, dict[int, ContentRecord]]:
    """The index's current state and its live contents by key, read at one instant."""
    catalogue = Catalogue(index_dir / CATALOGUE_FILE, readonly=True)
    try:
        generation, segments, records = catalogue.snapshot()
    finally:
        catalogue.close()
    keys = np.sort(np.array([r.key for r in records], dtype=np.int64))
    return Snapshot(generation, tuple(segments), keys), {r.key: r for r in records}


def shard_segment(segment: Segment, shard: int, n_shards: int) -> Segment:
    """The part of a segment whose contents belong to ``shard``."""
    mine = shard_of(segment.keys, n_shards) == shard
    starts, ends = segment.starts[mine], segment.ends[mine]
    take = np.concatenate(
        [np.arange(s, e, dtype=np.int64) for s, e in zip(starts, ends, strict=True)]
        or [np.zeros(0, dtype=np.int64)]
    )
    return Segment(
        kind=segment.kind,
        hop_s=segment.hop_s,
        keys=segment.keys[mine],
        ends=np.cumsum(ends - starts).astype(np.int64),
        codes=segment.codes[take],
        frames=segment.frames[take],
    )


class ShardStore:
    """The lookups of one shard, one per snapshot it has been asked for.

    Posting tables are built once per segment and shared between the lookups
    of successive snapshots, so publishing a new segment costs that segment
    only; a lookup is never changed after it is built, so searches of an older
    snapshot run undisturbed while a newer one is prepared.

    With a ``table_dir`` (local to the node), each table is written there once
    and memory-mapped: every replica process on the node shares one copy in
    the page cache, and a restarted replica maps instead of rebuilding.
    """

    def __init__(
        self, index_dir: Path, shard: int, n_shards: int, table_dir: Path | None = None
    ) -> None:
        self.index_dir = index_dir
        self.shard = shard
        self.n_shards = n_shards
        self.table_dir = table_dir
        self._tables: dict[str, PostingTable] = {}
        self._lookups: dict[int, CodeLookup] = {}

    def lookup(self, snapshot: Snapshot) -> CodeLookup:
        """The shard's lookup of ``snapshot``, built on first use."""
        found = self._lookups.get(snapshot.generation)
        if found is not None:
            return found
        lookup = CodeLookup()
        for name in snapshot.segments:
            table = self._tables.get(name)
            if table is None:
                table = self._tables[name] = self._table(name)
            lookup.add_table(table)
        held = np.fromiter(lookup.keys(), dtype=np.int64)
        for key in held[~np.isin(held, snapshot.live_keys)]:
            lookup.remove_key(int(key))
        self._lookups[snapshot.generation] = lookup
        return lookup

    def _table(self, name: str) -> PostingTable:
        """The shard's part of segment ``name``: mapped from the table directory, or built."""
        path = None
        if self.table_dir is not None:
            path = self.table_dir / f"{name}.{self.shard}-of-{self.n_shards}.post"
            if path.exists():
                return map_table(path, CODE_BITS)
        segment = read_segment(self.index_dir / SEGMENT_DIR / name)
        table = PostingTable.from_segment(
            shard_segment(segment, self.shard, self.n_shards), CODE_BITS
        )
        if path is None:
            return table
        path.parent.mkdir(parents=True, exist_ok=True)
        write_table(table, path)
        return map_table(path, CODE_BITS)

    def lookup_of(self, generation: int) -> CodeLookup | None:
        """The lookup of a snapshot already built, if any."""
        return self._lookups.get(generation)

    def keep_only(self, snapshot: Snapshot) -> None:
        """Forget the snapshots older than ``snapshot`` and the tables it does not use."""
        self._lookups = {
            g: lookup for g, lookup in self._lookups.items() if g >= snapshot.generation
        }
        self._tables = {n: t for n, t in self._tables.items() if n in snapshot.segments}

    @property
    def postings(self) -> int:
        """Postings held in the shard's tables."""
        return sum(table.size for table in self._tables.values())
