"""Streaming: incremental fingerprints, early answers, the look correction, the WebSocket."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect

import acr.signals.audio as audio
from acr.db.models import Campaign, Content, Engagement, Organisation, Trigger
from acr.index.catalogue import ContentSpec
from acr.index.store import Index
from acr.matching import CONFIDENCE_SLOPE, DEFAULT_MIN_CONFIDENCE, confidence_from_evidence
from acr.results import Match
from acr.signals.audio import fingerprint_query
from acr.signals.audio.decode import resample
from acr.signals.audio.peaks import MAX_BIN, MIN_BIN
from acr.signals.audio.spectrogram import SAMPLE_RATE, log_spectrogram
from acr.streaming import (
    WARP_INTERVAL_S,
    IncrementalFingerprinter,
    LookPlan,
    StreamMatcher,
    corrected_confidence,
    evidence_from_confidence,
    raw_threshold,
)
from api.services import Services
from benchmarks.degrade import speed, tempo
from tests.conftest import SONG_RATE, Keys, synth_song

SONG_SECONDS = 16.0
CHUNK_S = 0.1


@functools.cache
def song(seed: int) -> NDArray[np.float32]:
    return synth_song(seed, SONG_SECONDS)


def chunks(samples: NDArray[np.float32], rate: int, seconds: float = CHUNK_S) -> Iterator[NDArray]:
    step = round(seconds * rate)
    for start in range(0, samples.shape[0], step):
        yield samples[start : start + step]


def same_codes(a: object, b: object) -> bool:
    return bool(
        np.array_equal(a.codes, b.codes)  # type: ignore[attr-defined]
        and np.array_equal(a.frames, b.frames)  # type: ignore[attr-defined]
    )


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    directory = tmp_path_factory.mktemp("stream-index")
    with Index.open(directory, create=True) as built:
        for seed in (21, 22, 23):
            built.add_samples(song(seed), SONG_RATE, ContentSpec(title=f"song {seed}"))
        yield built


# -- incremental fingerprints -----------------------------------------------------------------


@pytest.mark.parametrize(("rate", "chunk_s"), [(SAMPLE_RATE, 0.1), (SONG_RATE, 0.037), (16000, 1)])
def test_incremental_fingerprints_equal_batch_with_the_same_level(
    rate: int, chunk_s: float
) -> None:
    """Given the whole signal's level floor, chunked fingerprints are the batch ones exactly."""
    samples = resample(synth_song(5, 6.3), SONG_RATE, rate)
    mono = resample(samples, rate, SAMPLE_RATE)
    band = log_spectrogram(mono)[:, MIN_BIN - 1 : MAX_BIN + 1]
    batch = fingerprint_query(mono)
    stream = IncrementalFingerprinter(rate, level=(float(band.mean()), float(band.max())))
    for chunk in chunks(samples, rate, chunk_s):
        stream.push(chunk)
    streamed = stream.finish()
    assert len(batch) > 500
    assert same_codes(streamed, batch)
    assert streamed.duration_s == pytest.approx(batch.duration_s)


