"""``POST /v1/match`` end to end: real media, a real index, campaigns and engagements."""

from __future__ import annotations

import functools
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soxr
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from acr.db.models import Campaign, Content, Engagement, IdempotencyRecord, Organisation, Trigger
from acr.index.catalogue import ContentSpec
from acr.index.store import Index
from acr.index.video import VIDEO_SUBDIRECTORY, VideoIndex
from acr.ratelimit import InProcessRateLimiter
from acr.signals.audio import AudioSignal
from acr.signals.video import REFERENCE_VIEWS, VideoHashes, hash_frames, hash_video
from api.services import Services
from tests.conftest import SONG_RATE, Keys, synth_song, write_audio
from tests.video_clips import Programme, encode, movie, render

SONG_SECONDS = 16.0


@functools.cache
def song(seed: int) -> np.ndarray:
    return synth_song(seed, SONG_SECONDS)


@dataclass(frozen=True)
class Catalogue:
    songs: dict[str, np.ndarray]
    """Content id → the song's samples."""
    campaign_id: str
    trigger_id: str


@pytest.fixture
def catalogue(services: Services, keys: Keys) -> Catalogue:
    """Three songs indexed and ready; acme runs a campaign on song 0 between 10 s and 15 s."""
    songs: dict[str, np.ndarray] = {}
    with Index.open(services.settings.index_path) as index, services.sessions() as session:
        for seed in (11, 12, 13):
            samples = song(seed)
            row = Content(
                title=f"Song {seed}",
                kind="song",
                status="ready",
                owner_account_id="acct_owner",
                duration_s=SONG_SECONDS,
            )
            session.add(row)
            session.flush()
            index.add_samples(samples, SONG_RATE, ContentSpec(title=row.title, content_id=row.id))
            songs[row.id] = samples
        acme = session.scalars(select(Organisation).where(Organisation.slug == "acme")).one()
        first = next(iter(songs))
        campaign = Campaign(
            organisation_id=acme.id,
            name="Coupon at the chorus",
            advertiser="Acme Soda",
            status="running",
            payload={"title": "10% off", "coupon_code": "ACME10"},
            cost_per_engagement=50,
            currency="usd",
            revenue_share_bps=3000,
        )
        campaign.triggers.append(Trigger(content_id=first, start_s=10.0, end_s=15.0))
        session.add(campaign)
        session.commit()
        return Catalogue(songs, campaign.id, campaign.triggers[0].id)


@pytest.fixture
def client(catalogue: Catalogue, client: TestClient) -> TestClient:
    """The service, started once the catalogue is indexed (its indexer then takes the index)."""
    return client


def excerpt_wav(samples: np.ndarray, start_s: float, seconds: float, tmp_path: Path) -> bytes:
    start = int(start_s * SONG_RATE)
    path = write_audio(
        tmp_path / f"excerpt-{start}.wav", samples[start : start + int(seconds * SONG_RATE)]
    )
    return path.read_bytes()


def post_sample(
    client: TestClient, headers: dict[str, str], data: bytes, name: str = "s.wav", **form: str
) -> object:
    fields = {"viewer_id": "viewer-1", **form}
    return client.post(
        "/v1/match", headers=headers, data=fields, files={"sample": (name, io.BytesIO(data))}
    )


def engagements(services: Services) -> list[Engagement]:
    with services.sessions() as session:
        return list(session.scalars(select(Engagement)))


def test_sample_in_trigger_window_serves_the_campaign(
    client: TestClient, keys: Keys, catalogue: Catalogue, services: Services, tmp_path: Path
) -> None:
    content_id = next(iter(catalogue.songs))
    wav = excerpt_wav(catalogue.songs[content_id], 11.0, 4.0, tmp_path)
    response = post_sample(client, keys.tv_app, wav, country="gb", platform="android")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["matched"] is True and body["no_match_reason"] is None
    assert body["match"]["content_id"] == content_id
    assert body["match"]["offset_s"] == pytest.approx(11.0, abs=0.05)
    assert body["match"]["confidence"] >= 0.8
    assert [c["id"] for c in body["campaigns"]] == [catalogue.campaign_id]
    assert body["campaigns"][0]["payload"] == {"title": "10% off", "coupon_code": "ACME10"}
    recorded = engagements(services)
    assert [e.id for e in recorded] == [body["campaigns"][0]["engagement_id"]]
    assert recorded[0].cost == 50 and recorded[0].owner_share == 15
    assert recorded[0].country == "GB" and recorded[0].platform == "android"
    assert recorded[0].viewer_hash != "viewer-1" and len(recorded[0].viewer_hash) == 64


