"""Decode any common media file to mono float32 PCM, and check it is usable.

Decoding goes through PyAV and the FFmpeg it bundles (no system ``ffmpeg`` is
needed), so every container and codec that FFmpeg reads is accepted: WAV, FLAC,
Ogg Vorbis, Opus (Ogg and WebM), MP3, AAC/M4A, and the audio track of MP4, MKV,
WebM and MPEG-TS files, at any sample rate, channel count and sample format.

The decoded signal is downmixed to mono by averaging the channels and resampled
with soxr. Decoding runs frame by frame: a duration limit is enforced while
decoding, so an hour-long file is rejected after ``max_seconds`` of audio
instead of being decoded in full.

Every failure is reported as a typed :class:`~acr.errors.MediaError` subclass
carrying a stable ``code``; FFmpeg's own exceptions never escape. The only
exceptions that are not media errors are caller errors about the *path*: a
missing file raises :class:`FileNotFoundError`, a directory
:class:`IsADirectoryError`, an unreadable file :class:`PermissionError`.

Opening the input, the demuxers allowed and FFmpeg's log level are shared
with the video signal: see :mod:`acr.signals.media`.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Final

import av
import av.error
import av.logging
import numpy as np
import soxr
from numpy.typing import NDArray

from acr.errors import (
    CorruptMediaError,
    MediaTooLongError,
    MediaTooShortError,
    NoAudioStreamError,
    SilentMediaError,
    UnsupportedFormatError,
)
from acr.signals.base import MediaSource
from acr.signals.media import (
    PYAV_ERRORS,
    MediaReader,
    describe_error,
    open_media,
    opened_container,
)

__all__ = ["DEFAULT_MAX_BYTES", "decode_audio", "ensure_audible", "resample"]

_log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES: Final[int] = 4 * 1024**3
"""Default cap on the size of a media file: 4 GiB."""

_RESAMPLE_QUALITY: Final = "HQ"
"""soxr quality recipe: 20-bit precision, flat to 91 % of Nyquist."""

_MIN_USABLE_SECONDS: Final = 0.25
"""A damaged stream that yields less audio than this is reported as corrupt."""

_MAX_CONSECUTIVE_ERRORS: Final = 64
"""Give up on a stream after this many failed packets in a row."""

_CHUNK_SAMPLES: Final = 1 << 16
"""Decoded samples gathered before they are handed to the resampler."""

_SILENCE_RMS: Final = 10.0 ** (-60.0 / 20.0)
"""RMS level (-60 dBFS) below which audio counts as silent."""

_RMS_BLOCK: Final = 1 << 20
"""Samples per block when summing squares in float64."""


def decode_audio(
    source: MediaSource,
    *,
    sample_rate: int,
    max_seconds: float | None = None,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
) -> NDArray[np.float32]:
    """Decode any common container and codec to mono float32 at `sample_rate`.

    The best audio stream of the input (as FFmpeg ranks them) is decoded frame
    by frame, its channels are averaged to mono, integer samples are scaled to
    [-1, 1] and the result is resampled to `sample_rate` with soxr. Packets that
    fail to decode are skipped, as media players do, and a truncated file
    yields the audio before the cut.

    Parameters
    ----------
    source : str, os.PathLike, bytes or binary file object
        Path of a media file, the bytes of one, or a file object opened in
        binary mode. A file object is read from its current position and left
        open; it need not be seekable, but MP4 files whose index comes after
        the media data can only be read from a seekable one.
    sample_rate : int
        Sample rate of the returned signal, in Hz.
    max_seconds : float or None, optional
        Longest accepted duration of decoded audio. Decoding stops with
        :class:`~acr.errors.MediaTooLongError` as soon as more than this has
        been decoded; ``None`` accepts any length.
    max_bytes : int or None, optional
        Largest accepted input size in bytes (default :data:`DEFAULT_MAX_BYTES`,
        4 GiB). Paths and bytes are measured before decoding, a seekable file
        object from its position to its end, other file objects while reading.
        ``None`` accepts any size.

    Returns
    -------
    ndarray of float32, shape (n,)
        Mono samples at `sample_rate`, clipped to [-1, 1]. They may be silent
        or very short: use :func:`ensure_audible` to reject unusable audio.

    Raises
    ------
    EmptyMediaError
        The input holds no bytes.
    MediaTooLargeError
        The input is larger than `max_bytes`.
    UnsupportedFormatError
        No accepted demuxer recognises the input, or no decoder exists for its
        audio codec.
    CorruptMediaError
        The container header is damaged, or the audio stream is so damaged or
        truncated that less than 0.25 s of it decodes.
    NoAudioStreamError
        The container has streams but none of them is audio.
    MediaTooLongError
        More than `max_seconds` of audio was decoded.
    FileNotFoundError, IsADirectoryError, PermissionError
        `source` is a path that cannot be opened. These are caller errors and
        are deliberately not turned into media errors.
    OSError
        Reading a file object failed; its exception propagates unchanged.
    ValueError
        `sample_rate`, `max_seconds` or `max_bytes` is not positive.
    TypeError
        `source` is of an unsupported type, or a file object in text mode.

    See Also
    --------
    ensure_audible : Reject audio that is too short or too quiet.
    resample : Resample an in-memory signal the same way.

    Notes
    -----
    Decoded frames are concatenated in order and their timestamps are ignored,
    so a timestamp gap in a damaged stream does not become silence. If the
    sample rate changes mid-stream (as in some broadcast captures), each part
    is resampled from its own rate.

    Only common audio and audio-video demuxers are enabled (see
    ``acr.signals.media.ALLOWED_DEMUXERS``): playlists, concat scripts, SDP files and image
    sequences would make FFmpeg open further files or URLs named inside an
    untrusted upload.

    Examples
    --------
    >>> samples = decode_audio("song.mp3", sample_rate=8000)  # doctest: +SKIP
    >>> samples.dtype, samples.ndim  # doctest: +SKIP
    (dtype('float32'), 1)
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")

    with open_media(source, max_bytes) as reader:
        return _decode(reader, sample_rate=sample_rate, max_seconds=max_seconds)


