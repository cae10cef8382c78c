"""An index directory: immutable segments, the catalogue that lists them, and one writer.

What the audio (:mod:`acr.index.store`) and video (:mod:`acr.index.video`)
indexes share; each adds its segment format, its lookup and its matching.

Layout of an index directory::

    catalogue.sqlite   contents and the manifest of live segments
    segments/          immutable segment files
    writer.lock        held by the one process allowed to write

Adding a batch writes its segment file durably first, then commits the
catalogue rows and the segment row in one transaction. A crash before the
commit leaves an unreferenced file, which the next writer deletes; a crash after
it leaves a complete batch. Removing a content marks its row removed (a
tombstone); :meth:`IndexDirectory.compact` rewrites segments without removed
contents.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Generic, Protocol, Self, TypeVar

from acr.errors import IndexStoreError, UnknownContentError
from acr.index.catalogue import Catalogue, ContentRecord, ContentSpec
from acr.index.files import SegmentContents, SegmentMissingError, delete_unlisted

__all__ = ["CATALOGUE_FILE", "LOCK_FILE", "SEGMENT_DIR", "IndexDirectory", "file_sha256"]

CATALOGUE_FILE = "catalogue.sqlite"
SEGMENT_DIR = "segments"
LOCK_FILE = "writer.lock"
_REFRESH_ATTEMPTS = 3


class Signal(Protocol):
    """What the directory reads of a signal: the kind of content the catalogue records."""

    @property
    def name(self) -> str: ...


class Reference(Protocol):
    """What the catalogue records of an added content besides the caller's spec."""

    @property
    def duration_s(self) -> float: ...

    def __len__(self) -> int: ...


class Postings(Protocol):
    """What the directory does with a lookup besides loading segments into it."""

    def keys(self) -> set[int]: ...

    def remove_key(self, key: int) -> None: ...


