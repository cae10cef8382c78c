"""``/v1/content``: upload, background indexing, the catalogue, tenancy, imports."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import starlette.formparsers
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.types import Message

from acr.db.models import Event
from acr.demo import synth_song, write_media
from acr.errors import UnknownContentError
from acr.index.store import Index
from acr.library.indexing import ContentIndexer
from acr.library.uploads import INCOMING_DIR, IncomingMedia
from api.multipart_upload import MAX_FIELD_BYTES
from api.services import Services, build_services
from tests.conftest import Keys

SECONDS = 8.0


@pytest.fixture
def worker(services: Services) -> Iterator[ContentIndexer]:
    """A worker the tests drive; if the app runs its own, whichever holds the index works."""
    indexer = ContentIndexer(services.sessions, services.settings)
    yield indexer
    indexer.close()


def _song(directory: Path, name: str, seed: int, seconds: float = SECONDS) -> Path:
    return write_media(directory / name, synth_song(seed, seconds))


def _excerpt(directory: Path, seed: int, start_s: float, seconds: float) -> Path:
    song = synth_song(seed, SECONDS)
    rate = 22050
    piece = song[int(start_s * rate) : int((start_s + seconds) * rate)]
    return write_media(directory / f"excerpt-{seed}.wav", piece)


def _upload(
    client: TestClient,
    headers: dict[str, str],
    path: Path | None = None,
    *,
    data: bytes | None = None,
    filename: str | None = None,
    **fields: str,
) -> Any:
    body = data if data is not None else path.read_bytes() if path else b""
    name = filename or (path.name if path else "upload.bin")
    form = {"kind": "song", **fields}
    return client.post("/v1/content", headers=headers, files={"file": (name, body)}, data=form)


def _wait(
    client: TestClient,
    headers: dict[str, str],
    content_id: str,
    worker: ContentIndexer,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Poll the content until indexing has finished with it."""
    deadline = time.monotonic() + timeout_s
    while True:
        busy = worker.tick()
        body: dict[str, Any] = client.get(f"/v1/content/{content_id}", headers=headers).json()
        if body["status"] != "processing":
            return body
        assert time.monotonic() < deadline, f"{content_id} still processing"
        if not busy:
            time.sleep(0.05)


def _wait_unindexed(services: Services, content_id: str, worker: ContentIndexer) -> None:
    deadline = time.monotonic() + 30.0
    with Index.open(services.settings.index_path, readonly=True) as index:
        while True:
            worker.tick()
            index.refresh()
            try:
                index.get(content_id)
            except UnknownContentError:
                return
            assert time.monotonic() < deadline, f"{content_id} still in the index"
            time.sleep(0.05)


def _match(services: Services, sample: Path) -> str | None:
    fingerprints = services.index.fingerprint_query(sample, max_seconds=None, max_bytes=None)
    result = services.index.match_fingerprints(fingerprints)
    return result.matches[0].content_id if result.matches else None


def _events(services: Services, content_id: str) -> list[str]:
    with services.sessions() as session:
        return [
            event.type
            for event in session.scalars(select(Event).order_by(Event.created_at))
            if event.data["object"]["id"] == content_id
        ]


# -- upload, index, match, delete ---------------------------------------------------------------


