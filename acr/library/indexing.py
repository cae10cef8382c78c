"""The background indexing worker: library rows in, fingerprints in the indexes.

Media with sound go into the audio index, media with pictures into the video
index beside it (``<index_dir>/video``), both under the content's id; a
content is ready when either took it.

The database says what should be indexed (contents in ``processing``) and what
should not be any more (deleted contents); the index says what is. The worker
reconciles the two, one content per :meth:`ContentIndexer.tick`:

1. deleted contents still in the index are removed from it;
2. the oldest ``processing`` content is fingerprinted (outside any database
   transaction: it is the slow part), added to the index under the content's
   id, and marked ``ready`` — or ``failed`` with the reason.

Adding to the index and marking the row are two commits in two databases. A
crash between them leaves a content that is indexed but still
``processing``; the next pass finds it in the index by its id and only marks it
ready, so a content is never indexed twice.

Only one process may write an index. Each server process runs a worker; the
one that gets the index's writer lock does the work and the others find the
lock taken and wait for their turn (if its holder stops).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from acr.db.models import Content, utcnow
from acr.db.session import write_session
from acr.errors import (
    AcrError,
    IndexStoreError,
    MediaError,
    MediaTooShortError,
    NoAudioStreamError,
    NoVideoStreamError,
    SilentMediaError,
    UnknownContentError,
)
from acr.index.catalogue import Catalogue, ContentRecord, ContentSpec
from acr.index.directory import CATALOGUE_FILE, file_sha256
from acr.index.store import Index
from acr.index.video import VIDEO_SUBDIRECTORY, VideoIndex
from acr.library.contents import KINDS, emit_content_event
from acr.settings import Settings
from acr.signals.base import Fingerprints
from indexer.job import describe_error

__all__ = ["MAX_ATTEMPTS", "ContentIndexer", "sync_from_index"]

log = logging.getLogger("acr.library.indexing")

MAX_ATTEMPTS = 3
"""Passes begun on one content before it is failed: a file that kills the worker must not
kill every server restart too."""

_SYNC_CHUNK = 500
_ID_LENGTH = 32
"""Longest library id (``Content.id``); the batch indexer's generated ids are 32 hex digits."""


@dataclass(frozen=True)
class _Claim:
    """What the worker needs of a content, read in one short transaction."""

    id: str
    title: str
    media_path: str | None
    sha256: str | None
    owner_account_id: str | None
    attempts: int


