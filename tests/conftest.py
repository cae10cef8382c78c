"""Shared test fixtures: synthetic music written to real media files.

Every "song" is made at test time from a seed (:func:`synth_song`): random
melodies of harmonic notes with attack/decay envelopes, plus percussion clicks
on the beat. The same seed always gives the same song and different seeds give
unrelated songs, so a test can index some seeds and query with others.
:func:`write_audio` writes a song as WAV, FLAC or Ogg Vorbis.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: importable by the tests, their subprocesses and worker processes."""
if str(ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) does not add the cwd
    sys.path.insert(0, str(ROOT))

SONG_RATE = 22050
"""Sample rate of the synthetic songs (the core resamples to its own rate)."""

_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}


def _note(
    rng: np.random.Generator, midi: float, seconds: float, rate: int, loudness: float
) -> NDArray[np.float64]:
    """One harmonic note with a fast attack and an exponential decay."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 440.0 * 2.0 ** ((midi - 69.0) / 12.0)
    tone = np.zeros_like(t)
    for k in range(1, 7):
        if k * f0 < rate / 2 - 500:
            tone += rng.uniform(0.3, 1.0) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3))
    attack = np.minimum(1.0, t / 0.01)
    decay = np.exp(-t / rng.uniform(0.15, 0.6))
    release = np.minimum(1.0, (seconds - t) / 0.02)
    return loudness * tone * attack * decay * np.clip(release, 0.0, 1.0)


def synth_song(seed: int, seconds: float = 20.0, rate: int = SONG_RATE) -> NDArray[np.float32]:
    """A music-like mono signal, the same for the same seed.

    Three voices play random melodies of harmonic notes (chromatic pitches over
    three and a half octaves, random lengths and onsets) over percussion clicks
    on an eighth-note grid, loud on the downbeat. The melodies are deliberately
    not repetitive: a song that repeats itself matches itself at several offsets,
    which the matcher rightly scores as less certain.

    Parameters
    ----------
    seed : int
        Which song; different seeds give unrelated songs.
    seconds : float
        Duration of the song. It shapes the whole song: cut excerpts from a song
        made with the same ``seed`` *and* ``seconds`` as the one indexed.
    rate : int
        Sample rate in Hz.

    Returns
    -------
    ndarray of float32, shape (n,)
        Samples in [-0.9, 0.9].
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = np.zeros(n + rate, dtype=np.float64)

    def add(start_s: float, sound: NDArray[np.float64]) -> None:
        begin = int(start_s * rate)
        out[begin : begin + sound.size] += sound[: max(0, out.size - begin)]

    voices = 3
    for _ in range(voices):
        t = rng.uniform(0.0, 0.2)
        while t < seconds:
            length = rng.uniform(0.1, 0.6)
            add(t, _note(rng, int(rng.integers(45, 90)), length, rate, 0.4))
            t += rng.exponential(voices / 10.0)
    click_len = int(0.03 * rate)
    decay = np.exp(-np.arange(click_len) / (0.006 * rate))
    for i, t in enumerate(np.arange(0.0, seconds, 0.25)):
        add(float(t), (0.3 if i % 4 == 0 else 0.12) * rng.standard_normal(click_len) * decay)
    song = out[:n]
    song *= 0.9 / max(1e-9, float(np.max(np.abs(song))))
    return song.astype(np.float32)


def write_audio(path: Path, samples: NDArray[np.float32], rate: int = SONG_RATE) -> Path:
    """Write mono samples as WAV, FLAC or Ogg Vorbis, chosen by the suffix of ``path``."""
    fmt, subtype = _FORMATS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, format=fmt, subtype=subtype)
    return path


SongWriter = Callable[..., Path]


@pytest.fixture
def make_song(tmp_path: Path) -> SongWriter:
    """Factory fixture: ``make_song(name, seed, seconds=20.0)`` writes a song under tmp_path.

    ``name`` is a path relative to tmp_path whose suffix picks the format
    (``.wav``, ``.flac`` or ``.ogg``).
    """

    def make(name: str, seed: int, seconds: float = 20.0) -> Path:
        return write_audio(tmp_path / name, synth_song(seed, seconds))

    return make
