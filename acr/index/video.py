"""The video index: a directory of immutable video segments, its catalogue, and matching.

The same store as the audio index (:mod:`acr.index.store`), for the video
signal: the catalogue (:mod:`acr.index.catalogue`, the same SQLite schema) is
the manifest of live segments and the list of contents; segments hold the
per-frame hashes (:mod:`acr.index.video_segment`); a batch is one segment
written durably and then one catalogue transaction; one writer holds
``writer.lock``, read-only instances pick up its commits with :meth:`refresh`.

In the service the video index lives in ``<index_dir>/video``, beside the
audio index's own files.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import numpy as np

from acr.errors import IndexStoreError, UnknownContentError
from acr.index.catalogue import Catalogue, ContentRecord, ContentSpec
from acr.index.segment import SegmentMissingError, delete_unlisted
from acr.index.store import (
    CATALOGUE_FILE,
    DEFAULT_MAX_QUERY_BYTES,
    DEFAULT_MAX_QUERY_SECONDS,
    LOCK_FILE,
    SEGMENT_DIR,
    file_sha256,
)
from acr.index.video_lookup import VideoLookup
from acr.index.video_segment import (
    build_video_segment,
    merge_video_segments,
    read_video_segment,
    write_video_segment,
)
from acr.results import Match, MatchResult
from acr.signals.base import MediaSource
from acr.signals.video import KIND, QUERY_MIN_QUALITY, VideoHashes, VideoSignal
from acr.signals.video.views import FIRST_LOOK, LATER_LOOK, evidence_views
from acr.video_matching import (
    DECISIVE_RIVALS,
    DEFAULT_MIN_CONFIDENCE,
    VideoAlignment,
    align_video,
    concatenate_hits,
    decisive,
    shot_units,
    view_groups,
)

__all__ = ["VIDEO_SUBDIRECTORY", "VideoIndex", "VideoIndexStats"]

VIDEO_SUBDIRECTORY = "video"
"""Where the service keeps its video index, inside its index directory."""

_REFRESH_ATTEMPTS = 3


@dataclass(frozen=True)
class VideoIndexStats:
    """Size of a video index."""

    contents: int
    hashes: int
    duration_s: float
    segments: int
    bytes_on_disk: int

    @property
    def hours(self) -> float:
        return self.duration_s / 3600.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "contents": self.contents,
            "hashes": self.hashes,
            "duration_s": self.duration_s,
            "hours": self.hours,
            "segments": self.segments,
            "bytes_on_disk": self.bytes_on_disk,
        }


class VideoIndex:
    """A video hash index on disk, loaded for matching.

    Open with :meth:`open`; use as a context manager. A writable index holds
    an exclusive lock on its directory; read-only instances may be open beside it.
    """

    def __init__(self, directory: Path, catalogue: Catalogue, lock: IO[bytes] | None) -> None:
        self.directory = directory
        self.signal = VideoSignal()
        self._catalogue = catalogue
        self._lock = lock
        self._lookup = VideoLookup()
        self._records: dict[int, ContentRecord] = {}
        self._loaded_segments: set[str] = set()
        self._generation = -1
        self.refresh()

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: str | os.PathLike[str], *, create: bool = False, readonly: bool = False
    ) -> VideoIndex:
        """Open the video index in `directory`.

        Parameters
        ----------
        create : bool
            Create the directory and an empty index if there is none.
        readonly : bool
            Open for matching only; takes no lock.

        Raises
        ------
        IndexStoreError
            No index there (and not `create`), another process holds the
            writer lock, or the directory holds an audio index.
        """
        path = Path(directory)
        if not (path / CATALOGUE_FILE).exists() and (not create or readonly):
            raise IndexStoreError(f"no video index at {path} (create one with `acr index`)")
        lock: IO[bytes] | None = None
        if not readonly:
            (path / SEGMENT_DIR).mkdir(parents=True, exist_ok=True)
            lock = open(path / LOCK_FILE, "wb")  # noqa: SIM115 - held for the index's lifetime
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                raise IndexStoreError(f"index {path} is being written by another process") from None
        try:
            catalogue = Catalogue(path / CATALOGUE_FILE, readonly=readonly)
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        try:
            index = cls(path, catalogue, lock)
            kinds = {record.kind for record in index._records.values()}
            if kinds - {KIND}:
                raise IndexStoreError(f"{path} holds {', '.join(sorted(kinds))} content, not video")
            if lock is not None:
                index._delete_orphans()
        except BaseException:
            catalogue.close()
            if lock is not None:
                lock.close()
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
                # A compaction deleted the files we were about to read; look again.
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
        if not self._loaded_segments.issubset(live):
            self._lookup = VideoLookup()
            self._loaded_segments = set()
        for name in live:
            if name not in self._loaded_segments:
                self._lookup.add_segment(read_video_segment(self._segment_path(name)))
                self._loaded_segments.add(name)

    # -- writing ----------------------------------------------------------------------------

    def add_file(
        self,
        path: str | os.PathLike[str],
        *,
        content_id: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        external_id: str | None = None,
        owner: str | None = None,
        skip_existing: bool = True,
    ) -> ContentRecord:
        """Decode, hash (every reference view) and add a file; an indexed file is returned as is."""
        content_hash = file_sha256(path)
        if skip_existing and (existing := self._catalogue.by_hash(content_hash)) is not None:
            return existing
        hashes = self.signal.hash_reference(path)
        spec = ContentSpec(
            title=title or Path(path).stem,
            content_id=content_id,
            source=str(Path(path).resolve()),
            content_hash=content_hash,
            external_id=external_id,
            owner=owner,
            metadata=metadata or {},
        )
        return self.add_batch([(spec, hashes)])[0]

    def add_hashes(
        self,
        hashes: VideoHashes,
        *,
        content_id: str,
        title: str,
        metadata: dict[str, Any] | None = None,
    ) -> ContentRecord:
        """Add a content from hashes computed elsewhere (hash it with ``REFERENCE_VIEWS``)."""
        spec = ContentSpec(title=title, content_id=content_id, metadata=metadata or {})
        return self.add_batch([(spec, hashes)])[0]

    def add_batch(self, batch: Iterable[tuple[ContentSpec, VideoHashes]]) -> list[ContentRecord]:
        """Add several contents as one segment, atomically."""
        self._require_writer()
        items = list(batch)
        if not items:
            return []
        explicit = [spec.content_id for spec, _ in items if spec.content_id is not None]
        if len(explicit) != len(set(explicit)):
            raise IndexStoreError("a content id appears more than once in the batch")
        for content_id in explicit:
            if self._catalogue.by_id(content_id) is not None:
                raise IndexStoreError(f"content id {content_id!r} is already indexed")
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.vseg"
        with self._catalogue.transaction() as db:
            keys = self._catalogue.next_keys(len(items))
            segment = build_video_segment(
                [(key, hashes) for key, (_, hashes) in zip(keys, items, strict=True)]
            )
            size = write_video_segment(segment, self._segment_path(name))
            self._catalogue.insert_segment(db, name, KIND, len(items), segment.times_ms.size, size)
            for key, (spec, hashes) in zip(keys, items, strict=True):
                self._catalogue.insert_content(
                    db,
                    key,
                    spec,
                    spec.content_id or uuid.uuid4().hex,
                    KIND,
                    hashes.duration_s,
                    name,
                    len(hashes),
                )
        self._lookup.add_segment(segment)
        self._loaded_segments.add(name)
        for key in keys:
            record = self._catalogue.by_key(key)
            assert record is not None
            self._records[key] = record
        self._generation = self._catalogue.generation()
        return [self._records[key] for key in keys]

    def remove(self, content_id: str) -> ContentRecord:
        """Remove a content from matching; its hashes go at the next :meth:`compact`."""
        self._require_writer()
        record = self.get(content_id)
        with self._catalogue.transaction() as db:
            db.execute(
                "UPDATE contents SET removed_at = ? WHERE key = ?", (time.time(), record.key)
            )
        self._lookup.remove_key(record.key)
        self._records.pop(record.key, None)
        self._generation = self._catalogue.generation()
        return record

    def compact(self) -> int:
        """Rewrite the live hashes into one segment, dropping removed contents.

        Returns
        -------
        int
            Number of segment files replaced.
        """
        self._require_writer()
        old = self._catalogue.live_segments()
        if not old:
            return 0
        parts = []
        for name in old:
            segment = read_video_segment(self._segment_path(name))
            parts += [
                segment.content(i)
                for i, key in enumerate(segment.keys)
                if int(key) in self._records
            ]
        with self._catalogue.transaction() as db:
            if parts:
                merged = merge_video_segments(parts)
                name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.vseg"
                size = write_video_segment(merged, self._segment_path(name))
                self._catalogue.insert_segment(
                    db, name, KIND, merged.keys.size, merged.times_ms.size, size
                )
                db.executemany(
                    "UPDATE contents SET segment = ? WHERE key = ?",
                    [(name, int(key)) for key in merged.keys],
                )
            db.executemany("DELETE FROM segments WHERE name = ?", [(n,) for n in old])
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
            raise UnknownContentError(f"no content with id {content_id!r} in this video index")
        return record

    def find_by_hash(self, content_hash: str) -> ContentRecord | None:
        return self._catalogue.by_hash(content_hash)

    def list(self) -> list[ContentRecord]:
        return sorted(self._records.values(), key=lambda r: r.key)

    def stats(self) -> VideoIndexStats:
        records = self._records.values()
        on_disk = self._catalogue.segment_bytes() + sum(
            (self.directory / name).stat().st_size
            for name in (CATALOGUE_FILE, f"{CATALOGUE_FILE}-wal")
            if (self.directory / name).exists()
        )
        return VideoIndexStats(
            contents=len(self._records),
            hashes=sum(r.codes for r in records),
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
        """Identify a video sample given as a file path, file bytes or a binary file object."""
        started = time.perf_counter()
        hashes = self.signal.hash_query(source, max_seconds=max_seconds, max_bytes=max_bytes)
        return self.match_hashes(
            hashes, top_k=top_k, min_confidence=min_confidence, started=started
        )

    def match_hashes(
        self,
        hashes: VideoHashes,
        *,
        top_k: int = 1,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        started: float | None = None,
    ) -> MatchResult:
        """Identify a sample from its frame hashes (computed here or on the client)."""
        started = time.perf_counter() if started is None else started
        if self.readonly:
            self.refresh()
        usable = hashes.quality >= QUERY_MIN_QUALITY
        query_hashes, views = hashes.hashes[usable], hashes.views[usable]
        times = hashes.times_s[usable]
        _, frame_of = np.unique(times, return_inverse=True)
        frames = frame_of.astype(np.int64)
        # The overscan crops of a frame are one view's evidence (see ``evidence_views``).
        evidence = evidence_views(views)
        interval = 1.0 / self.signal.fps
        total_cells = max(1, round(sum(r.duration_s for r in self._records.values()) / interval))
        durations = {key: record.duration_s for key, record in self._records.items()}
        align = partial(
            align_video,
            query_times_s=times,
            query_groups=view_groups(query_hashes, frames, evidence),
            query_views=evidence,
            interval_s=interval,
            total_cells=total_cells,
            sample_s=hashes.duration_s,
            reference_frames=self._lookup.frames,
            reference_s=durations,
            query_units=shot_units(query_hashes, frames, views),
        )
        # A cascade: the whole picture and the halves first (5 of the 20 reference indexes);
        # the crop windows, three quarters of the scan, only when those leave the answer
        # open (``decisive``).
        hits = self._lookup.search(query_hashes, views, within=FIRST_LOOK)
        ranked = align(hits, top_k=max(DECISIVE_RIVALS, top_k), min_confidence=0.0)
        if decisive(ranked, hashes.duration_s, durations):
            ranked = [a for a in ranked[: max(1, top_k)] if a.confidence >= min_confidence]
        else:
            more = self._lookup.search(query_hashes, views, within=LATER_LOOK)
            ranked = align(
                concatenate_hits([hits, more]), top_k=max(1, top_k), min_confidence=min_confidence
            )
        matches = [self._to_match(a, hashes.duration_s) for a in ranked]
        return MatchResult(
            matches=matches,
            segments=matches[:1],
            query_duration_s=hashes.duration_s,
            query_codes=len(hashes),
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
        )

    # -- internals --------------------------------------------------------------------------

    def _to_match(self, alignment: VideoAlignment, query_duration_s: float) -> Match:
        record = self._records[alignment.key]
        return Match(
            content_id=record.content_id,
            title=record.title,
            source=record.source,
            offset_s=alignment.offset_s,
            confidence=alignment.confidence,
            score=alignment.votes,
            speed=1.0,
            pitch=1.0,
            query_start_s=0.0,
            query_end_s=query_duration_s,
            duration_s=record.duration_s,
            metadata=record.metadata,
        )

    def _segment_path(self, name: str) -> Path:
        return self.directory / SEGMENT_DIR / name

    def _require_writer(self) -> None:
        if self.readonly:
            raise IndexStoreError("this video index was opened read-only")

    def _delete_orphans(self) -> None:
        """Delete segment files no committed batch refers to (left by a crash or a compaction)."""
        delete_unlisted(self.directory / SEGMENT_DIR, set(self._catalogue.live_segments()))