class ContentIndexer:
    """Index what the library asks for; run :meth:`tick` periodically, :meth:`close` at the end.

    Parameters
    ----------
    sessions : sessionmaker
        The service database.
    settings : Settings
        ``index_path`` is the index written to (created if missing).
    """

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._index_path = settings.index_path
        self._index: Index | None = None
        self._video: VideoIndex | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def _open(self) -> Index | None:
        """The writable indexes (sound, and pictures beside it), or None while another
        process holds them."""
        if self._index is None:
            try:
                index = Index.open(self._index_path, create=True)
            except IndexStoreError as error:
                log.debug("indexer idle: %s", error)
                return None
            try:
                self._video = VideoIndex.open(self._index_path / VIDEO_SUBDIRECTORY, create=True)
            except IndexStoreError as error:
                index.close()
                log.debug("indexer idle: %s", error)
                return None
            self._index = index
            log.info("indexer writing %s", self._index_path)
        return self._index

    def close(self) -> None:
        """Release the indexes (and their writer locks)."""
        for index in (self._index, self._video):
            if index is not None:
                index.close()
        self._index = self._video = None

    # -- work --------------------------------------------------------------------------------

    def tick(self) -> bool:
        """Do one unit of work; True if there may be more to do at once."""
        index = self._open()
        if index is None:
            return False
        removed = self._unindex_deleted(index)
        claim = self._claim()
        if claim is None:
            return removed
        self._index_one(index, claim)
        return True

    def _unindex_deleted(self, index: Index, limit: int = 100) -> bool:
        """Take deleted contents out of the index; True if any were handled."""
        with self._sessions() as session:
            ids = session.scalars(
                select(Content.id)
                .where(Content.deleted_at.is_not(None), Content.unindexed_at.is_(None))
                .order_by(Content.deleted_at)
                .limit(limit)
            ).all()
        if not ids:
            return False
        for content_id in ids:
            # Not found: deleted before it was ever indexed, or removed by a pass that then died.
            for signal in (index, self._video):
                if signal is not None:
                    with contextlib.suppress(UnknownContentError):
                        signal.remove(content_id)
        with write_session(self._sessions) as session:
            for row in session.scalars(select(Content).where(Content.id.in_(ids))):
                row.unindexed_at = utcnow()
            session.commit()
        log.info("removed %d deleted content(s) from the index", len(ids))
        return True

    def _claim(self) -> _Claim | None:
        """The oldest content waiting to be indexed, its attempt counted (one short transaction)."""
        # Look before taking SQLite's write lock: an idle worker polls often, and a writer
        # holding the lock fails other connections' read-then-write transactions at once.
        with self._sessions() as session:
            content_id = session.scalars(
                select(Content.id)
                .where(Content.status == "processing", Content.deleted_at.is_(None))
                .order_by(Content.created_at, Content.id)
                .limit(1)
            ).first()
        if content_id is None:
            return None
        with write_session(self._sessions) as session:
            row = session.get(Content, content_id)
            if row is None or row.status != "processing" or row.deleted_at is not None:
                return None  # changed meanwhile: the next pass looks again
            row.index_attempts += 1
            claim = _Claim(
                id=row.id,
                title=row.title,
                media_path=row.media_path,
                sha256=row.sha256,
                owner_account_id=row.owner_account_id,
                attempts=row.index_attempts,
            )
            session.commit()
        return claim

    def _index_one(self, index: Index, claim: _Claim) -> None:
        video = self._video
        assert video is not None  # opened with the audio index
        heard = _indexed(index, claim.id)
        seen = _indexed(video, claim.id)
        if heard is not None or seen is not None:
            # Indexed by a pass that died before it could say so. Pictures are added
            # last: sound without pictures may be a pass that died in between.
            if seen is None:
                with contextlib.suppress(Exception):
                    seen = _add_pictures(video, claim, _spec(claim))
            done = seen or heard
            assert done is not None
            self._finish(claim.id, duration_s=done.duration_s, indexed_at=done.added_at)
            return
        if claim.attempts > MAX_ATTEMPTS:
            self._finish(
                claim.id,
                reason=f"worker_crashed: indexing was begun {MAX_ATTEMPTS} times "
                "and never finished",
            )
            return
        if not claim.media_path:
            self._finish(claim.id, reason="file_not_found: the content has no media file")
            return
        spec = _spec(claim)
        soundless: MediaError | None = None
        try:
            fingerprints: Fingerprints | None = _fingerprint(index, claim)
        except (NoAudioStreamError, SilentMediaError, MediaTooShortError) as error:
            fingerprints, soundless = None, error  # its pictures may still be content
        except Exception as error:  # any file that cannot be indexed fails itself, not the worker
            code, message = describe_error(error)
            self._finish(claim.id, reason=f"{code}: {message}")
            return
        added = index.add_batch([(spec, fingerprints)])[0] if fingerprints is not None else None
        try:
            pictures = _add_pictures(video, claim, spec)
        except Exception as error:
            if added is None:  # neither sound nor pictures: the sound's reason, else the pictures'
                code, message = describe_error(
                    soundless if isinstance(error, NoVideoStreamError) and soundless else error
                )
                self._finish(claim.id, reason=f"{code}: {message}")
                return
            pictures = None
            if not isinstance(error, NoVideoStreamError):
                log.warning("content %s: sound indexed, pictures not: %s", claim.id, error)
        done = pictures or added
        assert done is not None
        self._finish(claim.id, duration_s=done.duration_s, indexed_at=done.added_at)

    def _finish(
        self,
        content_id: str,
        *,
        duration_s: float | None = None,
        indexed_at: float | None = None,
        reason: str | None = None,
    ) -> None:
        """Mark a content ready (``duration_s``) or failed (``reason``), with its event."""
        with write_session(self._sessions) as session:
            row = session.get(Content, content_id)
            if row is None:
                return
            if reason is None:
                row.status = "ready"
                row.failure_reason = None
                row.duration_s = duration_s
                row.indexed_at = (
                    datetime.fromtimestamp(indexed_at, UTC) if indexed_at is not None else utcnow()
                )
                event = "content.ready"
            else:
                row.status = "failed"
                row.failure_reason = reason
                event = "content.failed"
                log.warning("content %s failed to index: %s", content_id, reason)
            row.updated_at = utcnow()
            session.flush()
            # A content deleted while it was being indexed leaves the index on the next pass.
            if row.deleted_at is None:
                emit_content_event(session, event, row)
            session.commit()


class _MediaChangedError(AcrError):
    code = "media_changed"


def _spec(claim: _Claim) -> ContentSpec:
    return ContentSpec(
        title=claim.title,
        content_id=claim.id,
        source=claim.media_path,
        content_hash=claim.sha256,
        owner=claim.owner_account_id,
    )


