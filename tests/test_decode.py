"""Tests of acr.signals.audio.decode.

All media is generated at test time with PyAV's encoders: a 3 s test signal of
three tones (440 Hz dominant) plus a little noise, in every container, codec,
channel count, sample rate and sample format the decoder must read.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

import av
import numpy as np
import pytest
from numpy.typing import NDArray

from acr.errors import (
    AcrError,
    CorruptMediaError,
    EmptyMediaError,
    MediaError,
    MediaTooLargeError,
    MediaTooLongError,
    MediaTooShortError,
    NoAudioStreamError,
    SilentMediaError,
    UnsupportedFormatError,
)
from acr.signals.audio.decode import (
    DEFAULT_MAX_BYTES,
    decode_audio,
    ensure_audible,
    resample,
)

OUT_RATE = 8000
SECONDS = 3.0
TONES = ((440.0, 0.5), (1250.0, 0.15), (2900.0, 0.1))
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def make_signal(rate: int, channels: int, seconds: float = SECONDS, seed: int = 0) -> NDArray[Any]:
    """Tones common to every channel plus independent noise, shape (channels, n)."""
    t = np.arange(round(rate * seconds)) / rate
    base = sum(amp * np.sin(2 * np.pi * freq * t) for freq, amp in TONES)
    rng = np.random.default_rng(seed)
    noise = 0.02 * rng.standard_normal((channels, t.size))
    return (base + noise).astype(np.float32)


def write_media(
    path: Path,
    codec: str,
    signal: NDArray[Any],
    rate: int,
    *,
    sample_fmt: str | None = None,
    options: dict[str, str] | None = None,
    video: bool = False,
    audio: bool = True,
) -> Path:
    """Encode `signal` (channels, n) with PyAV; optionally add an H.264 video stream."""
    channels = signal.shape[0]
    layout = LAYOUTS[channels]
    with av.open(str(path), "w") as out:
        astream: av.AudioStream | None = None
        if audio:
            added = out.add_stream(codec, rate=rate, layout=layout, options=options or {})
            assert isinstance(added, av.AudioStream)
            astream = added
            if sample_fmt:
                astream.format = sample_fmt
        vstream = None
        if video:
            vstream = out.add_stream("libx264", rate=10)
            vstream.width = vstream.height = 64
            vstream.pix_fmt = "yuv420p"
        if astream is not None:
            for start in range(0, signal.shape[1], 1024):
                chunk = np.ascontiguousarray(signal[:, start : start + 1024])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                frame.sample_rate = rate
                frame.pts = start
                out.mux(astream.encode(frame))
            out.mux(astream.encode(None))
        if vstream is not None:
            for index in range(round(signal.shape[1] / rate * 10)):
                image = np.full((64, 64, 3), index * 8 % 256, dtype=np.uint8)
                vframe = av.VideoFrame.from_ndarray(image, format="rgb24")
                vframe.pts = index
                out.mux(vstream.encode(vframe))
            out.mux(vstream.encode(None))
    return path


def dominant_frequency(samples: NDArray[np.float32], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)


def tone_amplitude(samples: NDArray[np.float32], rate: int, freq: float) -> float:
    """Amplitude of the sinusoid at `freq` (least squares on sine and cosine)."""
    t = np.arange(samples.size) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, samples.astype(np.float64), rcond=None)
    return float(np.hypot(*coef))


def best_correlation(decoded: NDArray[np.float32], reference: NDArray[np.float32]) -> float:
    """Peak normalised cross-correlation within +-0.1 s (codecs add delay)."""
    n = min(decoded.size, reference.size)
    a = decoded[:n].astype(np.float64)
    b = reference[:n].astype(np.float64)
    size = 2 * n
    xcorr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    max_lag = OUT_RATE // 10
    window = np.concatenate([xcorr[: max_lag + 1], xcorr[-max_lag:]])
    return float(window.max() / (np.linalg.norm(a) * np.linalg.norm(b)))


# name, codec, rate, extra encoder arguments
FORMATS: dict[str, tuple[str, str, int, dict[str, Any]]] = {
    "wav_s16": ("s16.wav", "pcm_s16le", 44100, {}),
    "wav_f32": ("f32.wav", "pcm_f32le", 48000, {}),
    "flac": ("a.flac", "flac", 44100, {}),
    "ogg_vorbis": ("a.ogg", "vorbis", 44100, {"options": {"strict": "experimental"}}),
    "ogg_opus": ("a.opus", "libopus", 48000, {}),
    "webm_opus": ("a.webm", "libopus", 48000, {}),
    "mp3": ("a.mp3", "libmp3lame", 44100, {}),
    "m4a_aac": ("a.m4a", "aac", 44100, {}),
    "mp4_aac_h264": ("av.mp4", "aac", 44100, {"video": True}),
    "mkv_aac": ("a.mkv", "aac", 48000, {}),
    "ts_mp2": ("a.ts", "mp2", 48000, {}),
    "ts_aac_h264": ("av.ts", "aac", 48000, {"video": True}),
}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every entry of FORMATS, encoded once for the module (stereo, 3 s)."""
    folder = tmp_path_factory.mktemp("media")
    return {
        key: write_media(folder / name, codec, make_signal(rate, 2), rate, **extra)
        for key, (name, codec, rate, extra) in FORMATS.items()
    }


