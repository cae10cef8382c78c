"""Speed, tempo and pitch changes beyond a few per cent: warped codes and the search."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from conftest import SONG_RATE, synth_song
from numpy.typing import NDArray

from acr import ContentSpec, Index
from acr.signals.audio.codes import gray, pair_codes, ungray
from acr.signals.audio.peaks import Peaks
from acr.signals.audio.warp import IDENTITY, Warp, warp_codes, warp_grid
from acr.signals.base import Fingerprints
from benchmarks import degrade

SONG_SECONDS = 30.0
SEEDS = [300, 301, 302, 303]
UNINDEXED_SEED = 399


@pytest.fixture(scope="module")
def songs() -> dict[str, NDArray[np.float32]]:
    return {f"song-{seed}": synth_song(seed, SONG_SECONDS) for seed in SEEDS}


@pytest.fixture(scope="module")
def index(
    tmp_path_factory: pytest.TempPathFactory, songs: dict[str, NDArray[np.float32]]
) -> Iterator[Index]:
    built = Index.open(tmp_path_factory.mktemp("warp") / "index", create=True)
    for content_id, samples in songs.items():
        built.add_samples(samples, SONG_RATE, ContentSpec(title=content_id, content_id=content_id))
    yield built
    built.close()


def _clip(song: NDArray[np.float32], start_s: float, seconds: float) -> NDArray[np.float32]:
    begin = round(start_s * SONG_RATE)
    return song[begin : begin + round(seconds * SONG_RATE)].copy()


def test_ungray_inverts_gray() -> None:
    values = np.arange(1 << 12, dtype=np.int64)
    assert np.array_equal(ungray(gray(values)), values)


def test_a_whole_band_pitch_shift_is_undone_exactly() -> None:
    rng = np.random.default_rng(5)
    n = 400
    frames = np.sort(rng.integers(0, 600, n)).astype(np.int32)
    hz = rng.uniform(400.0, 2500.0, n).astype(np.float32)
    strength = rng.uniform(0.0, 5.0, n).astype(np.float32)
    codes, anchor_frames = pair_codes(Peaks(frames, hz, strength), fanout=4)
    shifted = Peaks(frames, (hz * 2.0 ** (3 / 36)).astype(np.float32), strength)
    shifted_codes, shifted_frames = pair_codes(shifted, fanout=4)

    warped, warped_frames = warp_codes(shifted_codes, shifted_frames, Warp(pitch_bands=3))

    assert not np.array_equal(shifted_codes, codes)
    # Float rounding may move a peak sitting on a band edge; all others come back.
    assert np.mean(warped == codes) > 0.97
    assert np.array_equal(warped_frames, anchor_frames)


def test_a_tempo_warp_stretches_time_differences_and_frames() -> None:
    codes = np.array([gray(np.int64(10))], dtype=np.uint32)  # dt field 10, all else 0
    frames = np.array([100], dtype=np.uint32)
    warped, warped_frames = warp_codes(codes, frames, Warp(tempo=1.1))
    assert ungray(warped.astype(np.int64) & 0x3F)[0] == 11
    assert warped_frames[0] == 110
    assert warp_codes(codes, frames, IDENTITY)[0] is codes


def test_the_grid_covers_ten_per_cent_each_way() -> None:
    grid = warp_grid()
    speeds = [w.tempo for w in grid if w.coupled]
    tempos = [w.tempo for w in grid if w.pitch_bands == 0]
    pitches = [w.pitch for w in grid if w.tempo == 1.0 and w.pitch_bands]
    for family in (speeds, tempos, pitches):
        assert min(family) <= 0.91 and max(family) >= 1.09
    assert IDENTITY not in grid and len(set(grid)) == len(grid)


@pytest.mark.parametrize(
    ("name", "change", "tempo", "pitch"),
    [
        ("speed +7 %", lambda x: degrade.speed(x, SONG_RATE, 1.07), 1.07, 1.07),
        ("speed -9 %", lambda x: degrade.speed(x, SONG_RATE, 0.91), 0.91, 0.91),
        ("tempo +10 %", lambda x: degrade.tempo(x, SONG_RATE, 1.10), 1.10, 1.0),
        ("pitch -1.5 semitones", lambda x: degrade.pitch(x, SONG_RATE, -1.5), 1.0, 2**-0.125),
        ("pitch +1 semitone", lambda x: degrade.pitch(x, SONG_RATE, 1.0), 1.0, 2 ** (1 / 12)),
        ("pitch -1 semitone", lambda x: degrade.pitch(x, SONG_RATE, -1.0), 1.0, 2 ** (-1 / 12)),
    ],
)
def test_changed_samples_match_with_their_factors_and_offset(
    index: Index,
    songs: dict[str, NDArray[np.float32]],
    name: str,
    change: degrade.Degrader,
    tempo: float,
    pitch: float,
) -> None:
    start_s = 9.0
    # Cut enough source that the changed sample lasts 5 s.
    sample = change(_clip(songs["song-302"], start_s, 5.0 * tempo + 0.2))[: 5 * SONG_RATE]

    result = index.match_samples(sample, SONG_RATE)

    best = result.best
    assert best is not None, name
    assert best.content_id == "song-302"
    assert best.offset_s == pytest.approx(start_s, abs=0.1)
    assert best.speed == pytest.approx(tempo, rel=0.01)
    assert best.pitch == pytest.approx(pitch, rel=0.01)


def test_client_fingerprints_of_a_sped_up_sample_are_warped_too(
    index: Index, songs: dict[str, NDArray[np.float32]]
) -> None:
    sample = degrade.speed(_clip(songs["song-301"], 4.0, 5.6), SONG_RATE, 1.1)[: 5 * SONG_RATE]
    wire = index.signal.fingerprint_samples(sample, SONG_RATE, query=True).to_bytes()

    result = index.match_fingerprints(Fingerprints.from_bytes(wire))

    assert result.best is not None and result.best.content_id == "song-301"
    assert result.best.speed == pytest.approx(1.1, rel=0.01)
    unwarped = index.match_fingerprints(Fingerprints.from_bytes(wire), warps=False)
    assert unwarped.best is None  # 10 % is beyond what the unwarped search absorbs


@pytest.mark.parametrize("factor", [0.9, 1.07])
def test_changed_unindexed_music_is_still_no_match(index: Index, factor: float) -> None:
    sample = degrade.speed(synth_song(UNINDEXED_SEED, 8.0), SONG_RATE, factor)[: 5 * SONG_RATE]
    assert index.match_samples(sample, SONG_RATE).best is None