def test_incremental_fingerprints_with_causal_level_stay_close_to_batch() -> None:
    """The causal floor (audio heard so far) is the only difference; on a song that gets
    30 dB louder half-way, in noise, the codes still agree."""
    rng = np.random.default_rng(0)
    samples = synth_song(7, 8.0) + 0.05 * rng.standard_normal(int(8.0 * SONG_RATE))
    samples[: samples.shape[0] // 2] *= 0.03
    samples = samples.astype(np.float32)
    batch = fingerprint_query(resample(samples, SONG_RATE, SAMPLE_RATE))
    stream = IncrementalFingerprinter(SONG_RATE)
    for chunk in chunks(samples, SONG_RATE):
        stream.push(chunk)
    streamed = stream.finish()
    ours = set(zip(streamed.codes.tolist(), streamed.frames.tolist(), strict=True))
    theirs = set(zip(batch.codes.tolist(), batch.frames.tolist(), strict=True))
    assert len(ours & theirs) >= 0.95 * len(ours | theirs)


def test_looks_at_the_working_rate_are_the_batch_of_the_prefix_until_a_block_settles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Until the first one-second block of peaks is settled, nothing is causal yet.

    A stream is fingerprinted in one pass, also while it is short: the batch to
    compare with is the one-pass one (no second pass half a hop in).
    """
    monkeypatch.setattr(audio, "SHORT_SAMPLE_S", 0.0)
    samples = resample(synth_song(8, 3.0), SONG_RATE, SAMPLE_RATE)
    stream = IncrementalFingerprinter(SAMPLE_RATE)
    heard = 0
    for chunk in chunks(samples[: int(0.95 * SAMPLE_RATE)], SAMPLE_RATE):
        stream.push(chunk)
        heard += chunk.shape[0]
        if heard >= 0.5 * SAMPLE_RATE:
            assert same_codes(stream.fingerprints(), fingerprint_query(samples[:heard]))


# -- the look correction ----------------------------------------------------------------------


def test_look_correction_is_bonferroni_on_the_evidence_scale() -> None:
    plan = LookPlan(first_s=0.5, interval_s=0.25, max_s=10.0)
    assert plan.looks == 40  # 39 scheduled (0.5 … 10.0 s) and the final one
    assert plan.penalty == pytest.approx(np.log10(40))
    threshold = raw_threshold(DEFAULT_MIN_CONFIDENCE, plan.penalty)
    assert evidence_from_confidence(threshold) == pytest.approx(
        evidence_from_confidence(DEFAULT_MIN_CONFIDENCE) + plan.penalty
    )
    assert corrected_confidence(threshold, plan.penalty) == pytest.approx(DEFAULT_MIN_CONFIDENCE)
    assert (
        confidence_from_evidence(40.0)
        > corrected_confidence(confidence_from_evidence(40.0), 1.0)
        == pytest.approx(confidence_from_evidence(40.0 - 1.0))
    )
    assert CONFIDENCE_SLOPE > 0


# -- early answers ----------------------------------------------------------------------------


def test_a_streamed_song_matches_early_at_the_right_offset(index: Index) -> None:
    content = next(r for r in index.list() if r.title == "song 22")
    start_s = 4.3
    samples = song(22)[int(start_s * SONG_RATE) :]
    matcher = StreamMatcher(index, SONG_RATE)
    answer = None
    for chunk in chunks(samples, SONG_RATE):
        if (answer := matcher.push(chunk)) is not None:
            break
    assert answer is not None
    assert answer.content_id == content.content_id
    assert answer.offset_s == pytest.approx(start_s, abs=0.05)
    assert answer.confidence >= DEFAULT_MIN_CONFIDENCE
    assert matcher.heard_s <= 2.0, "a clean song should be recognised well before 5 s"
    assert matcher.answer == answer and not matcher.done


@pytest.mark.parametrize("kind", ["unknown", "silence"])
def test_unknown_music_and_silence_end_without_an_answer(index: Index, kind: str) -> None:
    samples = synth_song(99, 4.0) if kind == "unknown" else np.zeros(int(4 * SONG_RATE), np.float32)
    matcher = StreamMatcher(index, SONG_RATE, plan=LookPlan(max_s=3.0))
    answers = [matcher.push(chunk) for chunk in chunks(samples, SONG_RATE)]
    assert all(a is None for a in answers) and matcher.finish() is None
    assert matcher.done and matcher.answer is None
    assert matcher.heard_s == pytest.approx(3.0)
    assert 1 <= len(matcher.looks) <= matcher.plan.looks
    assert matcher.silent is (kind == "silence")


def test_large_chunks_look_once_per_chunk(index: Index) -> None:
    matcher = StreamMatcher(index, SONG_RATE, plan=LookPlan(max_s=4.0))
    for chunk in chunks(synth_song(98, 4.0), SONG_RATE, 1.0):
        matcher.push(chunk)
    assert [round(look.heard_s, 2) for look in matcher.looks] == [1.0, 2.0, 3.0, 4.0]


# -- the WebSocket endpoint ----------------------------------------------------------------------


@pytest.fixture
def stream_client(services: Services, keys: Keys) -> Iterator[tuple[TestClient, str]]:
    """The service with one song indexed and a campaign on its 10–15 s; yields its content id."""
    from api.app import create_app

    with Index.open(services.settings.index_path) as built, services.sessions() as session:
        row = Content(
            title="Song 31",
            kind="song",
            status="ready",
            owner_account_id="acct_owner",
            duration_s=SONG_SECONDS,
        )
        session.add(row)
        session.flush()
        built.add_samples(song(31), SONG_RATE, ContentSpec(title=row.title, content_id=row.id))
        acme = session.scalars(select(Organisation).where(Organisation.slug == "acme")).one()
        campaign = Campaign(
            organisation_id=acme.id,
            name="Coupon",
            advertiser="Acme Soda",
            status="running",
            payload={"coupon_code": "ACME10"},
            cost_per_engagement=50,
            currency="usd",
            revenue_share_bps=3000,
        )
        campaign.triggers.append(Trigger(content_id=row.id, start_s=10.0, end_s=15.0))
        session.add(campaign)
        session.commit()
        content_id = row.id
    with TestClient(create_app(services), raise_server_exceptions=False) as client:
        yield client, content_id


def pcm16(samples: NDArray[np.float32]) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def test_websocket_streams_to_an_early_match_and_serves_the_campaign(
    stream_client: tuple[TestClient, str], keys: Keys, services: Services
) -> None:
    client, content_id = stream_client
    samples = song(31)[int(11.0 * SONG_RATE) :]
    url = f"/v1/match/stream?sample_rate={SONG_RATE}&viewer_id=v1&country=gb"
    with client.websocket_connect(url, headers=keys.tv_app) as ws:
        # The test client cannot poll, so 3 s are sent before reading: the server has
        # answered after the chunk that made it sure and ignores the rest.
        for chunk in chunks(samples[: int(3.0 * SONG_RATE)], SONG_RATE):
            ws.send_bytes(pcm16(chunk))
        message = ws.receive_json()
        assert message["type"] == "match", message
        assert message["matched"] is True and message["match"]["content_id"] == content_id
        assert message["match"]["offset_s"] == pytest.approx(11.0, abs=0.05)
        assert message["heard_s"] <= 3.0
        assert [c["payload"] for c in message["campaigns"]] == [{"coupon_code": "ACME10"}]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1000
    with services.sessions() as session:
        recorded = list(session.scalars(select(Engagement)))
    assert [e.id for e in recorded] == [message["campaigns"][0]["engagement_id"]]
    assert recorded[0].country == "GB"


def test_websocket_unknown_audio_ends_in_no_match(
    stream_client: tuple[TestClient, str], keys: Keys
) -> None:
    client, _ = stream_client
    url = f"/v1/match/stream?sample_rate={SONG_RATE}&viewer_id=v1&token="
    token = keys.tv_app["Authorization"].removeprefix("Bearer ")
    with client.websocket_connect(url + token) as ws:  # the browser's way: a query parameter
        for chunk in chunks(synth_song(97, 2.0), SONG_RATE, 0.25):
            ws.send_bytes(pcm16(chunk))
        ws.send_text(json.dumps({"type": "end"}))
        message = ws.receive_json()
    assert message["type"] == "no_match" and message["reason"] == "no_match"
    assert message["matched"] is False and message["campaigns"] == []
    assert message["heard_s"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("headers", "query", "code"),
    [
        ({}, "", "unauthenticated"),
        ({"Authorization": "Bearer acr_nope"}, "", "unauthenticated"),
        ("acme", "", "forbidden"),
        ("tv_app", "&sample_rate=100", "validation_error"),
    ],
)
def test_websocket_refusals_send_an_error_then_close_with_policy_violation(
    stream_client: tuple[TestClient, str], keys: Keys, headers: object, query: str, code: str
) -> None:
    client, _ = stream_client
    sent = getattr(keys, headers) if isinstance(headers, str) else headers
    url = "/v1/match/stream?viewer_id=v1" + (query or f"&sample_rate={SONG_RATE}")
    with client.websocket_connect(url, headers=sent) as ws:
        message = ws.receive_json()
        assert message["type"] == "error" and message["code"] == code
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008


def test_websocket_bad_message_is_refused(
    stream_client: tuple[TestClient, str], keys: Keys
) -> None:
    client, _ = stream_client
    url = f"/v1/match/stream?sample_rate={SONG_RATE}&viewer_id=v1"
    with client.websocket_connect(url, headers=keys.tv_app) as ws:
        ws.send_bytes(b"\x00\x01\x02")  # half a sample
        message = ws.receive_json()
        assert message["type"] == "error" and message["code"] == "bad_message"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1003
    with client.websocket_connect(url, headers=keys.tv_app) as ws:
        ws.send_text("hello")
        assert ws.receive_json()["code"] == "bad_message"


# -- speed, pitch and tempo changes ---------------------------------------------------------------


def _sped_up_stream(index: Index, warp_interval_s: float) -> tuple[StreamMatcher, Match | None]:
    """Song 22 from 4.3 s, played 6 % fast (pitch and tempo), streamed until an answer."""
    samples = speed(song(22)[int(4.3 * SONG_RATE) :], SONG_RATE, 1.06)
    matcher = StreamMatcher(index, SONG_RATE, warp_interval_s=warp_interval_s)
    for chunk in chunks(samples, SONG_RATE):
        if (answer := matcher.push(chunk)) is not None:
            return matcher, answer
    return matcher, matcher.finish()


def test_a_sped_up_stream_is_answered_early_with_its_speed(index: Index) -> None:
    content = next(r for r in index.list() if r.title == "song 22")
    matcher, answer = _sped_up_stream(index, WARP_INTERVAL_S)
    assert answer is not None
    assert not matcher.done, "answered by a look before the final one"
    assert matcher.heard_s <= 5.0
    assert answer.content_id == content.content_id
    assert answer.offset_s == pytest.approx(4.3, abs=0.1)
    # About a second of audio places the pitch to a band, not the tempo: the Hough
    # search's ±3 % and the warp's band trade off over so short a stretch.
    assert answer.pitch == pytest.approx(1.06, rel=0.015)
    assert answer.speed == pytest.approx(1.06, rel=0.1)
    assert answer.confidence >= DEFAULT_MIN_CONFIDENCE
    assert matcher.looks[-1].warps


def test_without_warps_in_its_looks_a_sped_up_stream_is_answered_at_the_end_only(
    index: Index,
) -> None:
    """The looks' warps are what answer early: with only the final look warped, 6 % is
    beyond the plain lookups."""
    matcher, answer = _sped_up_stream(index, math.inf)
    assert matcher.done
    assert [look.warps for look in matcher.looks].count(True) == 1
    assert answer is None or answer.speed == pytest.approx(1.06, rel=0.02)


def test_warped_looks_follow_the_interval(index: Index) -> None:
    matcher = StreamMatcher(index, SONG_RATE, plan=LookPlan(max_s=4.0), warp_interval_s=1.0)
    for chunk in chunks(synth_song(96, 4.0), SONG_RATE, 0.3):
        matcher.push(chunk)
    warped = [round(look.heard_s, 1) for look in matcher.looks if look.warps]
    assert warped == [1.2, 2.1, 3.0, 4.0]  # the first look at or after each second, and the last
    with pytest.raises(ValueError):
        StreamMatcher(index, SONG_RATE, warp_interval_s=0.0)


def test_an_answer_on_a_tilted_line_is_searched_under_the_warps_first(index: Index) -> None:
    """Between warped looks too: a confident line tilted by 1.5 % or more is what
    identify searches the warps for, and so does a look before answering with it.
    The first look comes after 3 s, long enough for a 3 % tilt to show (over a
    second or less no tilt can be told from none, and none is reported)."""
    samples = tempo(song(22)[int(4.3 * SONG_RATE) :], SONG_RATE, 1.03)
    matcher = StreamMatcher(index, SONG_RATE, plan=LookPlan(first_s=3.0), warp_interval_s=math.inf)
    answer = None
    for chunk in chunks(samples, SONG_RATE):
        if (answer := matcher.push(chunk)) is not None:
            break
    assert answer is not None and not matcher.done
    assert answer.offset_s == pytest.approx(4.3, abs=0.05)
    assert matcher.looks[-1].warps
    assert not any(look.warps for look in matcher.looks[:-1])