@pytest.fixture(scope="module")
def reference() -> NDArray[np.float32]:
    """The test signal averaged to mono at OUT_RATE."""
    return resample(make_signal(44100, 2).mean(axis=0), 44100, OUT_RATE)


# --- every format ----------------------------------------------------------


@pytest.mark.parametrize("key", list(FORMATS))
def test_every_format_decodes(
    key: str, media: dict[str, Path], reference: NDArray[np.float32]
) -> None:
    samples = decode_audio(media[key], sample_rate=OUT_RATE)
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert abs(samples.size / OUT_RATE - SECONDS) < 0.1
    assert np.abs(samples).max() <= 1.0
    assert dominant_frequency(samples, OUT_RATE) == pytest.approx(440.0, abs=3.0)
    assert tone_amplitude(samples, OUT_RATE, 440.0) == pytest.approx(0.5, rel=0.1)
    assert best_correlation(samples, reference) > 0.9


def test_mp4_picks_the_audio_stream_next_to_video(media: dict[str, Path]) -> None:
    with av.open(str(media["mp4_aac_h264"])) as container:
        assert len(container.streams.video) == 1
        assert len(container.streams.audio) == 1
    samples = decode_audio(media["mp4_aac_h264"], sample_rate=16000)
    assert abs(samples.size / 16000 - SECONDS) < 0.1


# --- channels, rates, sample formats --------------------------------------


