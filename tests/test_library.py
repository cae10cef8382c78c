"""The content library's parts: storing uploads, import paths, the indexing worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from acr.db.models import Content, Event
from acr.demo import synth_song, write_media
from acr.errors import EmptyMediaError, MediaTooLargeError
from acr.index.catalogue import ContentSpec
from acr.index.directory import file_sha256
from acr.index.store import Index
from acr.library.contents import NewContent, register_content
from acr.library.imports import (
    ImportPathError,
    PathNotAllowedError,
    manifest_imports,
    resolve_import_path,
)
from acr.library.indexing import MAX_ATTEMPTS, ContentIndexer, sync_from_index
from acr.library.uploads import INCOMING_DIR, IncomingMedia, StoredMedia, media_suffix
from acr.settings import Settings
from api.services import Services

# -- uploads ------------------------------------------------------------------------------------


def _leftovers(media: Path) -> list[Path]:
    return sorted(p for p in media.rglob("*") if p.is_file())


def _store(data: bytes, media: Path, *, filename: str | None, max_bytes: int) -> StoredMedia:
    """Feed ``data`` to the library in copy-sized pieces, as an upload arrives, and commit it."""
    with IncomingMedia(media, max_bytes=max_bytes) as incoming:
        for start in range(0, len(data), 1 << 20):
            incoming.write(data[start : start + (1 << 20)])
        return incoming.commit(filename)


def test_uploads_are_content_addressed_and_deduplicated(tmp_path: Path) -> None:
    media = tmp_path / "media"
    data = os.urandom(3 * (1 << 20) + 17)  # several copy chunks
    first = _store(data, media, filename="Song.MP3", max_bytes=len(data))
    assert first.created
    assert first.size_bytes == len(data)
    assert first.path == media / first.sha256[:2] / f"{first.sha256}.mp3"
    assert first.path.read_bytes() == data
    assert file_sha256(first.path) == first.sha256
    # The same bytes under another name and extension: no second copy.
    again = _store(data, media, filename="other.wav", max_bytes=len(data))
    assert not again.created
    assert again.path == first.path
    assert _leftovers(media) == [first.path]


def test_uploads_refuse_empty_and_oversize_and_keep_nothing(tmp_path: Path) -> None:
    media = tmp_path / "media"
    with pytest.raises(EmptyMediaError):
        _store(b"", media, filename="a.wav", max_bytes=10)
    with pytest.raises(MediaTooLargeError):
        _store(b"x" * 11, media, filename="a.wav", max_bytes=10)
    assert _leftovers(media) == []
    assert (media / INCOMING_DIR).is_dir()
    exact = _store(b"x" * 10, media, filename=None, max_bytes=10)
    assert exact.path.suffix == ""


def test_incoming_media_fed_in_pieces_is_stored_like_a_file(tmp_path: Path) -> None:
    """Bytes fed in odd-sized pieces end at the same content address as in copy-sized ones."""
    media = tmp_path / "media"
    data = os.urandom(2 * (1 << 20) + 5)
    with IncomingMedia(media, max_bytes=len(data)) as incoming:
        assert incoming.temp is not None and incoming.temp.parent == media / INCOMING_DIR
        for start in range(0, len(data), 65_537):
            incoming.write(memoryview(data)[start : start + 65_537])
        streamed = incoming.commit("clip.Ogg")
    assert streamed.created and streamed.size_bytes == len(data)
    assert streamed.path == media / streamed.sha256[:2] / f"{streamed.sha256}.ogg"
    assert file_sha256(streamed.path) == streamed.sha256
    copied = _store(data, media, filename="clip.wav", max_bytes=len(data))
    assert (copied.path, copied.created) == (streamed.path, False)
    assert _leftovers(media) == [streamed.path]


def test_incoming_media_that_is_not_committed_leaves_nothing(tmp_path: Path) -> None:
    media = tmp_path / "media"
    with pytest.raises(MediaTooLargeError), IncomingMedia(media, max_bytes=10) as incoming:
        incoming.write(b"x" * 6)
        incoming.write(b"x" * 5)  # refused whole: the partial file never passes the limit
    assert incoming.size == 6
    with pytest.raises(RuntimeError), IncomingMedia(media, max_bytes=10) as dropped:
        dropped.write(b"abc")
        raise RuntimeError("the request failed")
    with IncomingMedia(media, max_bytes=10) as empty, pytest.raises(EmptyMediaError):
        empty.commit("a.wav")
    abandoned = IncomingMedia(media, max_bytes=10)
    abandoned.write(b"abc")
    abandoned.discard()
    abandoned.discard()  # twice is harmless
    with pytest.raises(RuntimeError):
        abandoned.commit("a.wav")
    assert _leftovers(media) == []


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("a.WAV", ".wav"), ("a.tar.gz", ".gz"), (None, ""), ("x", ""), ("a.w/v", ""), ("a.$x", "")],
)
def test_media_suffix_keeps_only_plain_extensions(name: str | None, suffix: str) -> None:
    assert media_suffix(name) == suffix


# -- import paths -------------------------------------------------------------------------------


def test_import_paths_must_resolve_inside_a_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    inside = root / "sub" / "a.wav"
    inside.write_bytes(b"x")
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"x")
    (root / "link.wav").symlink_to(outside)

    assert resolve_import_path(str(inside), [root]) == inside.resolve()
    for sneaky in (str(root / "sub" / ".." / ".." / "secret.txt"), str(root / "link.wav")):
        with pytest.raises(PathNotAllowedError):
            resolve_import_path(sneaky, [root])
    with pytest.raises(PathNotAllowedError):
        resolve_import_path(str(inside), [])  # imports disabled
    with pytest.raises(PathNotAllowedError):
        resolve_import_path(str(tmp_path / "missing.wav"), [root])  # no probing outside
    for bad in ("sub/a.wav", str(root / "missing.wav"), str(root / "sub")):
        with pytest.raises(ImportPathError):
            resolve_import_path(bad, [root])


def test_manifest_imports_map_fields_and_report_bad_rows(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.wav").write_bytes(b"a")
    (root / "b.wav").write_bytes(b"b")
    manifest = root / "catalogue.csv"
    manifest.write_text(
        "path,title,owner,kind,external_id,genre\n"
        "a.wav,Song A,acct_1,song,isrc-1,pop\n"
        "b.wav,,,,,\n"
        "missing.wav,,,,,\n"
        "../../etc/passwd,,,,,\n"
        "a.wav,,,podcast,,\n"
    )
    planned, errors = manifest_imports(str(manifest), [root], default_kind="advert")
    assert [(p.path.name, p.content.title, p.content.kind) for p in planned] == [
        ("a.wav", "Song A", "song"),
        ("b.wav", "b", "advert"),
    ]
    first = planned[0].content
    assert first.owner_account_id == "acct_1"
    assert first.external_ids == {"external_id": "isrc-1"}
    assert first.metadata == {"genre": "pop"}
    assert [type(e) for e in errors] == [ImportPathError, PathNotAllowedError, ImportPathError]
    assert all("catalogue.csv:" in e.message for e in errors)


# -- the indexing worker ------------------------------------------------------------------------


@pytest.fixture
def song(tmp_path: Path) -> Path:
    return write_media(tmp_path / "song.wav", synth_song(7, 8.0))


@pytest.fixture
def worker(services: Services) -> Iterator[ContentIndexer]:
    indexer = ContentIndexer(services.sessions, services.settings)
    yield indexer
    indexer.close()


def _register(services: Services, path: Path, title: str = "Song") -> str:
    with services.sessions() as session:
        row, created = register_content(
            session,
            NewContent(title=title, kind="song", owner_account_id="acct_1"),
            sha256=file_sha256(path),
            size_bytes=path.stat().st_size,
            media_path=str(path),
            original_filename=path.name,
        )
        session.commit()
        assert created
        return row.id


def _row(services: Services, content_id: str) -> Content:
    with services.sessions() as session:
        row = session.get(Content, content_id)
        assert row is not None
        return row


def _index_ids(settings: Settings) -> list[str]:
    with Index.open(settings.index_path, readonly=True) as index:
        return [record.content_id for record in index.list()]


def test_worker_indexes_then_unindexes_deleted(
    services: Services, worker: ContentIndexer, song: Path
) -> None:
    content_id = _register(services, song)
    assert worker.tick() is True
    row = _row(services, content_id)
    assert (row.status, row.failure_reason, row.index_attempts) == ("ready", None, 1)
    assert row.duration_s == pytest.approx(8.0, abs=0.1)
    assert row.indexed_at is not None
    assert _index_ids(services.settings) == [content_id]
    assert worker.tick() is False  # nothing left to do

    with services.sessions() as session:
        types = session.scalars(select(Event.type).order_by(Event.created_at)).all()
        assert list(types) == ["content.created", "content.ready"]
        stored = session.get(Content, content_id)
        assert stored is not None
        stored.deleted_at = stored.updated_at
        session.commit()
    assert worker.tick() is True
    assert _index_ids(services.settings) == []
    assert _row(services, content_id).unindexed_at is not None
    assert worker.tick() is False


def test_worker_crash_after_indexing_marks_ready_without_indexing_again(
    services: Services, song: Path
) -> None:
    content_id = _register(services, song)
    # A worker that added the content to the index and died before marking it ready.
    with Index.open(services.settings.index_path, create=True) as index:
        fingerprints = index.signal.fingerprint_media(song)
        spec = ContentSpec(title="Song", content_id=content_id, content_hash=file_sha256(song))
        index.add_batch([(spec, fingerprints)])
    assert _row(services, content_id).status == "processing"

    worker = ContentIndexer(services.sessions, services.settings)
    try:
        assert worker.tick() is True
    finally:
        worker.close()
    row = _row(services, content_id)
    assert row.status == "ready"
    assert row.duration_s == pytest.approx(fingerprints.duration_s)
    with Index.open(services.settings.index_path, readonly=True) as index:
        assert [r.content_id for r in index.list()] == [content_id]
        assert index.stats().segments == 1  # one batch: it was not added a second time


def test_worker_fails_a_content_that_keeps_killing_it(
    services: Services, worker: ContentIndexer, song: Path
) -> None:
    content_id = _register(services, song)
    with services.sessions() as session:
        stored = session.get(Content, content_id)
        assert stored is not None
        stored.index_attempts = MAX_ATTEMPTS  # begun that often already, never finished
        session.commit()
    assert worker.tick() is True
    row = _row(services, content_id)
    assert row.status == "failed"
    assert row.failure_reason is not None
    assert row.failure_reason.startswith("worker_crashed: ")
    assert _index_ids(services.settings) == []


def test_worker_fails_media_that_changed_or_vanished(
    services: Services, worker: ContentIndexer, song: Path, tmp_path: Path
) -> None:
    changed = _register(services, song)
    write_media(song, synth_song(8, 8.0))  # replaced in place after registration
    gone_path = write_media(tmp_path / "gone.wav", synth_song(9, 8.0))
    gone = _register(services, gone_path, title="Gone")
    gone_path.unlink()
    assert worker.tick() and worker.tick()
    changed_row, gone_row = _row(services, changed), _row(services, gone)
    assert changed_row.status == gone_row.status == "failed"
    assert changed_row.failure_reason is not None
    assert changed_row.failure_reason.startswith("media_changed: ")
    assert gone_row.failure_reason is not None
    assert gone_row.failure_reason.startswith("file_not_found: ")
    assert _index_ids(services.settings) == []


def test_worker_waits_while_another_process_writes_the_index(
    services: Services, worker: ContentIndexer, song: Path
) -> None:
    content_id = _register(services, song)
    with Index.open(services.settings.index_path, create=True):
        assert worker.tick() is False
        assert _row(services, content_id).status == "processing"
    assert worker.tick() is True
    assert _row(services, content_id).status == "ready"


def test_sync_from_index_registers_batch_indexed_content_once(
    services: Services, song: Path
) -> None:
    with Index.open(services.settings.index_path, create=True) as index:
        record = index.add_file(
            song, title="From the CLI", owner="acct_9", metadata={"kind": "advert", "x": 1}
        )
    assert sync_from_index(services.sessions, services.settings.index_path) == 1
    assert sync_from_index(services.sessions, services.settings.index_path) == 0
    row = _row(services, record.content_id)
    assert (row.status, row.title, row.kind, row.owner_account_id) == (
        "ready",
        "From the CLI",
        "advert",
        "acct_9",
    )
    assert row.sha256 == file_sha256(song)
    assert row.size_bytes == song.stat().st_size
    assert row.duration_s == pytest.approx(record.duration_s)
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Content)) == 1
    # The same bytes uploaded now are that content.
    with services.sessions() as session:
        again, created = register_content(
            session,
            NewContent(title="Again", kind="song"),
            sha256=file_sha256(song),
            size_bytes=1,
            media_path="/elsewhere",
            original_filename=None,
        )
        assert (again.id, created) == (record.content_id, False)


def test_sync_from_index_without_an_index(services: Services, tmp_path: Path) -> None:
    assert sync_from_index(services.sessions, tmp_path / "nowhere") == 0


def test_losing_a_registration_race_returns_the_winner(
    services: Services, song: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import acr.library.contents as contents

    winner = _register(services, song)
    real = contents.find_live_by_sha256
    looks: list[str] = []

    def look(session: Session, sha256: str) -> Content | None:
        # The loser's first look misses: the winner had not committed yet.
        looks.append(sha256)
        return None if len(looks) == 1 else real(session, sha256)

    monkeypatch.setattr(contents, "find_live_by_sha256", look)
    with services.sessions() as session:
        session.add(Event(type="test.other_work", data={}))  # work the savepoint must keep
        row, created = register_content(
            session,
            NewContent(title="Loser", kind="song"),
            sha256=file_sha256(song),
            size_bytes=1,
            media_path=str(song),
            original_filename=None,
        )
        session.commit()
        assert (row.id, created) == (winner, False)
    assert len(looks) == 2  # the insert was tried, refused, and the winner looked up
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Content)) == 1
        assert session.scalar(select(Event.type).where(Event.type == "test.other_work"))