def test_sample_outside_the_window_matches_without_campaigns(
    client: TestClient, keys: Keys, catalogue: Catalogue, services: Services, tmp_path: Path
) -> None:
    content_id = next(iter(catalogue.songs))
    wav = excerpt_wav(catalogue.songs[content_id], 2.0, 4.0, tmp_path)
    body = post_sample(client, keys.tv_app, wav).json()
    assert body["match"]["content_id"] == content_id
    assert body["match"]["offset_s"] == pytest.approx(2.0, abs=0.05)
    assert body["campaigns"] == [] and engagements(services) == []


def test_client_side_fingerprints_match_like_media(
    client: TestClient, keys: Keys, catalogue: Catalogue, tmp_path: Path
) -> None:
    content_id = list(catalogue.songs)[2]
    wav = excerpt_wav(catalogue.songs[content_id], 6.0, 5.0, tmp_path)
    wire = AudioSignal().fingerprint_query(wav).to_bytes()
    assert len(wire) < len(wav) / 10
    response = client.post(
        "/v1/match",
        headers=keys.tv_app,
        data={"viewer_id": "v"},
        files={"fingerprints": ("q.fp", io.BytesIO(wire), "application/octet-stream")},
    )
    assert response.status_code == 200, response.text
    assert response.json()["match"]["content_id"] == content_id
    assert response.json()["match"]["offset_s"] == pytest.approx(6.0, abs=0.05)


def test_one_process_identifies_one_sample_at_a_time(
    client: TestClient,
    keys: Keys,
    catalogue: Catalogue,
    services: Services,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Concurrent matches queue for the process's one lane (``api.services.match_lane``)."""
    content_id = list(catalogue.songs)[1]
    wire = (
        AudioSignal()
        .fingerprint_query(excerpt_wav(catalogue.songs[content_id], 3.0, 5.0, tmp_path))
        .to_bytes()
    )
    matching = services.index.match_fingerprints
    inside = {"now": 0, "most": 0}
    lock = threading.Lock()

    def counted(*args: Any, **kwargs: Any) -> Any:
        with lock:
            inside["now"] += 1
            inside["most"] = max(inside["most"], inside["now"])
        time.sleep(0.05)
        try:
            return matching(*args, **kwargs)
        finally:
            with lock:
                inside["now"] -= 1

    monkeypatch.setattr(services.index, "match_fingerprints", counted)

    def send(viewer: int) -> int:
        files = {"fingerprints": ("q.fp", io.BytesIO(wire), "application/octet-stream")}
        data = {"viewer_id": f"v{viewer}"}
        return client.post("/v1/match", headers=keys.tv_app, data=data, files=files).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(send, range(8)))
    assert statuses == [200] * 8
    assert inside["most"] == 1
    assert services.match_lane.width == 1


def test_a_sped_up_sample_reports_its_speed_and_pitch(
    client: TestClient, keys: Keys, catalogue: Catalogue
) -> None:
    content_id = list(catalogue.songs)[1]
    song = catalogue.songs[content_id]
    sped_up = soxr.resample(song[4 * SONG_RATE : 10 * SONG_RATE], SONG_RATE * 1.06, SONG_RATE)
    wire = AudioSignal().fingerprint_samples(sped_up[: 5 * SONG_RATE], SONG_RATE, query=True)
    response = client.post(
        "/v1/match",
        headers=keys.tv_app,
        data={"viewer_id": "v"},
        files={"fingerprints": ("q.fp", io.BytesIO(wire.to_bytes()))},
    )
    assert response.status_code == 200, response.text
    match = response.json()["match"]
    assert match["content_id"] == content_id
    assert match["offset_s"] == pytest.approx(4.0, abs=0.05)
    assert match["speed"] == pytest.approx(1.06, rel=0.01)
    assert match["pitch"] == pytest.approx(1.06, rel=0.01)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: np.zeros(5 * SONG_RATE, dtype=np.float32), "silence"),
        (lambda: synth_song(99, 0.05), "too_short"),
        (lambda: synth_song(99, 5.0), "no_match"),
    ],
    ids=["silence", "too-short", "unknown"],
)
def test_no_match_says_why(
    client: TestClient, keys: Keys, catalogue: Catalogue, tmp_path: Path, make: object, reason: str
) -> None:
    assert callable(make)
    wav = write_audio(tmp_path / "q.wav", make()).read_bytes()
    response = post_sample(client, keys.tv_app, wav)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["matched"] is False and body["match"] is None
    assert body["no_match_reason"] == reason and body["campaigns"] == []


