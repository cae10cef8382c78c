"""Degradations applied to query clips: noise, reverb, codecs, speed, tempo, pitch, phones.

Every function is pure: it takes float32 mono samples at ``sample_rate`` and
returns a new float32 array, drawing any randomness from the explicit
:class:`numpy.random.Generator` it is given. The :data:`REGISTRY` names each
benchmark condition and fixes the order of the results table.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.filter
import numpy as np
import soxr
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from numpy.typing import NDArray
from scipy import signal

FloatArray = NDArray[np.float32]
"""Mono float32 samples."""

_EPS = 1e-12


def _as_float32(x: NDArray[Any]) -> FloatArray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _frame_samples(frame: AudioFrame) -> FloatArray:
    """Samples of a mono float frame as a flat float32 array."""
    return _as_float32(frame.to_ndarray()).reshape(-1)


def _fit_length(y: FloatArray, n: int) -> FloatArray:
    """Trim or zero-pad ``y`` to exactly ``n`` samples."""
    if y.shape[0] >= n:
        return y[:n]
    return np.concatenate([y, np.zeros(n - y.shape[0], dtype=np.float32)])


def power(x: FloatArray) -> float:
    """Mean power (mean square) of a signal."""
    if x.size == 0:
        return 0.0
    return float(np.mean(np.square(x, dtype=np.float64)))


def gain(x: FloatArray, gain_db: float) -> FloatArray:
    """Scale a signal by ``gain_db`` decibels.

    Parameters
    ----------
    x : ndarray of float32
        Input samples.
    gain_db : float
        Gain in dB (negative attenuates).

    Returns
    -------
    ndarray of float32
        Scaled samples (not clipped).
    """
    return _as_float32(x * np.float32(10.0 ** (gain_db / 20.0)))


def soft_clip(x: FloatArray, drive: float = 1.0) -> FloatArray:
    """Saturate a signal smoothly with ``tanh`` (an overdriven phone input stage).

    Parameters
    ----------
    x : ndarray of float32
        Input samples; values well below 1 pass almost unchanged.
    drive : float
        Multiplier applied before the ``tanh``.

    Returns
    -------
    ndarray of float32
        Samples in (-1, 1).
    """
    return _as_float32(np.tanh(x.astype(np.float64) * drive))


def white_noise(n: int, rng: np.random.Generator) -> FloatArray:
    """Unit-power Gaussian white noise of ``n`` samples."""
    return _as_float32(rng.standard_normal(n))


def pink_noise(n: int, rng: np.random.Generator) -> FloatArray:
    """Unit-power pink (1/f power) noise made by shaping white noise in the FFT domain.

    Parameters
    ----------
    n : int
        Number of samples.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    ndarray of float32
        Noise whose power spectral density falls 3 dB per octave, normalised
        to unit mean power.
    """
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(spectrum.shape[0], dtype=np.float64)
    scale = np.zeros_like(freqs)
    scale[1:] = 1.0 / np.sqrt(freqs[1:])
    noise = np.fft.irfft(spectrum * scale, n=n)
    noise /= math.sqrt(max(float(np.mean(noise**2)), _EPS))
    return _as_float32(noise)


def add_noise_at_snr(x: FloatArray, noise: FloatArray, snr_db: float) -> FloatArray:
    """Add ``noise`` scaled so that signal power / noise power equals ``snr_db``.

    Parameters
    ----------
    x : ndarray of float32
        Clean signal.
    noise : ndarray of float32
        Noise of the same length (any scale).
    snr_db : float
        Target signal-to-noise ratio in dB, measured over the whole clip.

    Returns
    -------
    ndarray of float32
        ``x`` plus the scaled noise. A silent ``x`` is returned unchanged.
    """
    if noise.shape != x.shape:
        raise ValueError("noise must have the same shape as the signal")
    p_signal = power(x)
    p_noise = power(noise)
    if p_signal <= 0.0 or p_noise <= 0.0:
        return x.copy()
    scale = math.sqrt(p_signal / (p_noise * 10.0 ** (snr_db / 10.0)))
    return _as_float32(x.astype(np.float64) + scale * noise.astype(np.float64))


def add_white_noise(x: FloatArray, rng: np.random.Generator, snr_db: float) -> FloatArray:
    """Add Gaussian white noise at ``snr_db`` (see :func:`add_noise_at_snr`)."""
    return add_noise_at_snr(x, white_noise(x.shape[0], rng), snr_db)


def add_pink_noise(x: FloatArray, rng: np.random.Generator, snr_db: float) -> FloatArray:
    """Add pink (1/f) noise at ``snr_db`` (see :func:`add_noise_at_snr`)."""
    return add_noise_at_snr(x, pink_noise(x.shape[0], rng), snr_db)


def room_impulse_response(
    sample_rate: int,
    rng: np.random.Generator,
    rt60_s: float,
    n_early: int = 6,
) -> FloatArray:
    """Synthetic room impulse response without the direct path.

    Early reflections are sparse taps between 3 and 40 ms; the late tail is
    Gaussian noise with an exponential envelope that decays 60 dB in ``rt60_s``
    and starts 10 ms after the direct sound. The response is normalised to unit
    energy.

    Parameters
    ----------
    sample_rate : int
        Sample rate in Hz.
    rng : numpy.random.Generator
        Source of randomness.
    rt60_s : float
        Reverberation time (60 dB decay) in seconds.
    n_early : int
        Number of early reflections.

    Returns
    -------
    ndarray of float32
        Impulse response ``1.2 * rt60_s`` long.
    """
    n = max(round(1.2 * rt60_s * sample_rate), 1)
    t = np.arange(n, dtype=np.float64) / sample_rate
    envelope = np.exp(-math.log(1000.0) * t / rt60_s)
    envelope *= np.clip((t - 0.010) / 0.010, 0.0, 1.0)  # tail fades in after 10 ms
    ir = 0.5 * rng.standard_normal(n) * envelope
    for _ in range(n_early):
        index = int(rng.uniform(0.003, 0.040) * sample_rate)
        if index < n:
            ir[index] += rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.8)
    ir /= math.sqrt(max(float(np.sum(ir**2)), _EPS))
    return _as_float32(ir)


def reverb(
    x: FloatArray,
    sample_rate: int,
    rng: np.random.Generator,
    rt60_s: float = 0.6,
    wet: float = 0.5,
) -> FloatArray:
    """Room reverberation: convolve with :func:`room_impulse_response` and mix.

    Parameters
    ----------
    x : ndarray of float32
        Input samples.
    sample_rate : int
        Sample rate in Hz.
    rng : numpy.random.Generator
        Source of randomness for the impulse response.
    rt60_s : float
        Reverberation time in seconds.
    wet : float
        Share of the reverberant signal in the mix (0 = dry, 1 = reverberant
        only); the reverberant part is scaled to the dry signal's power first.

    Returns
    -------
    ndarray of float32
        Same length as ``x`` (the tail past the end is cut).
    """
    ir = room_impulse_response(sample_rate, rng, rt60_s)
    reverberant = signal.fftconvolve(x.astype(np.float64), ir.astype(np.float64))[: x.shape[0]]
    p_dry = power(x)
    p_wet = float(np.mean(reverberant**2)) if reverberant.size else 0.0
    if p_wet > 0.0:
        reverberant *= math.sqrt(p_dry / p_wet)
    return _as_float32((1.0 - wet) * x.astype(np.float64) + wet * reverberant)


def codec_roundtrip(
    x: FloatArray,
    sample_rate: int,
    codec: str,
    container: str,
    bit_rate: int,
    codec_rate: int,
) -> FloatArray:
    """Encode with a lossy codec and decode again, in memory, through PyAV.

    Parameters
    ----------
    x : ndarray of float32
        Input samples.
    sample_rate : int
        Sample rate of ``x`` and of the result.
    codec : str
        FFmpeg encoder name (``"libmp3lame"``, ``"libopus"``).
    container : str
        Muxer (``"mp3"``, ``"ogg"``).
    bit_rate : int
        Target bit rate in bit/s.
    codec_rate : int
        Sample rate the codec runs at (``x`` is resampled to it and back).

    Returns
    -------
    ndarray of float32
        Decoded samples, trimmed or padded to the length of ``x`` (FFmpeg
        removes the encoder delay, so the result stays aligned).
    """
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(codec, rate=codec_rate, layout="mono")
        if not isinstance(stream, AudioStream):
            raise TypeError(f"{codec} is not an audio encoder")
        stream.bit_rate = bit_rate
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=codec_rate)
        frame = AudioFrame.from_ndarray(_as_float32(x).reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = sample_rate
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(resampled):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    buffer.seek(0)
    chunks: list[FloatArray] = []
    with av.open(buffer, "r") as source:
        back = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        for decoded in source.decode(audio=0):
            chunks.extend(_frame_samples(f) for f in back.resample(decoded))
        chunks.extend(_frame_samples(f) for f in back.resample(None))
    y = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    return _fit_length(_as_float32(y), x.shape[0])


def mp3(x: FloatArray, sample_rate: int, bit_rate: int = 32_000) -> FloatArray:
    """MP3 (LAME, CBR) at 44.1 kHz and ``bit_rate``, decoded back to ``sample_rate``."""
    return codec_roundtrip(x, sample_rate, "libmp3lame", "mp3", bit_rate, 44_100)


def opus(x: FloatArray, sample_rate: int, bit_rate: int = 32_000) -> FloatArray:
    """Opus (libopus, VBR) in Ogg at 48 kHz and ``bit_rate``, decoded back to ``sample_rate``."""
    return codec_roundtrip(x, sample_rate, "libopus", "ogg", bit_rate, 48_000)


def speed(x: FloatArray, sample_rate: int, factor: float) -> FloatArray:
    """Play faster or slower, changing pitch and tempo together (like a turntable).

    Parameters
    ----------
    x : ndarray of float32
        Input samples.
    sample_rate : int
        Sample rate in Hz.
    factor : float
        Playback speed (1.02 = 2% faster: duration divided by 1.02, frequencies
        multiplied by 1.02).

    Returns
    -------
    ndarray of float32
        About ``len(x) / factor`` samples at ``sample_rate``.
    """
    if factor <= 0:
        raise ValueError("factor must be positive")
    y = soxr.resample(x.astype(np.float32), sample_rate * factor, sample_rate, quality="HQ")
    return _as_float32(y)


def tempo(x: FloatArray, sample_rate: int, factor: float) -> FloatArray:
    """Change tempo without changing pitch with FFmpeg's ``atempo`` filter (WSOLA).

    Parameters
    ----------
    x : ndarray of float32
        Input samples.
    sample_rate : int
        Sample rate in Hz.
    factor : float
        Tempo factor, 0.5 to 100 (1.05 = 5% faster: duration divided by 1.05).

    Returns
    -------
    ndarray of float32
        About ``len(x) / factor`` samples at ``sample_rate``.
    """
    if not 0.5 <= factor <= 100.0:
        raise ValueError("atempo supports factors from 0.5 to 100")
    graph = av.filter.Graph()
    source = graph.add_abuffer(
        format="flt", sample_rate=sample_rate, layout="mono", time_base=Fraction(1, sample_rate)
    )
    stretch = graph.add("atempo", f"{factor:.9f}")
    sink = graph.add("abuffersink")
    source.link_to(stretch)
    stretch.link_to(sink)
    graph.configure()

    chunks: list[FloatArray] = []

    def drain() -> None:
        while True:
            try:
                frame = graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            if isinstance(frame, AudioFrame):
                chunks.append(_frame_samples(frame))

    block = 8192
    samples = _as_float32(x)
    for start in range(0, samples.shape[0], block):
        frame = AudioFrame.from_ndarray(
            np.ascontiguousarray(samples[start : start + block]).reshape(1, -1),
            format="flt",
            layout="mono",
        )
        frame.sample_rate = sample_rate
        frame.pts = start
        graph.push(frame)
        drain()
    graph.push(None)
    drain()
    y = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    return _as_float32(y)


def pitch(x: FloatArray, sample_rate: int, semitones: float) -> FloatArray:
    """Shift pitch by ``semitones`` while keeping the duration.

    Resamples by ``2 ** (semitones / 12)`` (pitch and tempo change together),
    then restores the tempo with ``atempo`` by the inverse factor.

    Parameters
    ----------
    x : ndarray of float32
        Input samples.
    sample_rate : int
        Sample rate in Hz.
    semitones : float
        Shift in semitones (positive raises the pitch).

    Returns
    -------
    ndarray of float32
        Same length as ``x``.
    """
    factor = 2.0 ** (semitones / 12.0)
    return _fit_length(tempo(speed(x, sample_rate, factor), sample_rate, 1.0 / factor), x.shape[0])


def _peaking_sos(sample_rate: int, freq_hz: float, gain_db: float, q: float) -> NDArray[np.float64]:
    """Peaking-EQ biquad (RBJ audio EQ cookbook) as one second-order section."""
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * freq_hz / sample_rate
    alpha = math.sin(w0) / (2.0 * q)
    b = np.array([1.0 + alpha * a, -2.0 * math.cos(w0), 1.0 - alpha * a])
    den = np.array([1.0 + alpha / a, -2.0 * math.cos(w0), 1.0 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]]).reshape(1, 6)


def telephone(x: FloatArray, sample_rate: int, rng: np.random.Generator) -> FloatArray:
    """Narrow-band telephone line.

    Band-pass 300-3400 Hz (4th-order Butterworth), resample to 8 kHz and back,
    then add white noise at 10 dB SNR.

    Parameters
    ----------
    x : ndarray of float32
        Input samples.
    sample_rate : int
        Sample rate in Hz (above 6800).
    rng : numpy.random.Generator
        Source of randomness for the noise.

    Returns
    -------
    ndarray of float32
        Same length as ``x``.
    """
    sos = signal.butter(4, [300.0, 3400.0], btype="bandpass", fs=sample_rate, output="sos")
    y = signal.sosfilt(sos, x.astype(np.float64)).astype(np.float32)
    if sample_rate != 8000:
        narrow = soxr.resample(y, sample_rate, 8000, quality="HQ")
        y = _fit_length(_as_float32(soxr.resample(narrow, 8000, sample_rate, quality="HQ")), x.size)
    return add_white_noise(_as_float32(y), rng, 10.0)


def phone_microphone(x: FloatArray, sample_rate: int, rng: np.random.Generator) -> FloatArray:
    """Music played in a room and recorded by a phone.

    Chain: small speaker / microphone EQ (2nd-order high-pass at 200 Hz,
    2nd-order low-pass at 6 kHz, +5 dB presence peak at 3 kHz), room reverb
    (RT60 0.3-0.6 s, 35% wet), pink noise at 10 dB SNR, a random gain of
    -12 to +6 dB and ``tanh`` soft clipping.

    Parameters
    ----------
    x : ndarray of float32
        Input samples.
    sample_rate : int
        Sample rate in Hz.
    rng : numpy.random.Generator
        Source of randomness (reverb, noise, gain).

    Returns
    -------
    ndarray of float32
        Same length as ``x``.
    """
    sections = [signal.butter(2, 200.0, btype="highpass", fs=sample_rate, output="sos")]
    if sample_rate / 2 > 6000.0:
        sections.append(signal.butter(2, 6000.0, btype="lowpass", fs=sample_rate, output="sos"))
    if sample_rate / 2 > 3000.0:
        sections.append(_peaking_sos(sample_rate, 3000.0, 5.0, 1.0))
    y = signal.sosfilt(np.concatenate(sections), x.astype(np.float64)).astype(np.float32)
    y = reverb(y, sample_rate, rng, rt60_s=float(rng.uniform(0.3, 0.6)), wet=0.35)
    y = add_pink_noise(y, rng, 10.0)
    y = gain(y, float(rng.uniform(-12.0, 6.0)))
    return soft_clip(y)


Degrader = Callable[[FloatArray, int, np.random.Generator], FloatArray]
"""``(samples, sample_rate, rng) -> degraded samples``."""


@dataclass(frozen=True)
class Degradation:
    """A named benchmark condition.

    Attributes
    ----------
    name : str
        Short name used in tables.
    description : str
        What the condition does, for the report.
    apply : Degrader
        The degradation.
    time_factor : float
        Seconds of source consumed per second of output (1.02 for a 2%
        speed-up); the query generator cuts ``length * time_factor`` seconds
        (plus a margin) so the degraded clip has the exact query length.
    timing_preserved : bool
        Whether output time maps 1:1 onto source time, so offset errors are
        meaningful (false for speed and tempo changes).
    pitch_factor : float
        Frequency factor of the output relative to the source (1.02 for a 2%
        speed-up or a pitch shift of about a third of a semitone).
    """

    name: str
    description: str
    apply: Degrader
    time_factor: float = 1.0
    timing_preserved: bool = True
    pitch_factor: float = 1.0


def _noise(
    add: Callable[[FloatArray, np.random.Generator, float], FloatArray], snr_db: float
) -> Degrader:
    """A registry entry adding noise with ``add`` at ``snr_db``."""

    def apply(x: FloatArray, sample_rate: int, rng: np.random.Generator) -> FloatArray:
        return add(x, rng, snr_db)

    return apply


def _timing(change: Callable[[FloatArray, int, float], FloatArray], amount: float) -> Degrader:
    """A registry entry changing speed, tempo or pitch with ``change`` by ``amount``."""

    def apply(x: FloatArray, sample_rate: int, rng: np.random.Generator) -> FloatArray:
        return change(x, sample_rate, amount)

    return apply


def _clean(x: FloatArray, sample_rate: int, rng: np.random.Generator) -> FloatArray:
    return x.copy()


def _mp3_32k(x: FloatArray, sample_rate: int, rng: np.random.Generator) -> FloatArray:
    return mp3(x, sample_rate, 32_000)


def _opus_32k(x: FloatArray, sample_rate: int, rng: np.random.Generator) -> FloatArray:
    return opus(x, sample_rate, 32_000)


def _reverb_room(x: FloatArray, sample_rate: int, rng: np.random.Generator) -> FloatArray:
    rt60_s = float(rng.uniform(0.4, 0.8))
    return reverb(x, sample_rate, rng, rt60_s=rt60_s, wet=float(rng.uniform(0.4, 0.6)))


def _random_gain(x: FloatArray, sample_rate: int, rng: np.random.Generator) -> FloatArray:
    return gain(x, float(rng.choice([-1.0, 1.0])) * float(rng.uniform(6.0, 20.0)))


REGISTRY: tuple[Degradation, ...] = (
    Degradation("clean", "no degradation", _clean),
    Degradation("white10", "white noise, 10 dB SNR", _noise(add_white_noise, 10.0)),
    Degradation("white5", "white noise, 5 dB SNR", _noise(add_white_noise, 5.0)),
    Degradation("white0", "white noise, 0 dB SNR", _noise(add_white_noise, 0.0)),
    Degradation("pink10", "pink noise, 10 dB SNR", _noise(add_pink_noise, 10.0)),
    Degradation("pink5", "pink noise, 5 dB SNR", _noise(add_pink_noise, 5.0)),
    Degradation("pink0", "pink noise, 0 dB SNR", _noise(add_pink_noise, 0.0)),
    Degradation("reverb", "room reverb, RT60 0.4-0.8 s, 40-60% wet", _reverb_room),
    Degradation("mp3_32k", "MP3 32 kbit/s CBR (LAME) at 44.1 kHz", _mp3_32k),
    Degradation("opus_32k", "Opus 32 kbit/s VBR at 48 kHz", _opus_32k),
    *(
        Degradation(
            f"speed{percent:+d}",
            f"speed {percent:+d}% (pitch and tempo)",
            _timing(speed, 1 + percent / 100),
            1 + percent / 100,
            False,
            1 + percent / 100,
        )
        for percent in (2, -2, 5, -5, 10, -10)
    ),
    *(
        Degradation(
            f"tempo{percent:+d}",
            f"tempo {percent:+d}%, pitch kept (atempo)",
            _timing(tempo, 1 + percent / 100),
            1 + percent / 100,
            False,
        )
        for percent in (5, -5, 10, -10)
    ),
    *(
        Degradation(
            f"pitch{semitones:+g}",
            f"pitch {semitones:+g} semitone{'s' if abs(semitones) != 1 else ''}, duration kept",
            _timing(pitch, semitones),
            pitch_factor=2.0 ** (semitones / 12),
        )
        for semitones in (0.5, -0.5, 1.0, -1.0, 1.5, -1.5)
    ),
    Degradation("telephone", "300-3400 Hz band, 8 kHz, white noise 10 dB SNR", telephone),
    Degradation(
        "phone_mic",
        "phone speaker/mic EQ, reverb, pink noise 10 dB, gain, soft clip",
        phone_microphone,
    ),
    Degradation("gain", "gain change of 6-20 dB up or down (no clipping)", _random_gain),
)
"""All conditions, in table order."""

DEGRADATIONS: dict[str, Degradation] = {d.name: d for d in REGISTRY}
"""Conditions by name."""


def get(name: str) -> Degradation:
    """Look up a degradation by name.

    Raises
    ------
    KeyError
        If no degradation has that name.
    """
    try:
        return DEGRADATIONS[name]
    except KeyError:
        raise KeyError(f"unknown degradation {name!r}; known: {', '.join(DEGRADATIONS)}") from None