def _truncated_chunk_file(head: bytes, size: int | None) -> bool:
    """Whether a RIFF (WAV) or IFF (AIFF) header announces more bytes than there are.

    FFmpeg derives the duration of such files from their actual size, so a cut
    cannot be seen in the duration it reports.
    """
    if size is None or len(head) < 12:
        return False
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        announced = int.from_bytes(head[4:8], "little")
    elif head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        announced = int.from_bytes(head[4:8], "big")
    else:
        return False
    return 8 + announced > size + 1  # +1: chunks are padded to an even size


def _decode(
    reader: MediaReader, *, sample_rate: int, max_seconds: float | None
) -> NDArray[np.float32]:
    # Damaged float streams overflow harmlessly.
    with opened_container(reader) as container, np.errstate(all="ignore"):
        return _decode_container(
            container, reader, sample_rate=sample_rate, max_seconds=max_seconds
        )


def _pick_stream(container: av.container.InputContainer, label: str) -> av.AudioStream:
    try:
        best = container.streams.best("audio")
    except PYAV_ERRORS:
        best = None
    if isinstance(best, av.AudioStream):
        return best
    if container.streams.audio:
        return container.streams.audio[0]
    if len(container.streams) == 0:
        raise UnsupportedFormatError(f"{label}: the container holds no media streams")
    kinds = sorted({stream.type for stream in container.streams})
    raise NoAudioStreamError(
        f"{label}: the file has no audio stream (it holds {', '.join(kinds)} streams only)"
    )