def test_deleted_content_is_not_matched(
    client: TestClient, keys: Keys, catalogue: Catalogue, services: Services, tmp_path: Path
) -> None:
    content_id = next(iter(catalogue.songs))
    with services.sessions() as session:
        row = session.get(Content, content_id)
        assert row is not None
        row.status, row.deleted_at = "ready", row.created_at
        session.commit()
    wav = excerpt_wav(catalogue.songs[content_id], 11.0, 4.0, tmp_path)
    body = post_sample(client, keys.tv_app, wav).json()
    assert body["matched"] is False and body["no_match_reason"] == "no_match"


@pytest.mark.parametrize(
    ("data", "name", "status", "code"),
    [
        (b"\x1aE\xdf\xa3" + bytes(range(256)) * 8, "s.webm", 422, "corrupt_media"),
        (b"this is a text file, not audio\n" * 20, "s.txt", 415, "unsupported_format"),
        (b"", "s.wav", 400, "empty_media"),
    ],
    ids=["corrupt", "not-media", "empty"],
)
def test_bad_media_is_a_problem_document(
    client: TestClient,
    keys: Keys,
    catalogue: Catalogue,
    data: bytes,
    name: str,
    status: int,
    code: str,
) -> None:
    response = post_sample(client, keys.tv_app, data, name=name)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


def test_malformed_fingerprints_are_refused(
    client: TestClient, keys: Keys, catalogue: Catalogue
) -> None:
    response = client.post(
        "/v1/match",
        headers=keys.tv_app,
        data={"viewer_id": "v"},
        files={"fingerprints": ("q.fp", io.BytesIO(b"ACRF garbage"))},
    )
    assert response.status_code == 422 and response.json()["code"] == "invalid_fingerprints"


def test_exactly_one_of_sample_and_fingerprints(
    client: TestClient, keys: Keys, catalogue: Catalogue
) -> None:
    neither = client.post("/v1/match", headers=keys.tv_app, data={"viewer_id": "v"})
    assert neither.status_code == 422
    both = client.post(
        "/v1/match",
        headers=keys.tv_app,
        data={"viewer_id": "v"},
        files={"sample": ("a.wav", b"x"), "fingerprints": ("b.fp", b"y")},
    )
    assert both.status_code == 422 and both.json()["errors"]
    no_viewer = client.post("/v1/match", headers=keys.tv_app, files={"sample": ("a.wav", b"x")})
    assert no_viewer.status_code == 422
    assert any("viewer_id" in e["loc"] for e in no_viewer.json()["errors"])


def test_oversize_sample_is_413(
    client: TestClient, keys: Keys, catalogue: Catalogue, services: Services
) -> None:
    services.settings.max_sample_bytes = 1000
    response = post_sample(client, keys.tv_app, b"\0" * 5000)
    assert response.status_code == 413, response.text


def test_retry_with_idempotency_key_replays_and_records_once(
    client: TestClient, keys: Keys, catalogue: Catalogue, services: Services, tmp_path: Path
) -> None:
    content_id = next(iter(catalogue.songs))
    wav = excerpt_wav(catalogue.songs[content_id], 11.0, 4.0, tmp_path)
    headers = {**keys.tv_app, "Idempotency-Key": "req-42"}
    first = post_sample(client, headers, wav)
    again = post_sample(client, headers, wav)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert len(engagements(services)) == 1
    other = post_sample(client, headers, wav, viewer_id="viewer-2")
    assert other.status_code == 409 and other.json()["code"] == "idempotency_mismatch"
    # The same key from another app is another request altogether.
    theirs = post_sample(client, {**keys.other_app, "Idempotency-Key": "req-42"}, wav)
    assert theirs.status_code == 200 and "idempotent-replayed" not in theirs.headers
    assert len(engagements(services)) == 2


