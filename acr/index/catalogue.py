"""Stage 4b: the catalogue — what each indexed content is, and which segments are live.

An embedded SQLite database beside the segments. It is the index's manifest:
the ``segments`` table lists live segment files, and a content's codes count
only while its row is live. Committing a batch (its content rows and its
segment row together) is one SQLite transaction, so after a crash at any
instant the catalogue names either all of a batch or none of it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acr.errors import IndexStoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    contents INTEGER NOT NULL,
    codes INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS contents (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    content_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    source TEXT,
    duration_s REAL NOT NULL,
    content_hash TEXT,
    external_id TEXT,
    owner TEXT,
    metadata TEXT NOT NULL,
    segment TEXT NOT NULL REFERENCES segments(name),
    codes INTEGER NOT NULL,
    added_at REAL NOT NULL,
    removed_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS contents_live_id ON contents(content_id) WHERE removed_at IS NULL;
CREATE INDEX IF NOT EXISTS contents_live_hash ON contents(content_hash) WHERE removed_at IS NULL;
CREATE INDEX IF NOT EXISTS contents_segment ON contents(segment);
"""
SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class ContentSpec:
    """What the caller says about a content being added."""

    title: str
    content_id: str | None = None
    source: str | None = None
    content_hash: str | None = None
    external_id: str | None = None
    owner: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ContentRecord:
    """A content as the catalogue knows it."""

    key: int
    content_id: str
    kind: str
    title: str
    source: str | None
    duration_s: float
    content_hash: str | None
    external_id: str | None
    owner: str | None
    metadata: dict[str, Any]
    segment: str
    codes: int
    added_at: float
    removed_at: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (the internal key is omitted)."""
        return {
            "content_id": self.content_id,
            "kind": self.kind,
            "title": self.title,
            "source": self.source,
            "duration_s": self.duration_s,
            "content_hash": self.content_hash,
            "external_id": self.external_id,
            "owner": self.owner,
            "metadata": self.metadata,
            "codes": self.codes,
            "added_at": self.added_at,
            "removed_at": self.removed_at,
        }


_COLUMNS = (
    "key, content_id, kind, title, source, duration_s, content_hash, external_id, owner, "
    "metadata, segment, codes, added_at, removed_at"
)


def _record(row: tuple[Any, ...]) -> ContentRecord:
    values = list(row)
    values[9] = json.loads(values[9])
    return ContentRecord(*values)


def _create(path: Path) -> None:
    """Create an empty catalogue at ``path`` whole, or leave the one another process made.

    Built beside its final name and linked into place, so that a process
    opening the path (a server's other worker, say) never finds a database
    without its schema; ``os.link`` refuses to replace a catalogue that
    another process created first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    os.close(handle)
    temp = Path(temp_name)
    try:
        db = sqlite3.connect(temp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(
                f"BEGIN; {SCHEMA} INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}'),"
                " ('generation', '0'); COMMIT;"
            )
        finally:
            db.close()
        with suppress(FileExistsError):  # another process created it first: theirs stays
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)


class Catalogue:
    """Thin typed access to the catalogue database."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        if not readonly and not path.exists():
            _create(path)
        # A URI, not a path, so that ?mode= applies; as_uri() escapes '#', '?' and '%'.
        uri = f"{path.resolve().as_uri()}?mode={'ro' if readonly else 'rwc'}"
        self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA busy_timeout = 10000")
            if not readonly:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = FULL")
                self._db.executescript(SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?), ('generation', '0')",
                    (SCHEMA_VERSION,),
                )
            row = self._db.execute(
                "SELECT value FROM meta WHERE name = 'schema_version'"
            ).fetchone()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise IndexStoreError(
                f"catalogue {path} is damaged or not a catalogue: {error}"
            ) from error
        if row is None or row[0] != SCHEMA_VERSION:
            self._db.close()
            raise IndexStoreError(
                f"catalogue {path} has schema {row[0] if row else 'unknown'}, "
                f"this version reads {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write; bumps the generation readers poll for changes."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'generation'"
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def snapshot(self) -> tuple[int, list[str], list[ContentRecord]]:
        """Generation, live segments and live contents, read as of one instant."""
        self._db.execute("BEGIN")
        try:
            return self.generation(), self.live_segments(), self.live_contents()
        finally:
            self._db.execute("COMMIT")

    def generation(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def live_segments(self) -> list[str]:
        return [
            r[0] for r in self._db.execute("SELECT name FROM segments ORDER BY created_at, name")
        ]

    def segment_bytes(self) -> int:
        row = self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM segments").fetchone()
        return int(row[0])

    def next_keys(self, count: int) -> list[int]:
        """Reserve ``count`` keys (call inside a transaction)."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'contents'").fetchone()
        start = int(row[0]) + 1 if row else 1
        return list(range(start, start + count))

    def insert_segment(
        self, db: sqlite3.Connection, name: str, kind: str, contents: int, codes: int, size: int
    ) -> None:
        db.execute(
            "INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?)",
            (name, kind, contents, codes, size, time.time()),
        )

    def insert_content(
        self,
        db: sqlite3.Connection,
        key: int,
        spec: ContentSpec,
        content_id: str,
        kind: str,
        duration_s: float,
        segment: str,
        codes: int,
    ) -> None:
        db.execute(
            f"INSERT INTO contents ({_COLUMNS}) VALUES ({', '.join('?' * 13)}, NULL)",
            (
                key,
                content_id,
                kind,
                spec.title,
                spec.source,
                duration_s,
                spec.content_hash,
                spec.external_id,
                spec.owner,
                json.dumps(spec.metadata, sort_keys=True),
                segment,
                codes,
                time.time(),
            ),
        )

    def live_contents(self) -> list[ContentRecord]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM contents WHERE removed_at IS NULL ORDER BY key"
        )
        return [_record(r) for r in rows]

    def by_id(self, content_id: str) -> ContentRecord | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM contents WHERE content_id = ? AND removed_at IS NULL",
            (content_id,),
        ).fetchone()
        return _record(row) if row else None

    def by_hash(self, content_hash: str) -> ContentRecord | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM contents WHERE content_hash = ? AND removed_at IS NULL "
            "ORDER BY key LIMIT 1",
            (content_hash,),
        ).fetchone()
        return _record(row) if row else None

    def by_key(self, key: int) -> ContentRecord | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM contents WHERE key = ?", (key,)).fetchone()
        return _record(row) if row else None