def per_channel_tones(rate: int, channels: int) -> tuple[NDArray[Any], list[float]]:
    """A different tone of amplitude 0.5 on each channel."""
    freqs = [300.0 + 250.0 * k for k in range(channels)]
    t = np.arange(round(rate * SECONDS)) / rate
    signal = np.stack([0.5 * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)
    return signal, freqs


@pytest.mark.parametrize(
    ("name", "codec", "channels", "sample_fmt"),
    [
        ("mono.wav", "pcm_s16le", 1, None),  # packed s16, one channel
        ("stereo.wav", "pcm_s16le", 2, None),  # packed s16, interleaved
        ("six.wav", "pcm_s16le", 6, None),  # packed s16, 5.1
        ("six.flac", "flac", 6, None),  # packed s16 from a lossless codec
        ("six.nut", "pcm_s16le_planar", 6, None),  # planar s16
        ("six.m4a", "alac", 6, "s32p"),  # planar s32
        ("stereo.wv", "wavpack", 2, "fltp"),  # planar float
    ],
)
def test_channels_are_averaged(
    tmp_path: Path, name: str, codec: str, channels: int, sample_fmt: str | None
) -> None:
    signal, freqs = per_channel_tones(44100, channels)
    path = write_media(tmp_path / name, codec, signal, 44100, sample_fmt=sample_fmt)
    samples = decode_audio(path, sample_rate=OUT_RATE)
    assert abs(samples.size / OUT_RATE - SECONDS) < 0.05
    for freq in freqs:
        assert tone_amplitude(samples, OUT_RATE, freq) == pytest.approx(0.5 / channels, rel=0.02)


@pytest.mark.parametrize(("name", "codec"), [("inverse.wav", "pcm_s16le"), ("inverse.m4a", "aac")])
def test_opposite_channels_cancel(tmp_path: Path, name: str, codec: str) -> None:
    """Averaging (not taking the first channel), for packed and planar layouts."""
    left = make_signal(44100, 1)[0]
    path = write_media(tmp_path / name, codec, np.stack([left, -left]), 44100)
    samples = decode_audio(path, sample_rate=OUT_RATE)
    assert samples.size > 2 * OUT_RATE
    assert np.sqrt(np.mean(samples**2)) < 0.01


@pytest.mark.parametrize(
    ("codec", "tolerance"),
    [
        ("pcm_u8", 1.5 / 128),
        ("pcm_s16le", 1e-4),
        ("pcm_s24le", 1e-6),
        ("pcm_s32le", 1e-6),
        ("pcm_f32le", 1e-7),
        ("pcm_f64le", 1e-7),
    ],
)
def test_integer_and_float_formats_are_scaled(tmp_path: Path, codec: str, tolerance: float) -> None:
    signal = make_signal(22050, 2) * 0.9
    path = write_media(tmp_path / f"{codec}.wav", codec, signal, 22050)
    samples = decode_audio(path, sample_rate=22050)  # same rate: no resampling
    expected = signal.astype(np.float64).mean(axis=0)
    assert samples.shape == expected.shape
    assert np.abs(samples - expected).max() < tolerance


@pytest.mark.parametrize(
    ("rate", "name", "codec"),
    [
        (8000, "r8k.wav", "pcm_s16le"),
        (22050, "r22k.wav", "pcm_s16le"),
        (96000, "r96k.wav", "pcm_s16le"),
        (96000, "r96k.flac", "flac"),
        (22050, "r22k.mp3", "libmp3lame"),
    ],
)
def test_any_input_rate(tmp_path: Path, rate: int, name: str, codec: str) -> None:
    path = write_media(tmp_path / name, codec, make_signal(rate, 2), rate)
    for out_rate in (OUT_RATE, 16000):
        samples = decode_audio(path, sample_rate=out_rate)
        assert abs(samples.size / out_rate - SECONDS) < 0.1
        assert dominant_frequency(samples, out_rate) == pytest.approx(440.0, abs=3.0)
        assert tone_amplitude(samples, out_rate, 1250.0) == pytest.approx(0.15, rel=0.1)


def test_sample_rate_change_mid_stream(tmp_path: Path) -> None:
    first = write_media(tmp_path / "a.mp2", "mp2", make_signal(44100, 2, 2.0), 44100)
    second = write_media(tmp_path / "b.mp2", "mp2", make_signal(48000, 2, 2.0), 48000)
    joined = first.read_bytes() + second.read_bytes()
    samples = decode_audio(joined, sample_rate=OUT_RATE)
    assert abs(samples.size / OUT_RATE - 4.0) < 0.1
    for half in (samples[: 2 * OUT_RATE], samples[2 * OUT_RATE :]):
        assert dominant_frequency(half, OUT_RATE) == pytest.approx(440.0, abs=5.0)


# --- sources ----------------------------------------------------------------


class NonSeekable(io.RawIOBase):
    """A pipe-like reader that counts the bytes it gives."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.bytes_read = 0

    def as_source(self) -> BinaryIO:
        """The same object, typed as the binary file decode_audio accepts."""
        return cast(BinaryIO, self)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        self.bytes_read += len(chunk)
        return len(chunk)


@pytest.mark.parametrize("key", ["wav_s16", "mp3", "ogg_vorbis", "mkv_aac"])
def test_bytes_and_file_objects_decode_like_paths(key: str, media: dict[str, Path]) -> None:
    path = media[key]
    from_path = decode_audio(path, sample_rate=OUT_RATE)
    data = path.read_bytes()
    np.testing.assert_array_equal(decode_audio(data, sample_rate=OUT_RATE), from_path)
    np.testing.assert_array_equal(decode_audio(str(path), sample_rate=OUT_RATE), from_path)
    with path.open("rb") as handle:
        np.testing.assert_array_equal(decode_audio(handle, sample_rate=OUT_RATE), from_path)
        assert not handle.closed  # the caller's file is left open
    # From a pipe the MP3 demuxer cannot find the end of the file, so it cannot
    # trim the encoder's padding there; everything before it is identical.
    from_pipe = decode_audio(NonSeekable(data).as_source(), sample_rate=OUT_RATE)
    assert abs(from_pipe.size - from_path.size) < 0.01 * OUT_RATE
    head = min(from_pipe.size, from_path.size) - OUT_RATE // 10
    np.testing.assert_array_equal(from_pipe[:head], from_path[:head])


class FailingPipe(NonSeekable):
    """A pipe that breaks after `limit` bytes, like a dropped upload."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__(data)
        self.limit = limit

    def readinto(self, buffer: Any) -> int:
        if self.bytes_read >= self.limit:
            raise ConnectionResetError("upload interrupted")
        return super().readinto(buffer[: self.limit - self.bytes_read])


@pytest.mark.parametrize("limit", [0, 5000, 200_000])
def test_read_errors_of_the_caller_stream_propagate(media: dict[str, Path], limit: int) -> None:
    data = media["wav_s16"].read_bytes()
    with pytest.raises(ConnectionResetError, match="upload interrupted"):
        decode_audio(FailingPipe(data, limit).as_source(), sample_rate=OUT_RATE)


def test_file_object_is_read_from_its_position(media: dict[str, Path]) -> None:
    data = media["flac"].read_bytes()
    handle = io.BytesIO(b"junk before the file" + data)
    handle.seek(20)
    np.testing.assert_array_equal(
        decode_audio(handle, sample_rate=OUT_RATE),
        decode_audio(data, sample_rate=OUT_RATE),
    )


def test_missing_path_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        decode_audio(tmp_path / "missing.wav", sample_rate=OUT_RATE)
    with pytest.raises(IsADirectoryError):
        decode_audio(tmp_path, sample_rate=OUT_RATE)


def test_bad_arguments(media: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        decode_audio(media["wav_s16"], sample_rate=0)
    with pytest.raises(ValueError, match="max_seconds"):
        decode_audio(media["wav_s16"], sample_rate=OUT_RATE, max_seconds=0)
    with pytest.raises(TypeError):
        decode_audio(12345, sample_rate=OUT_RATE)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="binary mode"):
        decode_audio(io.StringIO("text"), sample_rate=OUT_RATE)  # type: ignore[arg-type]


# --- errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "make_source",
    [
        lambda path: path,
        lambda path: path.read_bytes(),
        lambda path: io.BytesIO(path.read_bytes()),
        lambda path: NonSeekable(path.read_bytes()).as_source(),
    ],
    ids=["path", "bytes", "file", "pipe"],
)
def test_empty_input(tmp_path: Path, make_source: Callable[[Path], Any]) -> None:
    path = tmp_path / "empty.mp3"
    path.write_bytes(b"")
    with pytest.raises(EmptyMediaError) as caught:
        decode_audio(make_source(path), sample_rate=OUT_RATE)
    assert caught.value.code == "empty_media"


