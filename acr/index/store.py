"""The index: a directory of immutable segments, its catalogue, and matching.

Layout of an index directory::

    catalogue.sqlite   contents and the manifest of live segments
    segments/          immutable segment files (see :mod:`acr.index.segment`)
    tables/            posting tables of the large segments, memory-mapped for lookups
    writer.lock        held by the one process allowed to write

Adding a batch writes its segment file durably first, then commits the
catalogue rows and the segment row in one transaction. A crash before the
commit leaves an unreferenced file, which the next writer deletes; a crash after
it leaves a complete batch. Removing a content marks its row removed (a
tombstone); :meth:`Index.compact` rewrites segments without removed codes and
merges small segments.

A large segment's postings are searched from a table file memory-mapped from
``tables/`` (written the first time the segment is loaded, by whichever process
loads it), so opening an index of thousands of hours reads headers, not codes;
small segments are read and merged in memory. A table is derived data: a
missing or damaged one is rebuilt from its segment.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self

import numpy as np
from numpy.typing import NDArray

from acr.errors import FingerprintFormatError, IndexStoreError, UnknownContentError
from acr.index.catalogue import Catalogue, ContentRecord, ContentSpec
from acr.index.lookup import CodeLookup
from acr.index.segment import (
    PostingTable,
    Segment,
    SegmentMissingError,
    build_segment,
    delete_unlisted,
    map_table,
    read_segment,
    write_segment,
    write_table,
)
from acr.matching import DEFAULT_MIN_CONFIDENCE, Alignment
from acr.results import Match, MatchResult
from acr.search import Identification, Query, identify
from acr.signals.audio import AudioSignal
from acr.signals.audio.codes import CODE_BITS
from acr.signals.base import Fingerprints, MediaSource

if TYPE_CHECKING:
    from acr.monitor import Timeline

CATALOGUE_FILE = "catalogue.sqlite"
SEGMENT_DIR = "segments"
TABLE_DIR = "tables"
MAPPED_MIN_CODES = 1 << 20
"""Segments with at least this many codes (about 3.5 h of audio) are searched from
a memory-mapped table; smaller ones are merged in memory."""
LOCK_FILE = "writer.lock"
DEFAULT_MAX_QUERY_SECONDS = 60.0
DEFAULT_MAX_QUERY_BYTES = 100 * 1024 * 1024
"""A minute of uncompressed 48 kHz stereo is 11 MB; a short video clip fits too."""

COMPACT_TARGET_CODES = 20_000_000
_REFRESH_ATTEMPTS = 3


@dataclass(frozen=True)
class IndexStats:
    """Size of an index."""

    contents: int
    codes: int
    duration_s: float
    segments: int
    bytes_on_disk: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "contents": self.contents,
            "codes": self.codes,
            "duration_s": self.duration_s,
            "hours": self.duration_s / 3600.0,
            "segments": self.segments,
            "bytes_on_disk": self.bytes_on_disk,
        }


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Content hash of a file, the indexer's idempotency key."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Index:
    """A fingerprint index on disk, loaded for matching.

    Open with :meth:`open`; use as a context manager. A writable index holds an
    exclusive lock on its directory; any number of read-only instances may be
    open beside it and pick up its commits with :meth:`refresh`.
    """

    def __init__(self, directory: Path, catalogue: Catalogue, lock: IO[bytes] | None) -> None:
        self.directory = directory
        self.signal = AudioSignal()
        self._catalogue = catalogue
        self._lock = lock
        self._lookup = CodeLookup()
        self._records: dict[int, ContentRecord] = {}
        self._loaded_segments: set[str] = set()
        self._generation = -1
        self.refresh()

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: str | os.PathLike[str], *, create: bool = False, readonly: bool = False
    ) -> Index:
        """Open the index in ``directory``.

        Parameters
        ----------
        create : bool
            Create the directory and an empty index if it does not exist.
        readonly : bool
            Open for matching only; takes no lock.

        Raises
        ------
        IndexStoreError
            If there is no index there (and ``create`` is false), or another
            process holds the writer lock.
        """
        path = Path(directory)
        if not (path / CATALOGUE_FILE).exists():
            if not create or readonly:
                raise IndexStoreError(f"no index at {path} (create one with `acr index`)")
            (path / SEGMENT_DIR).mkdir(parents=True, exist_ok=True)
        if readonly:
            catalogue = Catalogue(path / CATALOGUE_FILE, readonly=True)
            try:
                return cls(path, catalogue, None)
            except BaseException:
                catalogue.close()
                raise
        (path / SEGMENT_DIR).mkdir(parents=True, exist_ok=True)
        lock = open(path / LOCK_FILE, "wb")  # noqa: SIM115 - held for the index's lifetime
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise IndexStoreError(f"index {path} is being written by another process") from None
        try:
            catalogue = Catalogue(path / CATALOGUE_FILE)
        except BaseException:
            lock.close()
            raise
        try:
            index = cls(path, catalogue, lock)
        except BaseException:
            catalogue.close()
            lock.close()
            raise
        try:
            index._delete_orphans()
        except BaseException:
            index.close()
            raise
        return index

    def close(self) -> None:
        self._catalogue.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def lookup(self) -> CodeLookup:
        """The searchable postings (what :mod:`acr.search` looks codes up in)."""
        if self.readonly:
            self.refresh()
        return self._lookup

    @property
    def readonly(self) -> bool:
        return self._lock is None

    def refresh(self) -> bool:
        """Load segments and tombstones committed since the last look; True if anything changed."""
        if self._catalogue.generation() == self._generation:
            return False
        for attempt in range(_REFRESH_ATTEMPTS):
            generation, live, contents = self._catalogue.snapshot()
            if generation == self._generation:
                return False
            try:
                self._load(live)
            except SegmentMissingError:
                # A compaction committed and deleted the files we were about to
                # read; the next snapshot names their replacements.
                if attempt + 1 == _REFRESH_ATTEMPTS:
                    raise
                continue
            records = {r.key: r for r in contents}
            for key in self._lookup.keys() - records.keys():
                self._lookup.remove_key(key)
            self._records = records
            self._generation = generation
            return True
        raise AssertionError("unreachable")

    def _load(self, live: list[str]) -> None:
        """Make exactly the ``live`` segments searchable."""
        if not self._loaded_segments.issubset(live):
            # Compaction replaced segments: rebuild from scratch.
            self._lookup = CodeLookup()
            self._loaded_segments = set()
        for name in live:
            if name not in self._loaded_segments:
                self._make_searchable(name, None)

    def _make_searchable(self, name: str, segment: Segment | None) -> None:
        """Add a live segment's postings to the lookup, from its mapped table if it has one."""
        table_path = self._table_path(name)
        if table_path.exists():
            try:
                self._lookup.add_table(map_table(table_path, CODE_BITS))
                self._loaded_segments.add(name)
                return
            except IndexStoreError:
                pass  # damaged: rebuilt below
        if segment is None:
            segment = read_segment(self._segment_path(name))
        if segment.codes.size < MAPPED_MIN_CODES:
            self._lookup.add_segment(segment)
        else:
            table = PostingTable.from_segment(segment, CODE_BITS)
            try:
                table_path.parent.mkdir(exist_ok=True)
                write_table(table, table_path)
                table = map_table(table_path, CODE_BITS)
            except OSError:
                pass  # a read-only directory: searched from memory
            self._lookup.add_table(table)
        self._loaded_segments.add(name)

    # -- writing ----------------------------------------------------------------------------

    def add_file(
        self,
        path: str | os.PathLike[str],
        *,
        title: str | None = None,
        content_id: str | None = None,
        external_id: str | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
        skip_existing: bool = True,
    ) -> ContentRecord:
        """Decode, fingerprint and add one file; an already indexed file is returned as is."""
        content_hash = file_sha256(path)
        if skip_existing and (existing := self.find_by_hash(content_hash)) is not None:
            return existing
        fingerprints = self.signal.fingerprint_media(path)
        spec = ContentSpec(
            title=title or Path(path).stem,
            content_id=content_id,
            source=str(Path(path).resolve()),
            content_hash=content_hash,
            external_id=external_id,
            owner=owner,
            metadata=metadata or {},
        )
        return self.add_batch([(spec, fingerprints)])[0]

    def add_samples(
        self, samples: NDArray[np.floating], sample_rate: int, spec: ContentSpec
    ) -> ContentRecord:
        """Fingerprint and add an in-memory mono signal."""
        fingerprints = self.signal.fingerprint_samples(samples, sample_rate, query=False)
        return self.add_batch([(spec, fingerprints)])[0]

    def add_batch(self, batch: Iterable[tuple[ContentSpec, Fingerprints]]) -> list[ContentRecord]:
        """Add several contents as one segment, atomically."""
        self._require_writer()
        items = list(batch)
        if not items:
            return []
        explicit_ids = [spec.content_id for spec, _ in items if spec.content_id is not None]
        if len(explicit_ids) != len(set(explicit_ids)):
            raise IndexStoreError("a content id appears more than once in the batch")
        for spec, fingerprints in items:
            if fingerprints.kind != self.signal.name:
                raise ValueError(f"cannot index {fingerprints.kind} fingerprints in an audio index")
            if spec.content_id is not None and self._catalogue.by_id(spec.content_id) is not None:
                raise IndexStoreError(f"content id {spec.content_id!r} is already indexed")
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.seg"
        with self._catalogue.transaction() as db:
            keys = self._catalogue.next_keys(len(items))
            segment = build_segment(
                self.signal.name,
                self.signal.hop_s,
                [(key, fp.codes, fp.frames) for key, (_, fp) in zip(keys, items, strict=True)],
            )
            size = write_segment(segment, self._segment_path(name))
            self._catalogue.insert_segment(
                db, name, segment.kind, len(items), int(segment.codes.size), size
            )
            for key, (spec, fp) in zip(keys, items, strict=True):
                self._catalogue.insert_content(
                    db,
                    key,
                    spec,
                    spec.content_id or uuid.uuid4().hex,
                    fp.kind,
                    fp.duration_s,
                    name,
                    len(fp),
                )
        # The writer holds the lock, so nothing else changed: apply the batch
        # directly instead of re-reading the catalogue (which grows with it).
        self._make_searchable(name, segment)
        for key in keys:
            record = self._catalogue.by_key(key)
            assert record is not None
            self._records[key] = record
        self._generation = self._catalogue.generation()
        return [self._records[key] for key in keys]

    def remove(self, content_id: str) -> ContentRecord:
        """Remove a content from matching; its codes go at the next compaction."""
        self._require_writer()
        record = self.get(content_id)
        with self._catalogue.transaction() as db:
            db.execute(
                "UPDATE contents SET removed_at = ? WHERE key = ?", (time.time(), record.key)
            )
        self._lookup.remove_key(record.key)
        del self._records[record.key]
        self._generation = self._catalogue.generation()
        return record

    def compact(self) -> int:
        """Rewrite live codes into as few segments as possible, dropping removed content.

        Returns
        -------
        int
            Number of segment files replaced.
        """
        self._require_writer()
        old = self._catalogue.live_segments()
        if not old:
            return 0
        live = self._records
        groups: list[list[tuple[int, NDArray[np.uint32], NDArray[np.uint32]]]] = [[]]
        group_codes = 0
        for name in old:
            segment = read_segment(self._segment_path(name))
            for key, start, end in zip(segment.keys, segment.starts, segment.ends, strict=True):
                if int(key) not in live:
                    continue
                if group_codes and group_codes + (end - start) > COMPACT_TARGET_CODES:
                    groups.append([])
                    group_codes = 0
                groups[-1].append((int(key), segment.codes[start:end], segment.frames[start:end]))
                group_codes += int(end - start)
        with self._catalogue.transaction() as db:
            for group in groups:
                if not group:
                    continue
                merged = build_segment(self.signal.name, self.signal.hop_s, group)
                name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.seg"
                size = write_segment(merged, self._segment_path(name))
                self._catalogue.insert_segment(
                    db, name, merged.kind, len(group), int(merged.codes.size), size
                )
                db.executemany(
                    "UPDATE contents SET segment = ? WHERE key = ?",
                    [(name, key) for key, _, _ in group],
                )
            db.executemany("DELETE FROM segments WHERE name = ?", [(name,) for name in old])
            # History of removed contents is kept; they no longer point at a live segment.
            marks = ",".join("?" * len(old))
            db.execute(
                "UPDATE contents SET segment = '' "
                f"WHERE removed_at IS NOT NULL AND segment IN ({marks})",
                old,
            )
        self.refresh()
        self._delete_orphans()
        return len(old)

    # -- reading ----------------------------------------------------------------------------

    def get(self, content_id: str) -> ContentRecord:
        record = self._catalogue.by_id(content_id)
        if record is None:
            raise UnknownContentError(f"no content with id {content_id!r} in this index")
        return record

    def find_by_hash(self, content_hash: str) -> ContentRecord | None:
        return self._catalogue.by_hash(content_hash)

    def list(self) -> list[ContentRecord]:
        return sorted(self._records.values(), key=lambda r: r.key)

    def stats(self) -> IndexStats:
        records = self._records.values()
        tables = self.directory / TABLE_DIR
        on_disk = self._catalogue.segment_bytes() + sum(
            (self.directory / name).stat().st_size
            for name in (CATALOGUE_FILE, f"{CATALOGUE_FILE}-wal")
            if (self.directory / name).exists()
        )
        if tables.is_dir():
            on_disk += sum(e.stat().st_size for e in tables.iterdir() if e.suffix == ".post")
        return IndexStats(
            contents=len(self._records),
            codes=sum(r.codes for r in records),
            duration_s=sum(r.duration_s for r in records),
            segments=len(self._loaded_segments),
            bytes_on_disk=on_disk,
        )

    # -- matching ---------------------------------------------------------------------------

    def match(
        self,
        source: MediaSource,
        *,
        top_k: int = 1,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        max_seconds: float | None = DEFAULT_MAX_QUERY_SECONDS,
        max_bytes: int | None = DEFAULT_MAX_QUERY_BYTES,
    ) -> MatchResult:
        """Identify a sample given as a file path, file bytes or a binary file object."""
        started = time.perf_counter()
        fingerprints = self.signal.fingerprint_query(
            source, max_seconds=max_seconds, max_bytes=max_bytes
        )
        return self.match_fingerprints(
            fingerprints, top_k=top_k, min_confidence=min_confidence, started=started
        )

    def match_samples(
        self,
        samples: NDArray[np.floating],
        sample_rate: int,
        *,
        top_k: int = 1,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    ) -> MatchResult:
        """Identify an in-memory mono sample at any rate."""
        started = time.perf_counter()
        fingerprints = self.signal.fingerprint_samples(samples, sample_rate, query=True)
        return self.match_fingerprints(
            fingerprints, top_k=top_k, min_confidence=min_confidence, started=started
        )

    def match_fingerprints(
        self,
        fingerprints: Fingerprints,
        *,
        top_k: int = 1,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        started: float | None = None,
        warps: bool = True,
    ) -> MatchResult:
        """Identify a sample from its query fingerprints (e.g. computed on the client).

        ``warps=False`` skips the search over speed, pitch and tempo changes
        (see :mod:`acr.search`) when the sample does not match as it is.
        """
        started = time.perf_counter() if started is None else started
        if fingerprints.kind != self.signal.name or not np.isclose(
            fingerprints.hop_s, self.signal.hop_s
        ):
            raise FingerprintFormatError(
                f"fingerprints are {fingerprints.kind} with a {fingerprints.hop_s * 1000:g} ms "
                f"hop; this index holds {self.signal.name} with a "
                f"{self.signal.hop_s * 1000:g} ms hop"
            )
        if self.readonly:
            self.refresh()
        records = self._records

        def ref_frames(key: int) -> int:
            return round(records[key].duration_s / fingerprints.hop_s)

        found = identify(
            Query(fingerprints, self._lookup, ref_frames, max(1, len(records))),
            top_k=top_k,
            min_confidence=min_confidence,
            warps=warps,
        )
        return match_result(found, records, fingerprints, started)

    def monitor(self, source: MediaSource, **options: Any) -> Timeline:
        """Match a long recording into a timeline of segments; see :func:`acr.monitor.monitor`."""
        from acr.monitor import monitor

        return monitor(self, source, **options)

    # -- internals --------------------------------------------------------------------------

    def _segment_path(self, name: str) -> Path:
        return self.directory / SEGMENT_DIR / name

    def _table_path(self, name: str) -> Path:
        return self.directory / TABLE_DIR / f"{name}.post"

    def _require_writer(self) -> None:
        if self.readonly:
            raise IndexStoreError("this index was opened read-only")

    def _delete_orphans(self) -> None:
        """Delete segment and table files of no committed batch (after a crash or a compaction)."""
        live = set(self._catalogue.live_segments())
        delete_unlisted(self.directory / SEGMENT_DIR, live)
        delete_unlisted(self.directory / TABLE_DIR, {self._table_path(name).name for name in live})