def test_upload_is_indexed_matched_deduplicated_and_deleted(
    client: TestClient, services: Services, keys: Keys, worker: ContentIndexer, tmp_path: Path
) -> None:
    song = _song(tmp_path, "Night Drive.wav", seed=21)
    created = _upload(
        client,
        keys.acme,
        song,
        owner_account_id="acct_owner",
        external_ids='{"isrc": "US-XXX-26-00001"}',
        metadata='{"genre": "synthwave", "bpm": 120}',
    )
    assert created.status_code == 202, created.text
    content = created.json()
    assert content["object"] == "content"
    assert content["id"].startswith("cnt_")
    assert content["status"] == "processing"
    assert content["title"] == "Night Drive"  # the file name without its extension
    assert content["original_filename"] == "Night Drive.wav"
    assert content["external_ids"] == {"isrc": "US-XXX-26-00001"}
    assert content["metadata"] == {"genre": "synthwave", "bpm": 120}
    assert content["size_bytes"] == song.stat().st_size
    assert content["organisation_id"] is not None
    assert content["duration_s"] is None and content["deleted_at"] is None

    ready = _wait(client, keys.acme, content["id"], worker)
    assert ready["status"] == "ready", ready["failure_reason"]
    assert ready["duration_s"] == pytest.approx(SECONDS, abs=0.1)
    assert ready["indexed_at"] is not None
    assert _match(services, _excerpt(tmp_path, 21, 3.0, 4.0)) == content["id"]

    # The same bytes again, under another name and by another organisation: the same content.
    again = _upload(client, keys.globex, data=song.read_bytes(), filename="copy.wav")
    assert again.status_code == 200
    assert again.json()["id"] == content["id"]
    stored = [p for p in services.settings.media_path.rglob("*") if p.is_file()]
    assert len(stored) == 1

    deleted = client.delete(f"/v1/content/{content['id']}", headers=keys.acme)
    assert deleted.status_code == 200
    assert deleted.json()["deleted_at"] is not None
    _wait_unindexed(services, content["id"], worker)
    assert _match(services, _excerpt(tmp_path, 21, 3.0, 4.0)) is None
    listed = client.get("/v1/content", headers=keys.acme).json()
    assert listed["data"] == []
    with_deleted = client.get("/v1/content?include_deleted=true", headers=keys.acme).json()
    assert [c["id"] for c in with_deleted["data"]] == [content["id"]]
    kept = client.get(f"/v1/content/{content['id']}", headers=keys.globex).json()
    assert kept["deleted_at"] is not None and kept["status"] == "ready"
    # Deleting again changes nothing; a deleted content is not edited.
    assert client.delete(f"/v1/content/{content['id']}", headers=keys.admin).status_code == 200
    patched = client.patch(f"/v1/content/{content['id']}", headers=keys.acme, json={"title": "x"})
    assert patched.status_code == 409
    assert _events(services, content["id"]) == [
        "content.created",
        "content.ready",
        "content.deleted",
    ]

    # Uploaded again after deletion, the bytes make a new content.
    fresh = _upload(client, keys.acme, song)
    assert fresh.status_code == 202
    assert fresh.json()["id"] != content["id"]


def test_compressed_formats_are_indexed(
    client: TestClient, services: Services, keys: Keys, worker: ContentIndexer, tmp_path: Path
) -> None:
    ids = {}
    for seed, name in ((31, "spot.mp3"), (32, "jingle.ogg")):
        response = _upload(client, keys.admin, _song(tmp_path, name, seed), kind="advert")
        assert response.status_code == 202, response.text
        assert response.json()["organisation_id"] is None  # the platform's own
        ids[seed] = response.json()["id"]
    for seed, content_id in ids.items():
        ready = _wait(client, keys.admin, content_id, worker)
        assert ready["status"] == "ready", ready["failure_reason"]
        assert ready["duration_s"] == pytest.approx(SECONDS, abs=0.2)
        assert _match(services, _excerpt(tmp_path, seed, 2.0, 4.0)) == content_id


def test_media_that_cannot_be_decoded_fails_with_a_reason(
    client: TestClient, services: Services, keys: Keys, worker: ContentIndexer, tmp_path: Path
) -> None:
    mp3 = _song(tmp_path, "whole.mp3", seed=41).read_bytes()
    truncated = _upload(client, keys.acme, data=mp3[:1500], filename="truncated.mp3")
    garbage = _upload(client, keys.acme, data=os.urandom(50_000), filename="garbage.wav")
    good = _upload(client, keys.acme, _song(tmp_path, "good.wav", seed=42))
    assert {truncated.status_code, garbage.status_code, good.status_code} == {202}

    for response in (truncated, garbage):
        failed = _wait(client, keys.acme, response.json()["id"], worker)
        assert failed["status"] == "failed"
        code, _, message = failed["failure_reason"].partition(": ")
        assert code in {"corrupt_media", "unsupported_format", "media_too_short"}, failed
        assert message
        assert _events(services, failed["id"]) == ["content.created", "content.failed"]
    # The failures broke nothing: the next content is indexed.
    ready = _wait(client, keys.acme, good.json()["id"], worker)
    assert ready["status"] == "ready"
    failed_list = client.get("/v1/content?status=failed", headers=keys.acme).json()
    assert len(failed_list["data"]) == 2