@pytest.mark.parametrize(
    "data",
    [
        *(np.random.default_rng(seed).bytes(20_000) for seed in range(4)),
        b"just some text, certainly not audio\n" * 100,
        b"\x89PNG\r\n\x1a\n" + bytes(200),
        # An HLS playlist would make FFmpeg open the files it lists.
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n",
        b"ffconcat version 1.0\nfile /etc/hostname\n",
    ],
    ids=["random0", "random1", "random2", "random3", "text", "png", "hls", "concat"],
)
def test_unrecognised_bytes(data: bytes) -> None:
    with pytest.raises(UnsupportedFormatError) as caught:
        decode_audio(data, sample_rate=OUT_RATE)
    assert caught.value.code == "unsupported_format"


@pytest.mark.parametrize("key", ["wav_s16", "wav_f32", "mp3", "flac", "ogg_vorbis", "m4a_aac"])
def test_truncated_to_100_bytes(key: str, media: dict[str, Path]) -> None:
    with pytest.raises((CorruptMediaError, UnsupportedFormatError)):
        decode_audio(media[key].read_bytes()[:100], sample_rate=OUT_RATE)


@pytest.mark.parametrize("key", ["wav_s16", "mp3", "flac", "webm_opus", "mkv_aac", "ts_mp2"])
def test_truncated_to_60_percent_decodes_the_first_part(key: str, media: dict[str, Path]) -> None:
    data = media[key].read_bytes()
    samples = decode_audio(data[: int(len(data) * 0.6)], sample_rate=OUT_RATE)
    assert 1.4 < samples.size / OUT_RATE < 2.0
    assert dominant_frequency(samples, OUT_RATE) == pytest.approx(440.0, abs=3.0)