def _indexed(index: Index | VideoIndex, content_id: str) -> ContentRecord | None:
    try:
        return index.get(content_id)
    except UnknownContentError:
        return None


def _add_pictures(video: VideoIndex, claim: _Claim, spec: ContentSpec) -> ContentRecord:
    """Hash the pictures of the content's media (every reference view) and add them."""
    assert claim.media_path is not None
    hashes = video.signal.hash_reference(claim.media_path)
    if len(hashes) == 0:
        raise SilentMediaError(f"{claim.media_path}: every frame of the video is flat or black")
    return video.add_batch([(spec, hashes)])[0]


def _fingerprint(index: Index, claim: _Claim) -> Fingerprints:
    assert claim.media_path is not None
    # Imported files stay where they are and may be replaced there: index only
    # the bytes that were registered (and deduplicated) under this content.
    if claim.sha256 is not None and file_sha256(claim.media_path) != claim.sha256:
        raise _MediaChangedError(
            f"{claim.media_path} no longer holds the bytes registered (SHA-256 differs)"
        )
    return index.signal.fingerprint_media(claim.media_path)


def sync_from_index(sessions: sessionmaker[Session], index_path: Path) -> int:
    """Register as ``ready`` contents that are in the index but not in the library.

    Contents indexed beforehand by the batch indexer (``acr index``) become
    library contents under their index id, so campaigns can target them. A
    content is skipped (and logged) if its id cannot be a library id, if a
    library row already has its id (even a deleted one) or its bytes.

    Parameters
    ----------
    sessions : sessionmaker
        The service database.
    index_path : Path
        The index (its audio catalogue, and the video one in ``video/``);
        nothing is done if there is none yet.

    Returns
    -------
    int
        Number of contents registered.
    """
    # The catalogues alone say what is indexed; opening the indexes would load their codes too.
    records: list[ContentRecord] = []
    for path in (
        Path(index_path) / CATALOGUE_FILE,
        Path(index_path) / VIDEO_SUBDIRECTORY / CATALOGUE_FILE,
    ):
        if path.exists():
            catalogue = Catalogue(path, readonly=True)
            try:
                records += catalogue.live_contents()
            finally:
                catalogue.close()
    return register_indexed(sessions, records)


def register_indexed(sessions: sessionmaker[Session], records: Iterable[ContentRecord]) -> int:
    """Register index ``records`` missing from the library; see :func:`sync_from_index`."""
    registered = 0
    batch: list[ContentRecord] = []
    for record in records:
        if len(record.content_id) > _ID_LENGTH:
            log.warning("not registering indexed content %r: id too long", record.content_id)
            continue
        batch.append(record)
        if len(batch) == _SYNC_CHUNK:
            registered += _register_chunk(sessions, batch)
            batch = []
    if batch:
        registered += _register_chunk(sessions, batch)
    if registered:
        log.info("registered %d content(s) found in the index", registered)
    return registered


def _register_chunk(sessions: sessionmaker[Session], records: list[ContentRecord]) -> int:
    with write_session(sessions) as session:
        ids = [r.content_id for r in records]
        known_ids = set(session.scalars(select(Content.id).where(Content.id.in_(ids))))
        hashes = [r.content_hash for r in records if r.content_hash]
        live_hashes = set(
            session.scalars(
                select(Content.sha256).where(
                    Content.sha256.in_(hashes), Content.deleted_at.is_(None)
                )
            )
        )
        added = 0
        for record in records:
            if record.content_id in known_ids:
                continue
            if record.content_hash and record.content_hash in live_hashes:
                log.warning(
                    "not registering indexed content %s: its bytes are library content already",
                    record.content_id,
                )
                continue
            session.add(_row_for(record))
            known_ids.add(record.content_id)
            if record.content_hash:
                live_hashes.add(record.content_hash)
            added += 1
        session.commit()
    return added


def _row_for(record: ContentRecord) -> Content:
    metadata = dict(record.metadata)
    kind = metadata.get("kind")
    source = Path(record.source) if record.source else None
    try:
        size = source.stat().st_size if source is not None else None
    except OSError:
        size = None
    indexed_at = datetime.fromtimestamp(record.added_at, UTC)
    return Content(
        id=record.content_id,
        title=record.title[:500],
        kind=kind if kind in KINDS else "programme",
        owner_account_id=record.owner[:64] if record.owner else None,
        external_ids={"external_id": record.external_id} if record.external_id else {},
        extra=metadata,
        status="ready",
        sha256=record.content_hash,
        size_bytes=size,
        media_path=record.source,
        original_filename=source.name if source is not None else None,
        duration_s=record.duration_s,
        indexed_at=indexed_at,
    )