def test_failed_request_frees_its_idempotency_key(
    client: TestClient, keys: Keys, catalogue: Catalogue, services: Services
) -> None:
    headers = {**keys.tv_app, "Idempotency-Key": "bad-1"}
    assert post_sample(client, headers, b"garbage" * 50, name="x.txt").status_code == 415
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0


def test_only_viewer_apps_and_admins_match(
    client: TestClient, keys: Keys, catalogue: Catalogue, tmp_path: Path
) -> None:
    wav = excerpt_wav(next(iter(catalogue.songs.values())), 3.0, 3.0, tmp_path)
    assert post_sample(client, {}, wav).status_code == 401
    assert post_sample(client, {"Authorization": "Bearer acr_nope"}, wav).status_code == 401
    forbidden = post_sample(client, keys.acme, wav)
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "forbidden"
    assert post_sample(client, keys.admin, wav).status_code == 200


def test_each_app_key_has_its_own_rate_limit(
    client: TestClient, keys: Keys, catalogue: Catalogue, services: Services, tmp_path: Path
) -> None:
    services.rate_limiter = InProcessRateLimiter(limit=2, period_s=60.0)
    wav = excerpt_wav(next(iter(catalogue.songs.values())), 3.0, 3.0, tmp_path)
    assert [post_sample(client, keys.tv_app, wav).status_code for _ in range(2)] == [200, 200]
    refused = post_sample(client, keys.tv_app, wav)
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert post_sample(client, keys.other_app, wav).status_code == 200


# -- pictures: video clips, still frames, client-side frame hashes, and fusion with sound ------


@functools.cache
def movie_hashes(seed: int) -> VideoHashes:
    """The reference hashes of movie `seed` (made once, shared by both databases' runs)."""
    return hash_video(movie(seed), views=REFERENCE_VIEWS)


@dataclass(frozen=True)
class Movies:
    ids: list[str]
    """Library ids of the two movies (seeds 41 and 42), indexed by sound and pictures."""
    campaign_id: str


@pytest.fixture
def movies(services: Services, keys: Keys, catalogue: Catalogue) -> Movies:
    """Two 16 s movies in both indexes; acme runs a campaign on the first between 4 s and 12 s."""
    ids = []
    video_dir = services.settings.index_path / VIDEO_SUBDIRECTORY
    with (
        Index.open(services.settings.index_path) as audio,
        VideoIndex.open(video_dir, create=True) as video,
        services.sessions() as session,
    ):
        for seed in (41, 42):
            row = Content(
                title=f"Movie {seed}",
                kind="programme",
                status="ready",
                owner_account_id="acct_owner",
                duration_s=16.0,
            )
            session.add(row)
            session.flush()
            audio.add_samples(
                song(seed), SONG_RATE, ContentSpec(title=row.title, content_id=row.id)
            )
            video.add_hashes(movie_hashes(seed), content_id=row.id, title=row.title)
            ids.append(row.id)
        acme = session.scalars(select(Organisation).where(Organisation.slug == "acme")).one()
        campaign = Campaign(
            organisation_id=acme.id,
            name="Behind the scenes",
            advertiser="Acme Films",
            status="running",
            payload={"title": "Meet the crew"},
            cost_per_engagement=40,
            currency="usd",
            revenue_share_bps=3000,
        )
        campaign.triggers.append(Trigger(content_id=ids[0], start_s=4.0, end_s=12.0))
        session.add(campaign)
        session.commit()
        return Movies(ids, campaign.id)


def _matched(client: TestClient, keys: Keys, files: object, **form: str) -> dict[str, Any]:
    response = client.post(
        "/v1/match", headers=keys.tv_app, data={"viewer_id": "tv-1", **form}, files=files
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["matched"] is True, body
    return body


def _png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="image2pipe") as output:
        stream = output.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = picture.shape[1], picture.shape[0], "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
            output.mux(packet)
    return buffer.getvalue()