def match_result(
    found: Identification,
    records: Mapping[int, ContentRecord],
    fingerprints: Fingerprints,
    started: float,
) -> MatchResult:
    """The answer for a sample's alignments, with the references' records.

    Parameters
    ----------
    found : Identification
        What :func:`acr.search.identify` found.
    records : Mapping of int to ContentRecord
        The references by key.
    fingerprints : Fingerprints
        The sample's query fingerprints.
    started : float
        ``time.perf_counter()`` when the query arrived.
    """
    hop_s = fingerprints.hop_s

    def ref_frames(key: int) -> int:
        return round(records[key].duration_s / hop_s)

    def answer(alignment: Alignment, stretch: tuple[int, int]) -> Match:
        record = records[alignment.key]
        first, last = stretch
        return Match(
            content_id=record.content_id,
            title=record.title,
            source=record.source,
            offset_s=(alignment.offset_frames + alignment.scale * first) * hop_s,
            confidence=alignment.confidence,
            score=alignment.inliers,
            speed=alignment.scale,
            pitch=alignment.pitch,
            query_start_s=first * hop_s,
            query_end_s=(last + 1) * hop_s,
            duration_s=record.duration_s,
            metadata=record.metadata,
        )

    whole = (0, found.query_frames - 1)
    stretches = _tile(found.pieces, found.query_frames, ref_frames)
    return MatchResult(
        matches=[answer(a, whole) for a in found.ranked],
        segments=[answer(a, stretch) for a, stretch in zip(found.pieces, stretches, strict=True)],
        query_duration_s=fingerprints.duration_s,
        query_codes=len(fingerprints),
        elapsed_ms=(time.perf_counter() - started) * 1000.0,
    )


def _tile(
    pieces: list[Alignment], query_frames: int, ref_frames: Callable[[int], int]
) -> list[tuple[int, int]]:
    """Stretches of the sample for consecutive pieces, covering it without gaps.

    Each boundary goes midway between one piece's last inlier and the next
    one's first, then is moved, if needed, to where the earlier reference ends
    or the later one begins: a recording cannot be heard outside itself.
    """
    if not pieces:
        return []
    starts = [0]
    for before, after in itertools.pairwise(pieces):
        boundary = (before.query_end_frame + after.query_start_frame + 1) / 2
        after_begins = -after.offset_frames / after.scale
        before_ends = (ref_frames(before.key) - before.offset_frames) / before.scale
        if after_begins <= before_ends:
            boundary = min(max(boundary, after_begins), before_ends)
        starts.append(round(boundary))
    ends = [start - 1 for start in starts[1:]] + [query_frames - 1]
    return list(zip(starts, ends, strict=True))
