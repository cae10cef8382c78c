"""Monitoring: a long recording matched into a timeline of segments."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from acr.cli import main
from acr.errors import CorruptMediaError, EmptyMediaError, SilentMediaError
from acr.index.catalogue import ContentSpec
from acr.index.store import Index
from acr.monitor import Timeline
from benchmarks.degrade import add_white_noise, speed
from tests.conftest import SONG_RATE, synth_song, write_audio

SONG_S = 40.0


@dataclass(frozen=True)
class Piece:
    content_id: str
    start_s: float
    end_s: float
    offset_s: float


@dataclass(frozen=True)
class Recording:
    index_dir: Path
    path: Path
    pieces: list[Piece]
    gaps: list[tuple[float, float]]
    """Unknown music and silence."""


def _song(seed: int) -> NDArray[np.float32]:
    return synth_song(seed, SONG_S)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """Five indexed songs; a 2.5-minute recording of four excerpts among unknown music
    and silence, one excerpt 2 % fast, at 20 dB SNR."""
    root = tmp_path_factory.mktemp("monitor")
    with Index.open(root / "index", create=True) as index:
        for seed in range(1, 6):
            index.add_samples(
                _song(seed), SONG_RATE, ContentSpec(title=f"song {seed}", content_id=f"song-{seed}")
            )
    rate = SONG_RATE
    parts: list[NDArray[np.float32]] = []
    pieces: list[Piece] = []
    gaps: list[tuple[float, float]] = []
    now = 0.0

    def add(x: NDArray[np.float32], content_id: str | None = None, offset_s: float = 0.0) -> None:
        nonlocal now
        end = now + x.shape[0] / rate
        if content_id is None:
            gaps.append((now, end))
        else:
            pieces.append(Piece(content_id, now, end, offset_s))
        parts.append(x.astype(np.float32))
        now = end

    def cut(seed: int, start_s: float, end_s: float) -> NDArray[np.float32]:
        return _song(seed)[round(start_s * rate) : round(end_s * rate)]

    add(synth_song(101, 9.0))  # unknown music
    add(cut(1, 5.0, 30.0), "song-1", 5.0)
    add(np.zeros(4 * rate, dtype=np.float32))  # silence
    add(cut(2, 0.0, 18.0), "song-2", 0.0)
    add(cut(3, 12.0, 32.0), "song-3", 12.0)  # right after the previous one
    add(synth_song(102, 14.0))
    add(speed(cut(4, 3.0, 33.6), rate, 1.02), "song-4", 3.0)  # 2 % fast: 30 s
    add(np.zeros(3 * rate, dtype=np.float32))
    add(synth_song(103, 12.0))
    signal = add_white_noise(np.concatenate(parts), np.random.default_rng(7), 20.0)
    path = write_audio(root / "broadcast.flac", np.clip(signal, -1.0, 1.0))
    return Recording(root / "index", path, pieces, gaps)


@pytest.fixture(scope="module")
def timeline(recording: Recording) -> Timeline:
    with Index.open(recording.index_dir, readonly=True) as index:
        return index.monitor(recording.path)


def test_every_piece_is_found_with_its_boundaries_and_offset(
    recording: Recording, timeline: Timeline
) -> None:
    assert [s.content_id for s in timeline.segments] == [p.content_id for p in recording.pieces]
    for piece, segment in zip(recording.pieces, timeline.segments, strict=True):
        assert abs(segment.start_s - piece.start_s) <= 0.5, (piece, segment)
        assert abs(segment.end_s - piece.end_s) <= 0.5, (piece, segment)
        # The offset is the reference position heard at the reported start.
        speed_factor = 1.02 if piece.content_id == "song-4" else 1.0
        expected = piece.offset_s + speed_factor * (segment.start_s - piece.start_s)
        assert abs(segment.offset_s - expected) <= 0.05, (piece, segment)
        assert segment.confidence >= 0.8
        assert segment.title == f"song {piece.content_id[-1]}"


def test_speed_change_is_followed(timeline: Timeline) -> None:
    fast = next(s for s in timeline.segments if s.content_id == "song-4")
    assert fast.speed == pytest.approx(1.02, abs=0.002)
    assert fast.pitch == pytest.approx(1.02, abs=0.01)
    plain = [s for s in timeline.segments if s.content_id != "song-4"]
    assert all(s.speed == pytest.approx(1.0, abs=0.002) for s in plain)
    assert all(s.pitch == pytest.approx(1.0, abs=0.01) for s in plain)


def test_unknown_music_and_silence_are_gaps(recording: Recording, timeline: Timeline) -> None:
    for start, end in recording.gaps:
        inside = sum(max(0.0, min(end, s.end_s) - max(start, s.start_s)) for s in timeline.segments)
        assert inside <= 0.5, (start, end, inside)
    reported = timeline.gaps
    assert reported[0][0] == 0.0 and reported[-1][1] == pytest.approx(timeline.duration_s)
    assert timeline.duration_s == pytest.approx(recording.pieces[-1].end_s + 15.0, abs=0.01)


def test_timeline_is_disjoint_and_ordered(timeline: Timeline) -> None:
    for before, after in zip(timeline.segments, timeline.segments[1:], strict=False):
        assert before.start_s < before.end_s <= after.start_s < after.end_s


def test_cli_prints_one_json_line_per_segment(
    recording: Recording, timeline: Timeline, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        ["monitor", "--index-dir", str(recording.index_dir), "--json", str(recording.path)]
    )
    assert status == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["content_id"] for line in lines] == [s.content_id for s in timeline.segments]
    for line in lines:
        assert line["recording"] == str(recording.path)
        assert {"start_s", "end_s", "title", "offset_s", "confidence", "speed", "pitch"} <= (
            line.keys()
        )


def test_cli_table_shows_segments_and_gaps(
    recording: Recording, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["monitor", "--index-dir", str(recording.index_dir), str(recording.path)])
    out = capsys.readouterr().out
    assert status == 0
    assert "4 segments" in out and "song 3 [song-3]" in out and "(no match)" in out


def test_cli_reports_bad_recordings_and_goes_on(
    recording: Recording, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x10\x00\x00WAVEfmt garbage")
    status = main(
        ["monitor", "--index-dir", str(recording.index_dir), "--json", str(empty), str(corrupt)]
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1
    assert [line["error"]["code"] for line in lines] == [
        EmptyMediaError.code,
        CorruptMediaError.code,
    ]
    assert all(line["error"]["message"] for line in lines)


def test_cli_missing_index_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["monitor", "--index-dir", str(tmp_path / "none"), str(tmp_path / "x.wav")])
    assert status == 1
    assert "acr: error: no index at" in capsys.readouterr().err


def test_silent_recording_is_a_clear_error(recording: Recording, tmp_path: Path) -> None:
    silent = write_audio(tmp_path / "silent.wav", np.zeros(5 * SONG_RATE, dtype=np.float32))
    with Index.open(recording.index_dir, readonly=True) as index, pytest.raises(SilentMediaError):
        index.monitor(silent)


def test_bad_window_is_rejected(recording: Recording) -> None:
    with Index.open(recording.index_dir, readonly=True) as index, pytest.raises(ValueError):
        index.monitor(recording.path, window_s=0.0)


# -- speed, pitch and tempo changes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sped_up(recording: Recording, tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """Song 1, then the middle of song 2 played 5 % fast (pitch and tempo), then song 3,
    among unknown music, at 20 dB SNR."""
    rate = SONG_RATE
    parts = [
        synth_song(111, 6.0),
        _song(1)[2 * rate : 20 * rate],
        speed(_song(2)[5 * rate : round(31.25 * rate)], rate, 1.05),  # 25 s
        _song(3)[10 * rate : 26 * rate],
        synth_song(112, 6.0),
    ]
    bounds = np.cumsum([0, *(p.shape[0] for p in parts)]) / rate
    pieces = [
        Piece("song-1", bounds[1], bounds[2], 2.0),
        Piece("song-2", bounds[2], bounds[3], 5.0),
        Piece("song-3", bounds[3], bounds[4], 10.0),
    ]
    signal = add_white_noise(np.concatenate(parts), np.random.default_rng(8), 20.0)
    path = tmp_path_factory.mktemp("sped-up") / "sped-up.flac"
    write_audio(path, np.clip(signal, -1.0, 1.0))
    gaps = [(0.0, bounds[1]), (bounds[4], bounds[5])]
    return Recording(recording.index_dir, path, pieces, gaps)


def test_a_sped_up_piece_is_found_with_its_speed_pitch_and_offsets(sped_up: Recording) -> None:
    with Index.open(sped_up.index_dir, readonly=True) as index:
        timeline = index.monitor(sped_up.path)
    assert [s.content_id for s in timeline.segments] == [p.content_id for p in sped_up.pieces]
    for piece, segment in zip(sped_up.pieces, timeline.segments, strict=True):
        factor = 1.05 if piece.content_id == "song-2" else 1.0
        assert abs(segment.start_s - piece.start_s) <= 0.5, (piece, segment)
        assert abs(segment.end_s - piece.end_s) <= 0.5, (piece, segment)
        # In the reference's time base: the position heard at the reported start.
        expected = piece.offset_s + factor * (segment.start_s - piece.start_s)
        assert abs(segment.offset_s - expected) <= 0.05, (piece, segment)
        assert segment.speed == pytest.approx(factor, abs=0.003), segment
        assert segment.pitch == pytest.approx(factor, abs=0.01), segment
        assert segment.confidence >= 0.8
    assert timeline.to_dict()["segments"][1]["pitch"] == pytest.approx(1.05, abs=0.01)


def test_without_warps_the_sped_up_piece_is_missed(sped_up: Recording) -> None:
    """5 % is beyond the plain lookup's reach: the warps are what find it."""
    with Index.open(sped_up.index_dir, readonly=True) as index:
        timeline = index.monitor(sped_up.path, warps=False)
    assert "song-2" not in [s.content_id for s in timeline.segments]
