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

from acr.demo import DEMO_RATE, synth_song  # noqa: E402 - needs the path above

SONG_RATE = DEMO_RATE
"""Sample rate of the synthetic songs (the core resamples to its own rate)."""

__all__ = ["SONG_RATE", "synth_song", "write_audio"]

_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}


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