def test_truncated_ogg_keeps_its_complete_pages(media: dict[str, Path]) -> None:
    # The Ogg muxer writes pages of about one second: the cut page is lost.
    data = media["ogg_vorbis"].read_bytes()
    samples = decode_audio(data[: int(len(data) * 0.6)], sample_rate=OUT_RATE)
    assert 0.9 < samples.size / OUT_RATE < 2.0


def test_moov_at_end_truncated_mp4_is_corrupt(media: dict[str, Path]) -> None:
    # Without its index (written last) an MP4 cannot be read at all.
    data = media["m4a_aac"].read_bytes()
    with pytest.raises(CorruptMediaError):
        decode_audio(data[: int(len(data) * 0.6)], sample_rate=OUT_RATE)


@pytest.mark.parametrize("key", list(FORMATS))
@pytest.mark.parametrize("damage", ["insert", "overwrite", "append", "zero"])
def test_damaged_files_never_raise_untyped_errors(
    key: str, damage: str, media: dict[str, Path]
) -> None:
    data = media[key].read_bytes()
    junk = np.random.default_rng(7).bytes(4000)
    middle = len(data) // 2
    damaged = {
        "insert": data[:middle] + junk + data[middle:],
        "overwrite": data[:middle] + junk + data[middle + len(junk) :],
        "append": data + junk,
        "zero": data[:middle] + bytes(len(junk)) + data[middle + len(junk) :],
    }[damage]
    try:
        samples = decode_audio(damaged, sample_rate=OUT_RATE)
    except MediaError as exc:  # typed, with a message; never a raw PyAV error
        assert exc.message
    else:
        assert samples.dtype == np.float32
        assert np.isfinite(samples).all()
        if damage == "append":
            assert abs(samples.size / OUT_RATE - SECONDS) < 0.15


def test_video_without_audio(tmp_path: Path) -> None:
    path = write_media(
        tmp_path / "video.mp4", "", make_signal(44100, 1, 1.0), 44100, video=True, audio=False
    )
    with pytest.raises(NoAudioStreamError, match="no audio stream") as caught:
        decode_audio(path, sample_rate=OUT_RATE)
    assert "video.mp4" in str(caught.value)
    assert caught.value.code == "no_audio_stream"


@pytest.mark.parametrize("key", ["wav_s16", "mp3", "ogg_opus", "mp4_aac_h264"])
def test_max_seconds(key: str, media: dict[str, Path]) -> None:
    with pytest.raises(MediaTooLongError, match=r"longer than the limit of 1\.5 s") as caught:
        decode_audio(media[key], sample_rate=OUT_RATE, max_seconds=1.5)
    assert caught.value.code == "media_too_long"
    assert decode_audio(media[key], sample_rate=OUT_RATE, max_seconds=10).size > 0


def test_max_seconds_stops_decoding_early(tmp_path: Path) -> None:
    rate = 16000
    path = write_media(tmp_path / "long.wav", "pcm_s16le", make_signal(rate, 1, 120.0), rate)
    pipe = NonSeekable(path.read_bytes())
    with pytest.raises(MediaTooLongError):
        decode_audio(pipe.as_source(), sample_rate=OUT_RATE, max_seconds=2.0)
    assert pipe.bytes_read < path.stat().st_size / 10