def _announced_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float:
    """Duration the container header announces, or 0.0 when it does not say."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return 0.0


def _too_long(label: str, max_seconds: float) -> MediaTooLongError:
    return MediaTooLongError(f"{label}: the sample is longer than the limit of {max_seconds:g} s")


def _decode_container(
    container: av.container.InputContainer,
    reader: MediaReader,
    *,
    sample_rate: int,
    max_seconds: float | None,
) -> NDArray[np.float32]:
    label = reader.label
    stream = _pick_stream(container, label)
    codec = stream.codec_context
    if codec is None:
        raise UnsupportedFormatError(
            f"{label}: no decoder for the audio codec {stream.codec.name!r}"
        )
    resampler = _MonoResampler(sample_rate)
    limit = math.inf if max_seconds is None else max_seconds
    decoded = 0.0  # seconds of audio decoded so far
    errors = 0
    consecutive = 0
    last_error: BaseException | None = None
    packets = container.demux(stream)
    while consecutive < _MAX_CONSECUTIVE_ERRORS:
        try:
            packet = next(packets, None)
        except PYAV_ERRORS as exc:
            reader.reraise_failure(exc)
            # A damaged container: start reading again where the demuxer stopped;
            # it resynchronises on the next valid unit or reports the end.
            errors, consecutive, last_error = errors + 1, consecutive + 1, exc
            packets = container.demux(stream)
            continue
        if packet is None:
            break  # PyAV ends with empty packets, which flushed the decoder
        try:
            for frame in codec.decode(packet):
                rate = frame.sample_rate
                if frame.samples > 0 and rate > 0:
                    resampler.push(_frame_to_mono(frame), rate)
                    decoded += frame.samples / rate
                    if decoded > limit:
                        raise _too_long(label, limit)
        except PYAV_ERRORS as exc:
            if isinstance(exc, av.error.DecoderNotFoundError | av.error.PatchWelcomeError):
                raise UnsupportedFormatError(
                    f"{label}: cannot decode the audio codec {stream.codec.name!r}: "
                    f"{describe_error(exc)}"
                ) from exc
            errors, consecutive, last_error = errors + 1, consecutive + 1, exc
            continue
        consecutive = 0
    reader.reraise_failure(None)

    if decoded < _MIN_USABLE_SECONDS:
        if errors and last_error is not None:
            raise CorruptMediaError(
                f"{label}: the audio stream is damaged, {decoded:.2f} s of it decoded: "
                f"{describe_error(last_error)}"
            )
        announced = _announced_seconds(container, stream)
        if announced > decoded + _MIN_USABLE_SECONDS:
            raise CorruptMediaError(
                f"{label}: the file is truncated, {decoded:.2f} s of the {announced:.2f} s "
                "it announces decoded"
            )
        if _truncated_chunk_file(reader.head, reader.size):
            raise CorruptMediaError(
                f"{label}: the file is truncated, its header announces more data than "
                f"it holds ({decoded:.2f} s decoded)"
            )
    elif errors and last_error is not None:
        _log.info(
            "%s: skipped %d damaged packets, decoded %.2f s: %s",
            label,
            errors,
            decoded,
            describe_error(last_error),
        )
    return resampler.finish()


# Sample format name -> (dtype, value of silence, scale to [-1, 1]).
_SAMPLE_FORMATS: Final[dict[str, tuple[type[np.generic], float, float]]] = {
    "u8": (np.uint8, 128.0, 1.0 / 128),
    "s16": (np.int16, 0.0, 1.0 / 2**15),
    "s32": (np.int32, 0.0, 1.0 / 2**31),
    "s64": (np.int64, 0.0, 1.0 / 2**63),
    "flt": (np.float32, 0.0, 1.0),
    "dbl": (np.float64, 0.0, 1.0),
}
_SAMPLE_FORMATS.update({f"{name}p": spec for name, spec in list(_SAMPLE_FORMATS.items())})


def _frame_to_mono(frame: av.AudioFrame) -> NDArray[np.float32]:
    """Average the channels of a decoded frame into float32 samples in [-1, 1].

    The planes are read in place, which costs a third of ``to_ndarray``: a
    planar format has one plane per channel, a packed format one plane of
    interleaved samples. Planes may be padded, hence the explicit counts.
    """
    fmt = frame.format
    spec = _SAMPLE_FORMATS.get(fmt.name)
    if spec is None:
        raise ValueError(f"unsupported sample format {fmt.name!r}")
    dtype, offset, scale = spec
    n = frame.samples
    planes: Any = frame.planes  # each plane exports the buffer protocol
    acc = np.float32 if dtype in (np.float32, np.int16, np.uint8) else np.float64
    channels: int
    total: NDArray[Any]
    if fmt.is_planar:
        channels = len(planes)
        total = np.frombuffer(planes[0], dtype, n)
        if channels > 1:
            total = np.add(total, np.frombuffer(planes[1], dtype, n), dtype=acc)
            for plane in planes[2:]:
                total += np.frombuffer(plane, dtype, n)
    else:
        channels = frame.layout.nb_channels or len(frame.layout.channels) or 1
        total = np.frombuffer(planes[0], dtype, n * channels)
        if channels > 1:
            total = total.reshape(n, channels).sum(axis=1, dtype=acc)
    if dtype is np.float32:
        if channels > 1:
            total *= np.float32(1.0 / channels)  # a fresh array: safe to scale in place
        return total
    if offset:
        total = total - offset * channels
    result: NDArray[np.float32] = (total * (scale / channels)).astype(np.float32)
    return result


class _MonoResampler:
    """Resample a mono signal arriving in pieces, following sample rate changes."""

    def __init__(self, target_rate: int) -> None:
        self._target = target_rate
        self._rate = 0
        self._stream: Any = None
        self._pending: list[NDArray[np.float32]] = []
        self._pending_samples = 0
        self._out: list[NDArray[np.float32]] = []

    def push(self, samples: NDArray[np.float32], rate: int) -> None:
        if rate != self._rate:
            self._drain(last=True)
            self._rate = rate
            if rate != self._target:
                self._stream = soxr.ResampleStream(
                    rate, self._target, 1, dtype="float32", quality=_RESAMPLE_QUALITY
                )
        self._pending.append(samples)
        self._pending_samples += samples.shape[0]
        if self._pending_samples >= _CHUNK_SAMPLES:
            self._drain(last=False)

    def _drain(self, *, last: bool) -> None:
        if self._pending:
            chunk = np.concatenate(self._pending)
            if not np.isfinite(chunk).all():  # garbage decoded as float samples
                np.nan_to_num(chunk, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
                np.clip(chunk, -1.0, 1.0, out=chunk)
        elif last and self._stream is not None:
            chunk = np.zeros(0, dtype=np.float32)
        else:
            return
        self._pending = []
        self._pending_samples = 0
        if self._stream is None:
            self._out.append(chunk)
        else:
            self._out.append(np.asarray(self._stream.resample_chunk(chunk, last=last)))
        if last:
            self._stream = None
            self._rate = 0

    def finish(self) -> NDArray[np.float32]:
        self._drain(last=True)
        if not self._out:
            return np.zeros(0, dtype=np.float32)
        out = np.concatenate(self._out).astype(np.float32, copy=False)
        np.clip(out, -1.0, 1.0, out=out)
        return out


def resample(
    samples: NDArray[np.floating[Any]], source_rate: int, target_rate: int
) -> NDArray[np.float32]:
    """Resample a signal with soxr's high-quality (``"HQ"``) filter.

    Parameters
    ----------
    samples : ndarray of floating, shape (n,) or (n, channels)
        Signal to resample, one column per channel.
    source_rate : int
        Sample rate of `samples`, in Hz.
    target_rate : int
        Sample rate of the result, in Hz.

    Returns
    -------
    ndarray of float32, shape (m,) or (m, channels)
        The resampled signal, ``m = round(n * target_rate / source_rate)``. When
        the rates are equal the samples are returned as float32 unchanged.

    Raises
    ------
    ValueError
        A rate is not positive or `samples` has more than two dimensions.

    Examples
    --------
    >>> x = np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)
    >>> resample(x, 44100, 8000).shape
    (8000,)
    """
    if source_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {source_rate} and {target_rate}")
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"samples must be 1-D or 2-D (frames, channels), got {x.ndim}-D")
    if source_rate == target_rate:
        return x
    if x.shape[0] == 0:
        return np.zeros((0, *x.shape[1:]), dtype=np.float32)
    out = soxr.resample(x, source_rate, target_rate, quality=_RESAMPLE_QUALITY)
    return np.asarray(out, dtype=np.float32)


def ensure_audible(
    samples: NDArray[np.float32], *, sample_rate: int, min_seconds: float = 0.5
) -> None:
    """Check that decoded audio is long and loud enough to fingerprint.

    Parameters
    ----------
    samples : ndarray of float32, shape (n,)
        Mono signal in [-1, 1], as returned by :func:`decode_audio`.
    sample_rate : int
        Sample rate of `samples`, in Hz.
    min_seconds : float, optional
        Shortest accepted duration, 0.5 s by default.

    Raises
    ------
    MediaTooShortError
        The signal lasts less than `min_seconds`.
    SilentMediaError
        The signal is digital silence, or its RMS level (after removing any DC
        offset) is below -60 dBFS.
    ValueError
        `sample_rate` is not positive.

    Examples
    --------
    >>> ensure_audible(np.zeros(8000, dtype=np.float32), sample_rate=8000)
    Traceback (most recent call last):
        ...
    acr.errors.SilentMediaError: the audio is digital silence
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    x = np.asarray(samples).reshape(-1)
    seconds = x.shape[0] / sample_rate
    if seconds < min_seconds:
        raise MediaTooShortError(
            f"the audio lasts {seconds:.2f} s, shorter than the minimum of {min_seconds:g} s"
        )
    if not np.any(x):
        raise SilentMediaError("the audio is digital silence")
    total = 0.0
    squares = 0.0
    for start in range(0, x.shape[0], _RMS_BLOCK):
        block = x[start : start + _RMS_BLOCK].astype(np.float64)
        total += float(block.sum())
        # Not np.dot: a BLAS call, whose threads spin on a busy machine (8 ms, not 0.07).
        squares += float(np.einsum("i,i->", block, block))
    mean = total / x.shape[0]
    rms = math.sqrt(max(0.0, squares / x.shape[0] - mean * mean))
    if not rms >= _SILENCE_RMS:
        level = 20.0 * math.log10(rms) if rms > 0 else -math.inf
        raise SilentMediaError(
            f"the audio is too quiet to fingerprint ({level:.1f} dBFS RMS, "
            f"the minimum is {20.0 * math.log10(_SILENCE_RMS):.0f} dBFS)"
        )