def test_pictures_match_from_clips_frames_and_hashes_and_fuse_with_sound(
    movies: Movies, client: TestClient, keys: Keys, catalogue: Catalogue, tmp_path: Path
) -> None:
    first, second = movies.ids
    programme = Programme(41, width=160, height=90)

    # A silent clip at another frame rate: its pictures alone; the campaign of that moment.
    clip = encode(render(programme.frame, seconds=5, fps=30, start=6.0), fps=30)
    body = _matched(client, keys, {"sample": ("clip.mp4", io.BytesIO(clip))})
    assert body["match"]["content_id"] == first
    assert body["match"]["offset_s"] == pytest.approx(6.0, abs=0.25)
    assert [c["id"] for c in body["campaigns"]] == [movies.campaign_id]

    # The smart-TV case: frame hashes computed on the client, kilobytes not pixels.
    times = [7.0 + i / 4 for i in range(20)]
    wire = hash_frames([programme.frame(t) for t in times], [t - 7.0 for t in times]).to_bytes()
    assert len(wire) < 14_000  # 5 s: 20 frames, up to 15 views each
    match = _matched(client, keys, {"video_hashes": ("q.vh", io.BytesIO(wire))})["match"]
    assert match["content_id"] == first and match["offset_s"] == pytest.approx(7.0, abs=0.25)

    # A dozen still frames, half a second apart (five, a second apart, reach 0.72 here: too
    # little evidence for the calibrated threshold on this small synthetic catalogue).
    stills = [
        ("frames", (f"f{i}.png", io.BytesIO(_png(programme.frame(10.0 + i / 2))), "image/png"))
        for i in range(12)
    ]
    match = _matched(client, keys, stills, frame_interval_s="0.5")["match"]
    assert match["content_id"] == first and match["offset_s"] == pytest.approx(10.0, abs=0.25)

    # Sound and pictures of one moment: fused, with the sound's precision.
    both = movie(42, start=5.0, seconds=5.0)
    match = _matched(client, keys, {"sample": ("both.mp4", io.BytesIO(both))})["match"]
    assert match["content_id"] == second and match["offset_s"] == pytest.approx(5.0, abs=0.05)
    # Unknown sound over known pictures, and known sound over a black screen: each signal answers.
    for sample, offset in (
        (movie(42, start=2.0, seconds=5.0, sound=99), 2.0),
        (movie(42, start=9.0, seconds=5.0, with_pictures=False), 9.0),
    ):
        match = _matched(client, keys, {"sample": ("s.mp4", io.BytesIO(sample))})["match"]
        assert match["content_id"] == second and match["offset_s"] == pytest.approx(
            offset, abs=0.25
        )

    # A smart TV sends both kinds of client evidence: fused too.
    sound_wire = AudioSignal().fingerprint_query(movie(42, start=5.0, seconds=5.0)).to_bytes()
    picture_wire = hash_video(both).to_bytes()
    evidence = {
        "fingerprints": ("q.fp", io.BytesIO(sound_wire)),
        "video_hashes": ("q.vh", io.BytesIO(picture_wire)),
    }
    match = _matched(client, keys, evidence)["match"]
    assert match["content_id"] == second and match["offset_s"] == pytest.approx(5.0, abs=0.05)

    # Plain audio samples still match beside the video index.
    song_id = list(catalogue.songs)[1]
    wav = excerpt_wav(catalogue.songs[song_id], 4.0, 4.0, tmp_path)
    assert (
        _matched(client, keys, {"sample": ("s.wav", io.BytesIO(wav))})["match"]["content_id"]
        == song_id
    )


def test_bad_picture_evidence_is_refused(movies: Movies, client: TestClient, keys: Keys) -> None:
    garbage = client.post(
        "/v1/match",
        headers=keys.tv_app,
        data={"viewer_id": "v"},
        files={"video_hashes": ("q.vh", io.BytesIO(b"ACRV" + bytes(40)))},
    )
    assert garbage.status_code == 422 and garbage.json()["code"] == "invalid_fingerprints"
    both = client.post(
        "/v1/match",
        headers=keys.tv_app,
        data={"viewer_id": "v"},
        files=[("video_hashes", ("q.vh", b"x")), ("frames", ("f.png", b"y"))],
    )
    assert both.status_code == 422
    not_an_image = client.post(
        "/v1/match",
        headers=keys.tv_app,
        data={"viewer_id": "v"},
        files={"frames": ("f.png", io.BytesIO(b"definitely not a picture" * 10))},
    )
    assert not_an_image.status_code == 415
    assert not_an_image.headers["content-type"] == "application/problem+json"