SegmentT = TypeVar("SegmentT", bound=SegmentContents)
ReferenceT = TypeVar("ReferenceT", bound=Reference)
PostingsT = TypeVar("PostingsT", bound=Postings)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Content hash of a file, the indexer's idempotency key."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class IndexDirectory(ABC, Generic[SegmentT, ReferenceT, PostingsT]):
    """An index on disk, loaded for matching: what is the same for every signal.

    Open with :meth:`open`; use as a context manager. A writable index holds an
    exclusive lock on its directory; any number of read-only instances may be
    open beside it and pick up its commits with :meth:`refresh`.
    """

    noun: ClassVar[str]
    """What the index is called in errors ("index", "video index")."""
    signal: ClassVar[Signal]
    """The signal of its contents (signals hold no state: one serves every instance)."""
    suffix: ClassVar[str]
    """The suffix of its segment files."""

    def __init__(self, directory: Path, catalogue: Catalogue, lock: IO[bytes] | None) -> None:
        self.directory = directory
        self._catalogue = catalogue
        self._lock = lock
        self._lookup = self._new_lookup()
        self._records: dict[int, ContentRecord] = {}
        self._loaded_segments: set[str] = set()
        self._generation = -1
        self.refresh()

    # -- what each signal says --------------------------------------------------------------

    @abstractmethod
    def _new_lookup(self) -> PostingsT:
        """An empty lookup."""

    @abstractmethod
    def _make_searchable(self, name: str, segment: SegmentT | None) -> None:
        """Add a live segment (read from its file when ``segment`` is None) to the lookup."""

    @abstractmethod
    def _reference(self, path: str | os.PathLike[str]) -> ReferenceT:
        """Decode a reference file and compute what the index keeps of it."""

    @abstractmethod
    def _build_segment(self, contents: list[tuple[int, ReferenceT]]) -> SegmentT:
        """The segment of ``(key, reference)`` per content."""

    @abstractmethod
    def _write_segment(self, segment: SegmentT, path: Path) -> int:
        """Write a segment file atomically and durably; return its size in bytes."""

    @abstractmethod
    def _compacted(self, old: list[str]) -> Iterable[SegmentT]:
        """The segments to replace the ``old`` ones, holding their live contents."""

    def _check_reference(self, reference: ReferenceT) -> None:
        """Raise if the index cannot hold ``reference``; by default it holds any."""

    def _check_contents(self) -> None:
        """Raise if the directory holds contents the index cannot match; by default none."""

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: str | os.PathLike[str], *, create: bool = False, readonly: bool = False
    ) -> Self:
        """Open the index in ``directory``.

        Parameters
        ----------
        create : bool
            Create the directory and an empty index if there is none.
        readonly : bool
            Open for matching only; takes no lock.

        Raises
        ------
        IndexStoreError
            If there is no index there (and ``create`` is false), another
            process holds the writer lock, or the index refuses the directory's
            contents.
        """
        path = Path(directory)
        if not (path / CATALOGUE_FILE).exists() and (not create or readonly):
            raise IndexStoreError(f"no {cls.noun} at {path} (create one with `acr index`)")
        lock = None if readonly else _lock_writer(path)
        try:
            catalogue = Catalogue(path / CATALOGUE_FILE, readonly=readonly)
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        try:
            index = cls(path, catalogue, lock)
        except BaseException:
            catalogue.close()
            if lock is not None:
                lock.close()
            raise
        try:
            index._check_contents()
            if lock is not None:
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
            self._lookup = self._new_lookup()
            self._loaded_segments = set()
        for name in live:
            if name not in self._loaded_segments:
                self._make_searchable(name, None)

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
        """Decode and add one reference file; an already indexed file is returned as is."""
        content_hash = file_sha256(path)
        if skip_existing and (existing := self.find_by_hash(content_hash)) is not None:
            return existing
        reference = self._reference(path)
        spec = ContentSpec(
            title=title or Path(path).stem,
            content_id=content_id,
            source=str(Path(path).resolve()),
            content_hash=content_hash,
            external_id=external_id,
            owner=owner,
            metadata=metadata or {},
        )
        return self.add_batch([(spec, reference)])[0]

    def add_batch(self, batch: Iterable[tuple[ContentSpec, ReferenceT]]) -> list[ContentRecord]:
        """Add several contents as one segment, atomically."""
        self._require_writer()
        items = list(batch)
        if not items:
            return []
        explicit_ids = [spec.content_id for spec, _ in items if spec.content_id is not None]
        if len(explicit_ids) != len(set(explicit_ids)):
            raise IndexStoreError("a content id appears more than once in the batch")
        for spec, reference in items:
            self._check_reference(reference)
            if spec.content_id is not None and self._catalogue.by_id(spec.content_id) is not None:
                raise IndexStoreError(f"content id {spec.content_id!r} is already indexed")
        with self._catalogue.transaction() as db:
            keys = self._catalogue.next_keys(len(items))
            segment = self._build_segment(
                [(key, reference) for key, (_, reference) in zip(keys, items, strict=True)]
            )
            name = self._publish(db, segment)
            for key, (spec, reference) in zip(keys, items, strict=True):
                self._catalogue.insert_content(
                    db,
                    key,
                    spec,
                    spec.content_id or uuid.uuid4().hex,
                    self.signal.name,
                    reference.duration_s,
                    name,
                    len(reference),
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
        """Remove a content from matching; what it indexed goes at the next :meth:`compact`."""
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
        """Rewrite the live contents into fewer segments, dropping removed ones.

        Returns
        -------
        int
            Number of segment files replaced.
        """
        self._require_writer()
        old = self._catalogue.live_segments()
        if not old:
            return 0
        replacements = self._compacted(old)
        with self._catalogue.transaction() as db:
            for segment in replacements:
                name = self._publish(db, segment)
                db.executemany(
                    "UPDATE contents SET segment = ? WHERE key = ?",
                    [(name, int(key)) for key in segment.keys],
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
            raise UnknownContentError(f"no content with id {content_id!r} in this {self.noun}")
        return record

    def find_by_hash(self, content_hash: str) -> ContentRecord | None:
        return self._catalogue.by_hash(content_hash)

    def list(self) -> list[ContentRecord]:
        return sorted(self._records.values(), key=lambda r: r.key)

    # -- internals --------------------------------------------------------------------------

    def _bytes_on_disk(self) -> int:
        """Bytes of the live segments and the catalogue."""
        return self._catalogue.segment_bytes() + sum(
            (self.directory / name).stat().st_size
            for name in (CATALOGUE_FILE, f"{CATALOGUE_FILE}-wal")
            if (self.directory / name).exists()
        )

    def _publish(self, db: sqlite3.Connection, segment: SegmentT) -> str:
        """Write ``segment`` under a new name and list it, in ``db``'s transaction; its name."""
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}{self.suffix}"
        size = self._write_segment(segment, self._segment_path(name))
        self._catalogue.insert_segment(
            db, name, self.signal.name, int(segment.keys.size), segment.size, size
        )
        return name

    def _segment_path(self, name: str) -> Path:
        return self.directory / SEGMENT_DIR / name

    def _require_writer(self) -> None:
        if self.readonly:
            raise IndexStoreError(f"this {self.noun} was opened read-only")

    def _delete_orphans(self) -> None:
        """Delete segment files no committed batch refers to (left by a crash or a compaction)."""
        delete_unlisted(self.directory / SEGMENT_DIR, set(self._catalogue.live_segments()))


def _lock_writer(path: Path) -> IO[bytes]:
    """Take the writer lock of the index in ``path``, creating its directories if needed.

    Raises
    ------
    IndexStoreError
        If another process holds it.
    """
    (path / SEGMENT_DIR).mkdir(parents=True, exist_ok=True)
    lock = open(path / LOCK_FILE, "wb")  # noqa: SIM115 - held for the index's lifetime
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise IndexStoreError(f"index {path} is being written by another process") from None
    return lock
