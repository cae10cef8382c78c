"""Fast checks of the benchmark's degradations (benchmarks/degrade.py) and query cutting."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from benchmarks import degrade
from benchmarks.queries import (
    QUICK_PLAN,
    ClipSpec,
    assign_clips,
    degrade_clip,
    queries_for_track,
    repeat_offset,
)

SR = 16_000


def _sine(freq_hz: float, seconds: float, sr: int = SR, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _music_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A few harmonics with a slow envelope: a stand-in for music."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    x = np.zeros_like(t)
    for f in rng.uniform(110, 2000, size=8):
        x += rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)
    return x.astype(np.float32)


def _dominant_hz(x: np.ndarray, sr: int = SR) -> float:
    """Dominant frequency with parabolic interpolation of the peak bin."""
    window = np.hanning(x.size)
    spectrum = np.abs(np.fft.rfft(x * window))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
    shift = 0.5 * (a - c) / (a - 2 * b + c)
    return float((k + shift) * sr / x.size)


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean.astype(np.float64)
    return 10 * math.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


@pytest.mark.parametrize("snr_db", [10.0, 5.0, 0.0])
@pytest.mark.parametrize("add", [degrade.add_white_noise, degrade.add_pink_noise])
def test_added_noise_hits_target_snr(
    add: Callable[[np.ndarray, np.random.Generator, float], np.ndarray], snr_db: float
) -> None:
    x = _music_like(3.0)
    y = add(x, np.random.default_rng(1), snr_db)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert abs(_snr_db(x, y) - snr_db) < 0.5


def test_pink_noise_falls_3_db_per_octave() -> None:
    noise = degrade.pink_noise(SR * 8, np.random.default_rng(2)).astype(np.float64)
    psd = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(noise.size, 1 / SR)

    def band(lo: float) -> float:
        return float(psd[(freqs >= lo) & (freqs < 2 * lo)].mean())

    drop_db = 10 * math.log10(band(500.0) / band(1000.0))
    assert 2.0 < drop_db < 4.0


def test_telephone_and_phone_mic_keep_length_and_are_finite() -> None:
    x = _music_like(2.0)
    for fn in (degrade.telephone, degrade.phone_microphone):
        y = fn(x, SR, np.random.default_rng(3))
        assert y.shape == x.shape and y.dtype == np.float32
        assert np.all(np.isfinite(y))
    assert np.max(np.abs(degrade.phone_microphone(4 * x, SR, np.random.default_rng(3)))) < 1.0


def test_telephone_removes_out_of_band_energy() -> None:
    low = _sine(100.0, 2.0)
    y = degrade.telephone(low, SR, np.random.default_rng(4))
    # What is left is mostly the added noise: the 100 Hz tone is attenuated by > 20 dB.
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    reference = np.abs(np.fft.rfft(low * np.hanning(low.size)))
    k = round(100.0 * y.size / SR)
    assert spectrum[k] < 0.1 * reference[k]


def test_reverb_impulse_response_decays_by_rt60() -> None:
    rt60 = 0.6
    ir = degrade.room_impulse_response(SR, np.random.default_rng(5), rt60).astype(np.float64)
    assert ir.size == round(1.2 * rt60 * SR)
    assert abs(np.sum(ir**2) - 1.0) < 1e-6
    start, stop, third = int(0.05 * SR), int(0.15 * SR), int(rt60 * SR / 3)
    early = np.sum(ir[start:stop] ** 2)
    late = np.sum(ir[start + third : stop + third] ** 2)
    # A third of RT60 later the energy has dropped by about 20 dB.
    assert 14.0 < 10 * math.log10(early / late) < 26.0
    y = degrade.reverb(_music_like(1.0), SR, np.random.default_rng(5), rt60_s=rt60)
    assert y.shape == (SR,)


@pytest.mark.parametrize("factor", [1.02, 0.98])
def test_speed_changes_duration_and_pitch_by_factor(factor: float) -> None:
    x = _sine(440.0, 4.0)
    y = degrade.speed(x, SR, factor)
    assert abs(y.size - x.size / factor) <= 2
    assert abs(_dominant_hz(y) / 440.0 - factor) < 0.01 * factor


@pytest.mark.parametrize("factor", [1.05, 0.95])
def test_tempo_changes_duration_but_keeps_pitch(factor: float) -> None:
    x = _sine(440.0, 4.0)
    y = degrade.tempo(x, SR, factor)
    assert abs(y.size / SR - 4.0 / factor) < 0.05
    middle = y[SR // 2 : -SR // 2]
    assert abs(_dominant_hz(middle) - 440.0) < 0.01 * 440.0


@pytest.mark.parametrize("semitones", [1.0, -1.0])
def test_pitch_shift_keeps_duration_and_moves_frequency(semitones: float) -> None:
    x = _sine(440.0, 4.0)
    y = degrade.pitch(x, SR, semitones)
    assert y.size == x.size
    expected = 440.0 * 2.0 ** (semitones / 12.0)
    middle = y[SR // 2 : -SR // 2]
    assert abs(_dominant_hz(middle) - expected) < 0.01 * expected


@pytest.mark.parametrize("codec", [degrade.mp3, degrade.opus])
def test_codec_round_trip_keeps_length_and_alignment(
    codec: Callable[[np.ndarray, int], np.ndarray],
) -> None:
    x = _music_like(3.0)
    y = codec(x, SR)
    assert y.dtype == np.float32
    assert abs(y.size - x.size) <= 0.1 * SR
    lag = np.argmax(np.correlate(y[SR : 2 * SR], x[SR - 400 : 2 * SR + 400], "valid")) - 400
    assert abs(lag) <= 0.005 * SR  # encoder delay is removed: at most 5 ms off
    assert _snr_db(x, y) > 5.0


def test_gain_and_soft_clip() -> None:
    x = _sine(440.0, 0.5, amplitude=0.5)
    assert np.allclose(degrade.gain(x, 20 * math.log10(2)), 2 * x, atol=1e-6)
    clipped = degrade.soft_clip((4 * x).astype(np.float32))
    assert np.max(np.abs(clipped)) < 1.0
    quiet = (0.01 * x).astype(np.float32)
    assert np.allclose(degrade.soft_clip(quiet), quiet, rtol=1e-3, atol=1e-7)


def test_registry_order_and_names() -> None:
    names = [d.name for d in degrade.REGISTRY]
    assert names == [
        "clean", "white10", "white5", "white0", "pink10", "pink5", "pink0", "reverb",
        "mp3_32k", "opus_32k", "speed+2", "speed-2", "speed+5", "speed-5", "speed+10",
        "speed-10", "tempo+5", "tempo-5", "tempo+10", "tempo-10", "pitch+0.5", "pitch-0.5",
        "pitch+1", "pitch-1", "pitch+1.5", "pitch-1.5", "telephone", "phone_mic", "gain",
    ]  # fmt: skip
    assert degrade.get("speed-10").pitch_factor == degrade.get("speed-10").time_factor == 0.9
    assert degrade.get("tempo+10").pitch_factor == 1.0
    assert degrade.get("pitch-1.5").pitch_factor == pytest.approx(2 ** (-1.5 / 12))
    assert len(set(names)) == len(names)
    with pytest.raises(KeyError):
        degrade.get("nope")


def test_every_degradation_is_deterministic_given_the_seed() -> None:
    x = _music_like(1.5, seed=7)
    for d in degrade.REGISTRY:
        a = d.apply(x, SR, np.random.default_rng(11))
        b = d.apply(x, SR, np.random.default_rng(11))
        assert np.array_equal(a, b), d.name
        assert a.dtype == np.float32 and np.all(np.isfinite(a)), d.name
    noisy = [degrade.add_white_noise(x, np.random.default_rng(s), 5) for s in (1, 2)]
    assert not np.array_equal(noisy[0], noisy[1])


def test_degrade_clip_has_exact_length_for_every_condition() -> None:
    audio = _music_like(8.0, seed=3)
    for d in degrade.REGISTRY:
        y = degrade_clip(audio, SR, 1.25, 2, d, np.random.default_rng(0))
        assert y.shape == (2 * SR,), d.name


def test_query_generation_is_seeded_and_order_independent() -> None:
    audio = _music_like(16.0, seed=9)
    clips = [ClipSpec("positive", 0, 3, 0), ClipSpec("positive", 0, 5, 1)]
    names = ("clean", "white5", "tempo-5")
    first = list(queries_for_track(audio, SR, clips, names))
    again = list(queries_for_track(audio, SR, clips[::-1], names))
    by_id = {q.query_id: q for q in again}
    assert len(first) == 6
    for q in first:
        twin = by_id[q.query_id]
        assert q.true_offset_s == twin.true_offset_s
        assert np.array_equal(q.samples, twin.samples)
        assert q.samples.shape == (q.length_s * SR,)
        assert 0.0 <= q.true_offset_s <= 16.0 - q.length_s * 1.05 - 0.5


def test_assign_clips_skips_tracks_too_short() -> None:
    specs = assign_clips([4.0, 30.0, 11.0], {10: 4, 1: 3}, "positive", QUICK_PLAN.degradations)
    assert [s.track for s in specs if s.length_s == 10] == [1, 1, 1, 1]
    assert [s.track for s in specs if s.length_s == 1] == [0, 1, 2]


def test_repeat_offset_finds_a_verbatim_loop_only() -> None:
    rng = np.random.default_rng(12)
    phrase = rng.standard_normal(2 * SR).astype(np.float32) * 0.1
    other = rng.standard_normal(2 * SR).astype(np.float32) * 0.1
    audio = np.concatenate([phrase, other, phrase, other])  # phrase repeats at 4 s
    found = repeat_offset(audio, SR, 0.5, 1.0, 4.3)
    assert found is not None and abs(found - 4.5) < 1e-3
    assert repeat_offset(audio, SR, 0.5, 1.0, 2.5) is None