# -- refused uploads ----------------------------------------------------------------------------


def test_refused_uploads(client: TestClient, services: Services, keys: Keys) -> None:
    empty = _upload(client, keys.acme, data=b"", filename="empty.wav")
    assert empty.status_code == 400
    assert empty.headers["content-type"].startswith("application/problem+json")
    assert empty.json()["code"] == "empty_media"

    bad_ids = _upload(client, keys.acme, data=b"abc", filename="a.wav", external_ids="{not json")
    bad_metadata = _upload(client, keys.acme, data=b"abc", filename="a.wav", metadata="[1, 2]")
    for field, bad in (("external_ids", bad_ids), ("metadata", bad_metadata)):
        assert bad.status_code == 422, bad.text
        assert bad.json()["code"] == "validation_error"
        assert bad.json()["errors"][0]["loc"] == ["body", field]
    numeric = _upload(client, keys.acme, data=b"abc", filename="a.wav", external_ids='{"a": 1}')
    assert numeric.status_code == 422
    wrong_kind = _upload(client, keys.acme, data=b"abc", filename="a.wav", kind="podcast")
    assert wrong_kind.status_code == 422
    no_file = client.post("/v1/content", headers=keys.acme, data={"kind": "song"})
    assert no_file.status_code == 422
    assert no_file.json()["errors"] == [
        {"loc": ["body", "file"], "msg": "Field required", "type": "missing"}
    ]
    no_kind = client.post("/v1/content", headers=keys.acme, files={"file": ("a.wav", b"abc")})
    assert no_kind.status_code == 422
    assert no_kind.json()["errors"] == [
        {"loc": ["body", "kind"], "msg": "Field required", "type": "missing"}
    ]
    neither = client.post(
        "/v1/content", headers=keys.acme, files={"other": ("a", b"x")}, data={"title": "x"}
    )
    assert neither.status_code == 422
    assert neither.json()["detail"] == "body.file: Field required"
    assert [e["loc"] for e in neither.json()["errors"]] == [["body", "file"], ["body", "kind"]]
    assert wrong_kind.json()["errors"] == [
        {
            "loc": ["body", "kind"],
            "msg": "Input should be 'programme', 'advert' or 'song'",
            "type": "literal_error",
        }
    ]
    long_title = _upload(client, keys.acme, data=b"abc", title="t" * 501)
    assert long_title.status_code == 422
    assert long_title.json()["errors"][0]["type"] == "string_too_long"

    assert _upload(client, keys.tv_app, data=b"abc").status_code == 403
    assert _upload(client, {}, data=b"abc").status_code == 401
    assert client.get("/v1/content", headers=keys.tv_app).status_code == 403
    assert client.get("/v1/content").status_code == 401
    assert client.get("/v1/content", headers=keys.acme).json()["data"] == []
    assert [p for p in services.settings.media_path.rglob("*") if p.is_file()] == []


def test_oversize_upload_is_refused_and_nothing_is_kept(
    services: Services, keys: Keys, tmp_path: Path
) -> None:
    from api.app import create_app

    settings = services.settings.model_copy(update={"max_upload_bytes": 10_000})
    small = build_services(settings)
    try:
        with TestClient(create_app(small), raise_server_exceptions=False) as client:
            response = _upload(client, keys.acme, data=os.urandom(10_001), filename="big.wav")
            assert response.status_code == 413
            assert response.json()["code"] == "payload_too_large"
            assert _incoming(small) == []
            assert client.get("/v1/content", headers=keys.acme).json()["data"] == []
            # Streamed without a length, it is refused long before its end, and nothing is kept.
            chunks = [os.urandom(64 * 1024) for _ in range(40)]
            status, refused, read = _asgi_post(client, keys.acme, chunks)
            assert (status, refused["code"]) == (413, "payload_too_large")
            assert read < 5
            assert _incoming(small) == []
            fits = _upload(client, keys.acme, data=os.urandom(10_000), filename="fits.wav")
            assert fits.status_code == 202
    finally:
        small.close()
    stored = [p for p in settings.media_path.rglob("*") if p.is_file()]
    assert [p.stat().st_size for p in stored] == [10_000]


