"""A demo catalogue: synthetic programmes and adverts, indexed and matched.

``acr demo`` writes a small catalogue of music-like recordings in several
formats, indexes it with the batch indexer, records three viewer samples — a
phone in a living room (room echo, background noise, a small speaker), an ad
break straddling two adverts, and something that is not in the catalogue — and
matches them, printing what ``acr match --json`` prints.

The recordings come from :func:`synth_song`, which the tests use too: random
melodies of harmonic notes over percussion, different for every seed.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray
from scipy.signal import butter, fftconvolve, sosfilt

DEMO_RATE = 22050


@dataclass(frozen=True)
class DemoContent:
    """One recording of the demo catalogue."""

    file: str
    title: str
    kind: str
    owner: str
    seed: int
    seconds: float


CATALOGUE = (
    DemoContent("evening-news.flac", "Evening News", "programme", "acct_northwind", 11, 60.0),
    DemoContent("wild-coasts.ogg", "Wild Coasts, ep. 3", "programme", "acct_northwind", 12, 75.0),
    DemoContent("kitchen-live.mp3", "Kitchen Live", "programme", "acct_bluefin", 13, 45.0),
    DemoContent("fizz-soda-ad.m4a", "Fizz Soda — summer spot", "advert", "acct_fizz", 14, 15.0),
    DemoContent("roadster-ad.wav", "Roadster — launch spot", "advert", "acct_roadster", 15, 20.0),
    DemoContent("station-ident.opus", "Station ident", "programme", "acct_northwind", 16, 8.0),
)


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
    note: NDArray[np.float64] = loudness * tone * attack * decay * np.clip(release, 0.0, 1.0)
    return note


def synth_song(seed: int, seconds: float = 20.0, rate: int = DEMO_RATE) -> NDArray[np.float32]:
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
        Duration of the song.
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


_CODECS = {
    ".wav": ("wav", "pcm_s16le", None),
    ".flac": ("flac", "flac", None),
    ".ogg": ("ogg", "libopus", 96_000),
    ".opus": ("ogg", "libopus", 64_000),
    ".mp3": ("mp3", "libmp3lame", 128_000),
    ".m4a": ("mp4", "aac", 128_000),
}


def write_media(path: Path, samples: NDArray[np.float32], rate: int = DEMO_RATE) -> Path:
    """Encode mono samples with PyAV, in the format the suffix of ``path`` names."""
    container_format, codec, bit_rate = _CODECS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    # Opus runs at 48 kHz only; other codecs take the signal's own rate.
    stream_rate = 48_000 if codec == "libopus" else rate
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=stream_rate)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono"
        if bit_rate:
            stream.bit_rate = bit_rate
        resampler = av.AudioResampler(format=stream.format, layout="mono", rate=stream_rate)
        pcm = np.clip(samples * 32767.0, -32768, 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        frame.time_base = Fraction(1, rate)
        frame.pts = 0
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(converted))
        container.mux(stream.encode(None))
    return path


def living_room(
    samples: NDArray[np.float32], rate: int, rng: np.random.Generator
) -> NDArray[np.float32]:
    """What a phone hears of a TV across a living room.

    A small loudspeaker's band (no bass, soft treble), a room's echo (RT60
    0.5 s, direct sound about as loud as the reverberation), background noise
    at 5 dB SNR with a pink spectrum, and a lower level.
    """
    band = butter(2, [220.0, 5000.0], btype="bandpass", fs=rate, output="sos")
    speaker = sosfilt(band, samples)
    length = int(0.5 * rate)
    tail = rng.standard_normal(length) * np.exp(-6.9 * np.arange(length) / length)
    tail[: int(0.004 * rate)] = 0.0
    impulse = tail / math.sqrt(float(np.sum(tail**2)))
    impulse[0] += 1.0
    room = fftconvolve(speaker, impulse)[: samples.size]
    spectrum = np.fft.rfft(rng.standard_normal(samples.size))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1.0))
    noise = np.fft.irfft(spectrum, samples.size)
    noise *= math.sqrt(float(np.mean(room**2)) / float(np.mean(noise**2)) / 10 ** (5 / 10))
    heard: NDArray[np.float32] = np.clip(0.3 * (room + noise), -1.0, 1.0).astype(np.float32)
    return heard


def build_demo(directory: Path) -> tuple[Path, Path, list[tuple[Path, str]]]:
    """Write the demo catalogue, its manifest and the samples.

    Returns
    -------
    manifest : Path
        CSV manifest of the catalogue (path, title, owner, kind).
    index_dir : Path
        Where the index goes.
    samples : list of (Path, str)
        Each sample and what it should be found to be.
    """
    media = directory / "media"
    manifest = directory / "catalogue.csv"
    songs = {item.file: synth_song(item.seed, item.seconds) for item in CATALOGUE}
    for item in CATALOGUE:
        if not (media / item.file).exists():
            write_media(media / item.file, songs[item.file])
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "title", "owner", "kind"])
        for item in CATALOGUE:
            writer.writerow([f"media/{item.file}", item.title, item.owner, item.kind])

    rng = np.random.default_rng(20261126)
    samples_dir = directory / "samples"
    coast = songs["wild-coasts.ogg"]
    start = int(31.4 * DEMO_RATE)
    living = living_room(coast[start : start + 6 * DEMO_RATE], DEMO_RATE, rng)
    soda, roadster = songs["fizz-soda-ad.m4a"], songs["roadster-ad.wav"]
    ad_break = np.concatenate([soda[-3 * DEMO_RATE :], roadster[: 3 * DEMO_RATE]])
    stranger = synth_song(999, 6.0)
    samples = [
        (
            write_media(samples_dir / "living-room.wav", living),
            "Wild Coasts, ep. 3 at 31.4 s (room echo, noise at 5 dB SNR, small speaker)",
        ),
        (
            write_media(samples_dir / "ad-break.mp3", ad_break),
            "Fizz Soda at 12.0 s for 3 s, then Roadster at 0.0 s",
        ),
        (write_media(samples_dir / "not-in-catalogue.m4a", stranger), "no match"),
    ]
    return manifest, directory / "index", samples
