"""Video uploaded to ``/v1/content`` is indexed by its pictures (and sound) and matched."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from acr.index.store import Index
from acr.index.video import VIDEO_SUBDIRECTORY, VideoIndex
from acr.library import ContentIndexer
from api.services import Services
from tests.conftest import Keys
from tests.video_clips import Programme, encode, movie, render


@pytest.fixture
def worker(services: Services) -> Iterator[ContentIndexer]:
    indexer = ContentIndexer(services.sessions, services.settings)
    yield indexer
    indexer.close()


def _ready(client: TestClient, keys: Keys, content_id: str, worker: ContentIndexer) -> None:
    deadline = time.monotonic() + 60.0
    while True:
        worker.tick()
        body: dict[str, Any] = client.get(f"/v1/content/{content_id}", headers=keys.acme).json()
        if body["status"] != "processing":
            assert body["status"] == "ready", body
            return
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_uploaded_videos_are_indexed_by_pictures_and_sound(
    client: TestClient, services: Services, keys: Keys, worker: ContentIndexer
) -> None:
    silent = encode(render(Programme(51, width=160, height=90).frame, seconds=12, fps=25), fps=25)
    uploads = {"silent.mp4": silent, "talkie.mp4": movie(52, seconds=12.0)}
    ids = {}
    for name, data in uploads.items():
        created = client.post(
            "/v1/content",
            headers=keys.acme,
            files={"file": (name, data)},
            data={"kind": "advert"},
        )
        assert created.status_code == 202, created.text
        ids[name] = created.json()["id"]
    for content_id in ids.values():
        _ready(client, keys, content_id, worker)
    worker.close()  # let go of the indexes' writer locks
    with VideoIndex.open(services.settings.index_path / VIDEO_SUBDIRECTORY, readonly=True) as v:
        assert {r.content_id for r in v.list()} == set(ids.values())
    with Index.open(services.settings.index_path, readonly=True) as audio:
        assert {r.content_id for r in audio.list()} == {ids["talkie.mp4"]}

    query = encode(
        render(Programme(51, width=160, height=90).frame, seconds=5, fps=25, start=4.0), fps=25
    )
    response = client.post(
        "/v1/match",
        headers=keys.tv_app,
        data={"viewer_id": "tv"},
        files={"sample": ("q.mp4", io.BytesIO(query))},
    )
    assert response.status_code == 200, response.text
    match = response.json()["match"]
    assert match["content_id"] == ids["silent.mp4"] and match["kind"] == "advert"
    assert match["offset_s"] == pytest.approx(4.0, abs=0.25)