# -- streamed uploads ---------------------------------------------------------------------------

BOUNDARY = "acr-test-boundary"


def _incoming(services: Services) -> list[Path]:
    """Files left in the library's intake: there should be none between requests."""
    return sorted((services.settings.media_path / INCOMING_DIR).glob("*"))


def _multipart(file: bytes, *, kind: str = "song", filename: str = "clip.wav") -> bytes:
    """A whole upload form (the file after the kind, as browsers send it)."""
    return (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="kind"\r\n\r\n'
            f"{kind}\r\n--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + file
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def _asgi_post(
    client: TestClient, headers: dict[str, str], chunks: list[bytes], *, disconnect: bool = False
) -> tuple[int, dict[str, Any], int]:
    """POST ``chunks`` to ``/v1/content`` one ASGI message each, as a server streams a body.

    The test client hands the app a body in one message; this feeds it piece by
    piece (then, with ``disconnect``, the client going away instead of the end)
    and counts how many pieces the app asked for before it answered.

    Returns
    -------
    status, body, chunks_read
    """
    messages: list[Message] = []
    read = 0

    async def receive() -> Message:
        nonlocal read
        if read < len(chunks):
            read += 1
            return {"type": "http.request", "body": chunks[read - 1], "more_body": True}
        if disconnect:
            return {"type": "http.disconnect"}
        read += 1
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/content",
        "raw_path": b"/v1/content",
        "root_path": "",
        "query_string": b"",
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "headers": [
            (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
            *((name.lower().encode(), value.encode()) for name, value in headers.items()),
        ],
    }
    assert client.portal is not None  # inside the client's `with`
    client.portal.call(client.app, scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], json.loads(body), read


def test_upload_is_streamed_once_into_the_library(
    client: TestClient,
    services: Services,
    keys: Keys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The body goes straight to media_dir/.incoming: no form parser, no system temp file."""

    def no_spooling(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the upload went through Starlette's form parser")

    monkeypatch.setattr(starlette.formparsers.MultiPartParser, "parse", no_spooling)
    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    # Where the bytes are written: off the event loop, in a worker thread.
    on_loop: list[bool] = []
    write = IncomingMedia.write

    def recording_write(self: IncomingMedia, data: bytes | memoryview) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            on_loop.append(False)
        else:
            on_loop.append(True)
        write(self, data)

    monkeypatch.setattr(IncomingMedia, "write", recording_write)

    # Larger than Starlette's spool threshold (1 MiB), so its parser would have used a disk file.
    data = os.urandom(3 * 1024 * 1024 + 11)
    response = _upload(client, keys.acme, data=data, filename="Big Take.wav", title="Big")
    assert response.status_code == 202, response.text
    content = response.json()
    assert (content["size_bytes"], content["title"]) == (len(data), "Big")
    assert content["original_filename"] == "Big Take.wav"
    digest = hashlib.sha256(data).hexdigest()
    assert content["sha256"] == digest
    stored = [p for p in services.settings.media_path.rglob("*") if p.is_file()]
    assert stored == [services.settings.media_path / digest[:2] / f"{digest}.wav"]
    assert stored[0].read_bytes() == data
    assert list(system_temp.iterdir()) == []
    assert on_loop and not any(on_loop)

    # Piece by piece, as a server delivers it, the same; a text field after the file too.
    again = os.urandom(300_000)
    late_title = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="title"\r\n\r\nLate\r\n'
    ).encode()
    # The file first, then the title: the closing boundary becomes the title's opening one.
    body = _multipart(again, filename="x.mp3").replace(f"--{BOUNDARY}--\r\n".encode(), late_title)
    body += f"--{BOUNDARY}--\r\n".encode()
    chunks = [body[i : i + 7000] for i in range(0, len(body), 7000)]
    status, streamed, _ = _asgi_post(client, keys.acme, chunks)
    assert status == 202, streamed
    assert (streamed["size_bytes"], streamed["title"]) == (len(again), "Late")
    assert streamed["sha256"] == hashlib.sha256(again).hexdigest()
    assert _incoming(services) == []
    assert list(system_temp.iterdir()) == []


def test_same_bytes_streamed_again_answer_the_existing_content(
    client: TestClient, services: Services, keys: Keys
) -> None:
    data = os.urandom(200_000)
    first = _upload(client, keys.acme, data=data, filename="one.wav")
    assert first.status_code == 202, first.text
    second = _upload(client, keys.globex, data=data, filename="two.ogg", title="Other")
    assert second.status_code == 200, second.text
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["title"] == "one"  # the existing content, unchanged
    assert len([p for p in services.settings.media_path.rglob("*") if p.is_file()]) == 1
    assert _incoming(services) == []


def test_malformed_or_cut_short_bodies_are_refused_and_leave_nothing(
    client: TestClient, services: Services, keys: Keys
) -> None:
    whole = _multipart(os.urandom(50_000))
    multipart = {**keys.acme, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

    truncated = client.post("/v1/content", headers=multipart, content=whole[:-2000])
    assert truncated.status_code == 400, truncated.text
    assert truncated.headers["content-type"].startswith("application/problem+json")
    assert truncated.json()["code"] == "malformed_multipart"

    other_boundary = {**keys.acme, "Content-Type": "multipart/form-data; boundary=not-this-one"}
    wrong = client.post("/v1/content", headers=other_boundary, content=whole)
    assert (wrong.status_code, wrong.json()["code"]) == (400, "malformed_multipart")
    no_boundary = {**keys.acme, "Content-Type": "multipart/form-data"}
    bare = client.post("/v1/content", headers=no_boundary, content=whole)
    assert (bare.status_code, bare.json()["code"]) == (400, "malformed_multipart")
    nameless = whole.replace(b'name="file"; ', b"")
    no_name = client.post("/v1/content", headers=multipart, content=nameless)
    assert (no_name.status_code, no_name.json()["code"]) == (400, "malformed_multipart")

    # The client goes away halfway through the file.
    chunks = [whole[i : i + 10_000] for i in range(0, 30_000, 10_000)]
    status, gone, read = _asgi_post(client, keys.acme, chunks, disconnect=True)
    assert (status, gone["code"]) == (400, "malformed_multipart")
    assert read == len(chunks)

    for not_multipart in (
        client.post("/v1/content", headers=keys.acme, json={"kind": "song"}),
        client.post("/v1/content", headers=keys.acme, content=b"abc"),
    ):
        assert not_multipart.status_code == 415
        assert not_multipart.json()["code"] == "unsupported_media_type"

    assert _incoming(services) == []
    assert [p for p in services.settings.media_path.rglob("*") if p.is_file()] == []
    assert client.get("/v1/content", headers=keys.acme).json()["data"] == []


def test_text_fields_are_bounded(client: TestClient, services: Services, keys: Keys) -> None:
    huge = json.dumps({"notes": "x" * (MAX_FIELD_BYTES + 1)})
    response = _upload(client, keys.acme, data=b"abc", metadata=huge)
    assert (response.status_code, response.json()["code"]) == (413, "payload_too_large")
    assert "metadata" in response.json()["detail"]
    assert _incoming(services) == []


# -- the catalogue: tenancy, changes, listing ---------------------------------------------------


def test_tenancy_and_updates(client: TestClient, services: Services, keys: Keys) -> None:
    content = _upload(client, keys.acme, data=b"acme media", filename="a.wav").json()
    url = f"/v1/content/{content['id']}"

    # The catalogue is shared for reading ...
    assert client.get(url, headers=keys.globex).status_code == 200
    assert [c["id"] for c in client.get("/v1/content", headers=keys.globex).json()["data"]] == [
        content["id"]
    ]
    # ... but only its organisation (or an admin) changes it.
    assert client.patch(url, headers=keys.globex, json={"title": "Mine"}).status_code == 404
    assert client.delete(url, headers=keys.globex).status_code == 404
    assert client.patch(url, headers=keys.tv_app, json={"title": "Mine"}).status_code == 403
    assert client.get(url, headers=keys.tv_app).status_code == 403
    assert client.get(url).status_code == 401
    assert client.get("/v1/content/cnt_missing", headers=keys.acme).status_code == 404

    changes = {
        "title": "Renamed",
        "kind": "advert",
        "owner_account_id": "acct_2",
        "external_ids": {"eidr": "10.5240/X"},
        "metadata": {"campaignable": True},
    }
    patched = client.patch(url, headers=keys.acme, json=changes)
    assert patched.status_code == 200, patched.text
    assert {name: patched.json()[name] for name in changes} == changes
    assert patched.json()["updated_at"] > content["updated_at"]
    cleared = client.patch(url, headers=keys.admin, json={"owner_account_id": None})
    assert cleared.status_code == 200
    assert cleared.json()["owner_account_id"] is None
    assert cleared.json()["title"] == "Renamed"  # left out, left alone
    for bad in ({"title": None}, {"title": ""}, {"kind": "podcast"}, {"colour": "red"}):
        response = client.patch(url, headers=keys.acme, json=bad)
        assert response.status_code == 422, bad
    # (No media: an indexer running in the app may have failed it meanwhile.)
    assert [t for t in _events(services, content["id"]) if t != "content.failed"] == [
        "content.created",
        "content.updated",
        "content.updated",
    ]
    with services.sessions() as session:
        update = session.scalars(select(Event).where(Event.type == "content.updated")).first()
        assert update is not None
        assert update.data["previous_attributes"]["title"] == "a"
        assert update.organisation_id == content["organisation_id"]

    assert client.delete(url, headers=keys.admin).status_code == 200


def test_listing_pages_and_filters(client: TestClient, keys: Keys) -> None:
    specs = [
        ("Morning Show", "programme", "acct_a"),
        ("Soda Spot", "advert", "acct_b"),
        ("Evening Show", "programme", "acct_a"),
        ("Summer 50% Sale", "advert", "acct_c"),
        ("Theme Song", "song", "acct_b"),
    ]
    made = []
    for number, (title, kind, owner) in enumerate(specs):
        response = _upload(
            client,
            keys.acme,
            data=f"media {number}".encode(),
            filename=f"{number}.wav",
            title=title,
            kind=kind,
            owner_account_id=owner,
        )
        assert response.status_code == 202
        made.append(response.json()["id"])
    newest_first = made[::-1]

    seen: list[str] = []
    cursor: str | None = None
    while True:
        url = "/v1/content?limit=2" + (f"&starting_after={cursor}" if cursor else "")
        page = client.get(url, headers=keys.globex).json()
        assert page["object"] == "list"
        seen += [c["id"] for c in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["data"][-1]["id"]
    assert seen == newest_first

    def ids(query: str) -> list[str]:
        response = client.get(f"/v1/content?{query}", headers=keys.acme)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["data"]]

    assert ids("kind=advert") == [made[3], made[1]]
    assert ids("owner_account_id=acct_a") == [made[2], made[0]]
    assert ids("q=show") == [made[2], made[0]]  # any case
    assert ids("q=50%25") == [made[3]]  # a literal %, not a wildcard
    assert ids("q=show&kind=programme&owner_account_id=acct_a&limit=1") == [made[2]]
    # These bytes are no media: an indexer running in the app fails them, none gets ready.
    assert ids("status=ready") == []
    assert sorted(ids("status=processing") + ids("status=failed")) == sorted(made)
    assert client.get("/v1/content?kind=podcast", headers=keys.acme).status_code == 422
    assert client.get("/v1/content?limit=101", headers=keys.acme).status_code == 422
    missing = client.get("/v1/content?starting_after=cnt_nope", headers=keys.acme)
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["loc"] == ["query", "starting_after"]


# -- imports of server files --------------------------------------------------------------------


def test_import_by_path_and_manifest(
    client: TestClient, services: Services, keys: Keys, worker: ContentIndexer, tmp_path: Path
) -> None:
    root = tmp_path / "catalogue"
    first = _song(root, "first.wav", seed=51)
    (root / "second.wav").write_bytes(b"second file")
    outside = tmp_path / "private" / "secret.wav"
    outside.parent.mkdir()
    outside.write_bytes(b"secret")
    (root / "sneaky.wav").symlink_to(outside)
    services.settings.import_roots = [root]

    def post(body: dict[str, Any], headers: dict[str, str] = keys.admin) -> Any:
        return client.post("/v1/content/import", headers=headers, json=body)

    item = {"path": str(first), "kind": "programme", "owner_account_id": "acct_tv"}
    assert post({"items": [item]}, keys.acme).status_code == 403  # admins only

    # One path outside the roots refuses everything.
    for bad in (
        str(outside),
        str(root / ".." / "private" / "secret.wav"),
        str(root / "sneaky.wav"),
    ):
        refused = post({"items": [item, {"path": bad, "kind": "song"}]})
        assert refused.status_code == 403, bad
        assert refused.json()["errors"][0]["loc"] == ["body", "items", 1, "path"]
    for bad in ("first.wav", str(root / "missing.wav"), str(root)):
        assert post({"items": [item, {"path": bad, "kind": "song"}]}).status_code == 422
    assert post({}).status_code == 422
    assert post({"items": [item], "manifest": "/x.csv"}).status_code == 422
    assert client.get("/v1/content", headers=keys.admin).json()["data"] == []

    imported = post({"items": [item, {"path": str(root / "second.wav"), "kind": "song"}]})
    assert imported.status_code == 202, imported.text
    created = imported.json()["created"]
    assert [(c["title"], c["status"]) for c in created] == [
        ("first", "processing"),
        ("second", "processing"),
    ]
    assert created[0]["owner_account_id"] == "acct_tv"
    assert post({"items": [item]}).json()["existing"][0]["id"] == created[0]["id"]
    assert [p for p in services.settings.media_path.rglob("*") if p.is_file()] == []  # in place
    uploaded = _upload(client, keys.acme, first)  # the same bytes: that content, no copy
    assert (uploaded.status_code, uploaded.json()["id"]) == (200, created[0]["id"])
    assert [p for p in services.settings.media_path.rglob("*") if p.is_file()] == []

    ready = _wait(client, keys.admin, created[0]["id"], worker)
    assert ready["status"] == "ready", ready["failure_reason"]
    assert _match(services, _excerpt(tmp_path, 51, 1.0, 4.0)) == created[0]["id"]

    (root / "third.wav").write_bytes(b"third file")
    manifest = root / "list.jsonl"
    rows = [
        {"path": "third.wav", "title": "Third", "owner": "acct_m", "kind": "advert", "x": 1},
        {"path": "first.wav"},
    ]
    manifest.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    from_manifest = post({"manifest": str(manifest), "kind": "song"})
    assert from_manifest.status_code == 202, from_manifest.text
    body = from_manifest.json()
    assert [(c["title"], c["kind"], c["owner_account_id"]) for c in body["created"]] == [
        ("Third", "advert", "acct_m")
    ]
    assert body["created"][0]["metadata"] == {"x": 1}
    assert [c["id"] for c in body["existing"]] == [created[0]["id"]]

    escaping = root / "escape.csv"
    escaping.write_text(f"path\n{outside}\n")
    assert post({"manifest": str(escaping), "kind": "song"}).status_code == 403
    elsewhere = tmp_path / "private" / "list.csv"
    elsewhere.write_text("path\nx.wav\n")
    assert post({"manifest": str(elsewhere), "kind": "song"}).status_code == 403
    no_kind = root / "no-kind.csv"
    no_kind.write_text("path\nsecond.wav\n")
    assert post({"manifest": str(no_kind)}).status_code == 422