def test_max_bytes(media: dict[str, Path]) -> None:
    path = media["flac"]
    size = path.stat().st_size
    data = path.read_bytes()
    for source in (path, data, io.BytesIO(data)):
        with pytest.raises(MediaTooLargeError) as caught:
            decode_audio(source, sample_rate=OUT_RATE, max_bytes=1000)
        assert str(size) in str(caught.value)
        assert "1000" in str(caught.value)
        assert caught.value.code == "media_too_large"
    with pytest.raises(MediaTooLargeError, match="1000"):
        decode_audio(NonSeekable(data).as_source(), sample_rate=OUT_RATE, max_bytes=1000)
    assert decode_audio(path, sample_rate=OUT_RATE, max_bytes=size).size > 0
    assert decode_audio(path, sample_rate=OUT_RATE, max_bytes=None).size > 0
    assert DEFAULT_MAX_BYTES == 4 * 1024**3


def test_errors_are_acr_errors_with_codes(tmp_path: Path) -> None:
    for error in (
        EmptyMediaError,
        CorruptMediaError,
        UnsupportedFormatError,
        NoAudioStreamError,
        MediaTooLongError,
        MediaTooLargeError,
    ):
        assert issubclass(error, AcrError)
    path = tmp_path / "garbage.mp3"
    path.write_bytes(b"\x00" * 5000)
    with pytest.raises(MediaError) as caught:
        decode_audio(path, sample_rate=OUT_RATE)
    assert "garbage.mp3" in caught.value.message


# --- ensure_audible and resample --------------------------------------------


def test_ensure_audible() -> None:
    rate = OUT_RATE
    loud = resample(make_signal(44100, 1)[0], 44100, rate)
    ensure_audible(loud, sample_rate=rate)
    with pytest.raises(SilentMediaError, match="silence"):
        ensure_audible(np.zeros(rate, dtype=np.float32), sample_rate=rate)
    with pytest.raises(MediaTooShortError) as caught:
        ensure_audible(loud[: rate // 10], sample_rate=rate)
    assert caught.value.code == "media_too_short"
    quiet = (10 ** (-70 / 20) * np.sqrt(2) * np.sin(np.arange(rate) / 3)).astype(np.float32)
    with pytest.raises(SilentMediaError, match="quiet"):
        ensure_audible(quiet, sample_rate=rate)
    with pytest.raises(SilentMediaError):  # a DC offset is not sound
        ensure_audible(np.full(rate, 0.3, dtype=np.float32), sample_rate=rate)
    ensure_audible((quiet * 100).astype(np.float32), sample_rate=rate)  # -30 dBFS
    ensure_audible(loud[: rate // 10], sample_rate=rate, min_seconds=0.05)


def test_decode_returns_silence_without_judging_it(tmp_path: Path) -> None:
    path = write_media(
        tmp_path / "silence.wav", "pcm_s16le", np.zeros((2, 44100), np.float32), 44100
    )
    samples = decode_audio(path, sample_rate=OUT_RATE)
    assert samples.size == OUT_RATE
    assert not samples.any()


def test_resample() -> None:
    signal = make_signal(44100, 1)[0].astype(np.float64)
    out = resample(signal, 44100, OUT_RATE)
    assert out.dtype == np.float32
    assert out.shape == (round(SECONDS * OUT_RATE),)
    assert tone_amplitude(out, OUT_RATE, 440.0) == pytest.approx(0.5, rel=0.01)
    # Content above the new Nyquist frequency is filtered out, not aliased.
    high = np.sin(2 * np.pi * 6000 * np.arange(44100) / 44100)
    assert np.abs(resample(high, 44100, OUT_RATE)[100:-100]).max() < 0.01
    same = resample(signal, 44100, 44100)
    assert same.dtype == np.float32
    np.testing.assert_allclose(same, signal, atol=1e-6)
    stereo = resample(np.stack([signal, -signal], axis=1), 44100, 16000)
    assert stereo.shape == (48000, 2)
    assert resample(np.zeros(0), 44100, 8000).shape == (0,)
    with pytest.raises(ValueError):
        resample(signal, 0, 8000)
