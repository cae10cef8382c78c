"""End-to-end matching: excerpts of indexed songs are found at the right offset."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import soxr
from conftest import SONG_RATE, synth_song, write_audio
from numpy.typing import NDArray

import acr.signals.audio as audio
from acr import ContentSpec, Index, MatchResult
from acr.errors import FingerprintFormatError, SilentMediaError
from acr.matching import MIN_INLIERS
from acr.signals.base import Fingerprints

SONG_SECONDS = 24.0
SEEDS = [100 + i for i in range(8)]
UNINDEXED_SEED = 999
OFFSET_TOLERANCE_S = 0.05


@pytest.fixture(scope="module")
def songs() -> dict[str, NDArray[np.float32]]:
    return {f"song-{seed}": synth_song(seed, SONG_SECONDS) for seed in SEEDS}


@pytest.fixture(scope="module")
def index(
    tmp_path_factory: pytest.TempPathFactory, songs: dict[str, NDArray[np.float32]]
) -> Iterator[Index]:
    directory = tmp_path_factory.mktemp("matching") / "index"
    built = Index.open(directory, create=True)
    for content_id, samples in songs.items():
        built.add_samples(
            samples, SONG_RATE, ContentSpec(title=content_id.title(), content_id=content_id)
        )
    yield built
    built.close()


def _excerpt(song: NDArray[np.float32], start_s: float, seconds: float) -> NDArray[np.float32]:
    begin = round(start_s * SONG_RATE)
    return song[begin : begin + round(seconds * SONG_RATE)].copy()


def _with_noise(samples: NDArray[np.float32], snr_db: float, seed: int) -> NDArray[np.float32]:
    noise = np.random.default_rng(seed).standard_normal(samples.size)
    noise *= np.sqrt(np.mean(samples.astype(np.float64) ** 2) / np.mean(noise**2))
    noise /= 10.0 ** (snr_db / 20.0)
    return (samples + noise).astype(np.float32)


def _write_mp3(path: Path, samples: NDArray[np.float32]) -> Path:
    with av.open(str(path), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=SONG_RATE, layout="mono")
        stream.bit_rate = 128_000
        frame = av.AudioFrame.from_ndarray(
            samples.reshape(1, -1).astype(np.float32), format="flt", layout="mono"
        )
        frame.sample_rate = SONG_RATE
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _check_best(result: MatchResult, content_id: str, offset_s: float) -> None:
    best = result.best
    assert best is not None, f"no match, expected {content_id} at {offset_s}"
    assert best.content_id == content_id
    assert best.offset_s == pytest.approx(offset_s, abs=OFFSET_TOLERANCE_S)
    assert 0.0 <= best.confidence <= 1.0


# -- offsets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("which", "start_s"), [(0, 0.0), (1, 3.3), (2, 9.87), (3, 12.5), (5, 17.25), (7, 19.0)]
)
def test_excerpt_is_found_at_its_offset(
    index: Index, songs: dict[str, NDArray[np.float32]], which: int, start_s: float
) -> None:
    content_id = f"song-{SEEDS[which]}"
    result = index.match_samples(_excerpt(songs[content_id], start_s, 5.0), SONG_RATE)
    _check_best(result, content_id, start_s)
    best = result.best
    assert best is not None
    assert best.title == content_id.title()
    assert best.duration_s == pytest.approx(SONG_SECONDS, abs=0.01)
    assert best.speed == pytest.approx(1.0, abs=0.01)
    assert best.score >= MIN_INLIERS
    assert best.query_start_s < 1.0
    assert 4.0 < best.query_end_s <= 5.05
    assert result.query_duration_s == pytest.approx(5.0, abs=0.01)
    assert result.query_codes > 0
    assert [m.content_id for m in result.matches] == [content_id]
    assert [m.content_id for m in result.segments] == [content_id]


def test_noisy_excerpt_still_matches(index: Index, songs: dict[str, NDArray[np.float32]]) -> None:
    noisy = _with_noise(_excerpt(songs["song-104"], 8.0, 5.0), snr_db=5.0, seed=1)
    _check_best(index.match_samples(noisy, SONG_RATE), "song-104", 8.0)


@pytest.mark.parametrize("speed", [1.02, 0.98])
def test_speed_changed_excerpt_still_matches(
    index: Index, songs: dict[str, NDArray[np.float32]], speed: float
) -> None:
    excerpt = _excerpt(songs["song-106"], 8.0, 8.0)
    # Played `speed` times faster: resampled to fewer (or more) samples, pitch included.
    played = soxr.resample(excerpt, SONG_RATE * speed, SONG_RATE).astype(np.float32)
    result = index.match_samples(played, SONG_RATE)
    _check_best(result, "song-106", 8.0)
    best = result.best
    assert best is not None
    assert best.speed != pytest.approx(1.0, abs=0.005)  # the drift was noticed


@pytest.mark.parametrize("speed", [1.02, 0.98])
def test_speed_is_reported_within_one_percent(
    index: Index, songs: dict[str, NDArray[np.float32]], speed: float
) -> None:
    excerpt = _excerpt(songs["song-106"], 8.0, 8.0)
    played = soxr.resample(excerpt, SONG_RATE * speed, SONG_RATE).astype(np.float32)
    best = index.match_samples(played, SONG_RATE).best
    assert best is not None
    assert best.speed == pytest.approx(speed, rel=0.01)


# -- no match -----------------------------------------------------------------------------------


def test_song_not_in_index_is_not_matched(index: Index) -> None:
    other = synth_song(UNINDEXED_SEED, 10.0)
    result = index.match_samples(other, SONG_RATE, top_k=3)
    assert result.best is None
    assert result.matches == []
    assert result.segments == []
    assert result.query_codes > 0  # it was heard, just not recognised


def test_white_noise_is_not_matched(index: Index) -> None:
    noise = np.random.default_rng(3).standard_normal(6 * SONG_RATE).astype(np.float32) * 0.3
    result = index.match_samples(noise, SONG_RATE, top_k=3)
    assert result.best is None
    assert result.matches == []


def test_silence_is_rejected(index: Index, tmp_path: Path) -> None:
    silence = np.zeros(5 * SONG_RATE, dtype=np.float32)
    with pytest.raises(SilentMediaError):
        index.match_samples(silence, SONG_RATE)
    wav = write_audio(tmp_path / "silence.wav", silence)
    with pytest.raises(SilentMediaError):
        index.match(wav)
    with pytest.raises(SilentMediaError):
        index.match(wav.read_bytes())


# -- several contents in one sample ------------------------------------------------------------


@pytest.fixture(scope="module")
def medley(songs: dict[str, NDArray[np.float32]]) -> NDArray[np.float32]:
    """5 s of song-102, then 3 s of song-103, then 2 s of song-105: decreasing evidence."""
    return np.concatenate(
        [
            _excerpt(songs["song-102"], 5.0, 5.0),
            _excerpt(songs["song-103"], 10.0, 3.0),
            _excerpt(songs["song-105"], 15.0, 2.0),
        ]
    )


def test_top_k_returns_distinct_contents_best_first(
    index: Index, medley: NDArray[np.float32]
) -> None:
    three = index.match_samples(medley, SONG_RATE, top_k=3).matches
    assert [m.content_id for m in three] == ["song-102", "song-103", "song-105"]
    confidences = [m.confidence for m in three]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences)
    scores = [m.score for m in three]
    assert scores == sorted(scores, reverse=True)

    two = index.match_samples(medley, SONG_RATE, top_k=2).matches
    assert [m.content_id for m in two] == ["song-102", "song-103"]
    one = index.match_samples(medley, SONG_RATE, top_k=1).matches
    assert [m.content_id for m in one] == ["song-102"]
    many = index.match_samples(medley, SONG_RATE, top_k=8).matches
    assert len({m.content_id for m in many}) == len(many)
    assert [m.content_id for m in many] == ["song-102", "song-103", "song-105"]


def test_medley_segments_are_in_time_order(index: Index, medley: NDArray[np.float32]) -> None:
    segments = index.match_samples(medley, SONG_RATE).segments
    assert [m.content_id for m in segments] == ["song-102", "song-103", "song-105"]
    starts = [m.query_start_s for m in segments]
    assert starts == sorted(starts)
    for earlier, later in itertools.pairwise(segments):
        assert earlier.query_end_s <= later.query_start_s + 0.1


def _straddling(songs: dict[str, NDArray[np.float32]]) -> NDArray[np.float32]:
    """The last 3 s of song-100 followed by the first 3 s of song-101."""
    return np.concatenate(
        [
            _excerpt(songs["song-100"], SONG_SECONDS - 3.0, 3.0),
            _excerpt(songs["song-101"], 0.0, 3.0),
        ]
    )


def test_sample_straddling_two_songs_gives_two_segments(
    index: Index, songs: dict[str, NDArray[np.float32]]
) -> None:
    result = index.match_samples(_straddling(songs), SONG_RATE)
    first, second = result.segments
    assert (first.content_id, second.content_id) == ("song-100", "song-101")
    assert first.query_start_s < 0.5
    assert 2.0 < first.query_end_s <= 3.2
    assert 2.8 <= second.query_start_s < 3.5
    assert 5.0 < second.query_end_s <= 6.05
    assert first.offset_s == pytest.approx(SONG_SECONDS - 3.0, abs=OFFSET_TOLERANCE_S)
    assert result.best is not None
    assert result.best.content_id in {"song-100", "song-101"}


def test_second_segment_offset_is_where_it_starts_in_its_reference(
    index: Index, songs: dict[str, NDArray[np.float32]]
) -> None:
    segments = index.match_samples(_straddling(songs), SONG_RATE).segments
    assert [m.content_id for m in segments] == ["song-100", "song-101"]
    # The segment's first inlier may come a few frames after the cut: allow 0.1 s.
    assert segments[1].offset_s == pytest.approx(0.0, abs=0.1)


# -- inputs: files, bytes, client-side fingerprints --------------------------------------------


def test_file_bytes_and_fingerprints_agree(
    index: Index, songs: dict[str, NDArray[np.float32]], tmp_path: Path
) -> None:
    excerpt = _excerpt(songs["song-101"], 11.5, 5.0)
    wav = write_audio(tmp_path / "q.wav", excerpt)
    mp3 = _write_mp3(tmp_path / "q.mp3", excerpt)
    with av.open(str(mp3)) as probe:  # it really is MP3
        assert probe.format.name == "mp3"
        assert probe.streams.audio[0].codec_context.name.startswith("mp3")

    results = {
        "wav path": index.match(wav),
        "wav str": index.match(str(wav)),
        "wav bytes": index.match(wav.read_bytes()),
        "mp3 path": index.match(mp3),
        "mp3 bytes": index.match(mp3.read_bytes()),
        "mp3 fileobj": index.match(io.BytesIO(mp3.read_bytes())),
    }
    client_side = index.signal.fingerprint_query(mp3)
    received = Fingerprints.from_bytes(client_side.to_bytes())
    results["fingerprints"] = index.match_fingerprints(received)

    for name, result in results.items():
        assert result.best is not None, name
        assert result.best.content_id == "song-101", name
        assert result.best.offset_s == pytest.approx(11.5, abs=OFFSET_TOLERANCE_S), name
    # The same MP3 gives exactly the same answer however it arrives.
    mp3_answers = {
        (best.content_id, best.offset_s, best.score)
        for key in ("mp3 path", "mp3 bytes", "mp3 fileobj", "fingerprints")
        if (best := results[key].best) is not None
    }
    assert len(mp3_answers) == 1


def test_client_fingerprints_with_another_hop_are_not_silently_misread(
    index: Index, songs: dict[str, NDArray[np.float32]]
) -> None:
    query = index.signal.fingerprint_samples(
        _excerpt(songs["song-103"], 7.0, 5.0), SONG_RATE, query=True
    )
    # The same codes at the same times, counted in frames twice as long.
    coarse = Fingerprints(
        kind=query.kind,
        codes=query.codes,
        frames=(query.frames // 2).astype(np.uint32),
        hop_s=2 * query.hop_s,
        duration_s=query.duration_s,
    )
    try:
        result = index.match_fingerprints(Fingerprints.from_bytes(coarse.to_bytes()))
    except (FingerprintFormatError, ValueError):
        return  # refusing them is a fine answer
    _check_best(result, "song-103", 7.0)  # and so is rescaling them


# -- confidence ---------------------------------------------------------------------------------


HEAVY_NOISE_SNR_DB = -9.0
"""Noise heavy enough to weaken a 2 s match without losing it."""


def test_confidence_drops_with_heavy_noise(
    index: Index, songs: dict[str, NDArray[np.float32]]
) -> None:
    clean = _excerpt(songs["song-107"], 6.0, 2.0)
    noisy = _with_noise(clean, snr_db=HEAVY_NOISE_SNR_DB, seed=5)
    clean_best = index.match_samples(clean, SONG_RATE, min_confidence=0.0).best
    noisy_best = index.match_samples(noisy, SONG_RATE, min_confidence=0.0).best
    assert clean_best is not None
    assert noisy_best is not None
    assert clean_best.content_id == noisy_best.content_id == "song-107"
    assert 0.0 <= noisy_best.confidence < clean_best.confidence <= 1.0
    assert noisy_best.confidence < 0.99
    assert noisy_best.score < clean_best.score
    # min_confidence filters: the weak answer is withheld, the strong one is not.
    threshold = (noisy_best.confidence + clean_best.confidence) / 2
    assert index.match_samples(noisy, SONG_RATE, min_confidence=threshold).best is None
    assert index.match_samples(clean, SONG_RATE, min_confidence=threshold).best is not None


def test_one_second_samples_gain_evidence_from_the_half_hop_phase(
    index: Index, songs: dict[str, NDArray[np.float32]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 s excerpts, noisy and cut between the reference's frames, match more surely
    with the second fingerprinting pass than without it."""
    hop = audio.HOP_S
    excerpts = [
        _with_noise(_excerpt(songs[f"song-{seed}"], 2.0 + 2.3 * i + hop * 0.45, 1.0), 0.0, i)
        for i, seed in enumerate(SEEDS)
    ]

    def confidences() -> list[float]:
        found = [index.match_samples(x, SONG_RATE, min_confidence=0.0).best for x in excerpts]
        return [m.confidence if m is not None else 0.0 for m in found]

    both = confidences()
    monkeypatch.setattr(audio, "SHORT_SAMPLE_S", 0.0)
    once = confidences()
    assert sum(both) > sum(once)
    assert sum(b > o for b, o in zip(both, once, strict=True)) >= 6
