"""Stage 1: decode any common video and sample its frames at a fixed rate, with their times.

Decoding goes through PyAV's bundled FFmpeg, like the audio decoder, and shares
its input handling and error reporting (:mod:`acr.signals.audio.decode`):
MP4/MOV, Matroska/WebM, MPEG-TS/PS, AVI, FLV, raw H.264/H.265 and IVF (VP8/VP9)
streams, single images (PNG, JPEG, BMP, WebP), any codec FFmpeg decodes.

Only the frames to be hashed are converted: a frame is sampled when its
presentation time reaches the next multiple of ``1 / fps``, and its
luminance is scaled (area averaging) so that its longer side is at most
:data:`WORKING_SIZE` pixels before it leaves FFmpeg. Sampled frames come out in chunks, so a
two-hour reference is hashed in bounded memory.

Times are the frames' own presentation times, counted from the first
decoded frame: frame-rate changes, dropped and duplicated frames only move
samples by a fraction of a source frame, which temporal alignment tolerates.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Final

import av
import av.error
import numpy as np
from numpy.typing import NDArray

from acr.errors import (
    CorruptMediaError,
    MediaTooLargeError,
    MediaTooLongError,
    MediaTooShortError,
    NoVideoStreamError,
    UnsupportedFormatError,
)
from acr.signals.audio.decode import DEFAULT_MAX_BYTES
from acr.signals.base import MediaSource
from acr.signals.media import (
    ALLOWED_DEMUXERS,
    PYAV_ERRORS,
    MediaReader,
    describe_error,
    open_media,
    opened_container,
)

__all__ = [
    "MAX_PIXELS",
    "WORKING_SIZE",
    "FrameChunk",
    "sample_frames",
]

WORKING_SIZE: Final = 512
"""Longer side, in pixels, of the frames handed to hashing (PDQ keeps 64x64 of them)."""

MAX_PIXELS: Final = 8192 * 4320
"""Largest accepted picture (8K UHD): a decoded frame must fit in memory many times over."""

MAX_SOURCE_FPS: Final = 300.0
"""Decoded frames per second of media beyond which a stream is refused as absurd."""

CHUNK_FRAMES: Final = 32
"""Sampled frames per chunk: about 5 MB of luminance at the working size."""

_SKIP_ABOVE: Final = 4.0
"""Skip non-reference frames of sources with more than this many frames per sample."""

_SKIPPED_SPACING: Final = 3.0
"""Source frames between decoded frames, at most, when non-reference frames are skipped."""

_MAX_CONSECUTIVE_ERRORS: Final = 64
# Demuxers FFmpeg may pick: the audio decoder's list (so that an audio-only
# file is recognised, and refused for having no pictures), raw video
# elementary streams and single images; never playlists, concat scripts or
# the image2 pattern demuxer, which open further files.
_ALLOWED_DEMUXERS: Final = (
    f"{ALLOWED_DEMUXERS},h264,hevc,m4v,mpegvideo,ivf,obu,mjpeg,png_pipe,jpeg_pipe,"
    "bmp_pipe,webp_pipe,gif,tiff_pipe,ppm_pipe,pgm_pipe"
)


@dataclass(frozen=True)
class FrameChunk:
    """Consecutive sampled frames of one video.

    Attributes
    ----------
    luma : ndarray of uint8, shape (n, h, w)
        Luminance of the frames at the working size, all of one shape.
    times_s : ndarray of float64, shape (n,)
        Presentation time of each frame, from the first decoded frame.
    """

    luma: NDArray[np.uint8]
    times_s: NDArray[np.float64]


@dataclass
class DecodeReport:
    """What decoding saw; complete once the chunks are exhausted."""

    duration_s: float = 0.0
    decoded_frames: int = 0
    damaged_packets: int = 0


def working_size(width: int, height: int) -> tuple[int, int]:
    """Frame size handed to hashing: at most :data:`WORKING_SIZE` on the longer side, even."""
    scale = min(1.0, WORKING_SIZE / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def sample_frames(
    source: MediaSource,
    *,
    fps: float,
    max_seconds: float | None = None,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    report: DecodeReport | None = None,
) -> Generator[FrameChunk, None, None]:
    """Decode the best video stream of `source`, yielding sampled frames in chunks.

    Parameters
    ----------
    source : str, os.PathLike, bytes or binary file object
        A media file, its bytes, or a binary file object (read from its
        current position and left open).
    fps : float
        Sampling rate: one frame per ``1 / fps`` seconds of presentation time.
    max_seconds : float or None
        Longest accepted duration; decoding stops with
        :class:`~acr.errors.MediaTooLongError` past it.
    max_bytes : int or None
        Largest accepted input size.
    report : DecodeReport or None
        Filled in with the duration and counts once the generator is exhausted.

    Yields
    ------
    FrameChunk
        Up to :data:`CHUNK_FRAMES` sampled frames at a time.

    Raises
    ------
    EmptyMediaError, MediaTooLargeError, UnsupportedFormatError, CorruptMediaError
        As for :func:`~acr.signals.audio.decode.decode_audio`; MediaTooLargeError
        also for a picture larger than :data:`MAX_PIXELS`.
    NoVideoStreamError
        The container has streams, but none of them is video.
    MediaTooShortError
        The video stream holds no frame.
    MediaTooLongError
        More than `max_seconds` of video, or absurdly many frames per second of it.
    """
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    with open_media(source, max_bytes) as reader:
        yield from _decode(reader, fps, max_seconds, report or DecodeReport())


def _decode(
    reader: MediaReader, fps: float, max_seconds: float | None, report: DecodeReport
) -> Iterator[FrameChunk]:
    with opened_container(reader, _ALLOWED_DEMUXERS) as container:
        yield from _sample(container, reader, fps, max_seconds, report)


def _pick_stream(container: av.container.InputContainer, label: str) -> av.VideoStream:
    # Cover art of an audio file is a "video" stream of one picture: not a programme.
    moving = [
        stream
        for stream in container.streams.video
        if not stream.disposition & av.stream.Disposition.attached_pic
    ]
    if moving:
        try:
            best = container.streams.best("video")
        except PYAV_ERRORS:
            best = None
        return best if best in moving and isinstance(best, av.VideoStream) else moving[0]
    if len(container.streams) == 0:
        raise UnsupportedFormatError(f"{label}: the container holds no media streams")
    kinds = sorted({"cover art" if s.type == "video" else s.type for s in container.streams})
    raise NoVideoStreamError(
        f"{label}: the file has no video stream (it holds {', '.join(kinds)} streams only)"
    )


def _check_pixels(width: int, height: int, label: str) -> None:
    if width * height > MAX_PIXELS:
        raise MediaTooLargeError(
            f"{label}: the picture is {width}x{height}, larger than the limit of "
            f"{MAX_PIXELS} pixels (8K UHD)"
        )


class _Sampler:
    """Turns decoded frames into chunks of sampled, scaled luminance frames."""

    def __init__(self, fps: float, spacing_s: float, label: str, max_seconds: float | None) -> None:
        self.interval = 1.0 / fps
        # A decoded frame within half the spacing of decoded frames is the nearest one.
        self.tolerance = spacing_s / 2 + 1e-6
        self.label = label
        self.limit = math.inf if max_seconds is None else max_seconds
        self.origin: float | None = None
        self.next_time = 0.0
        self.last_time = -math.inf
        self.size: tuple[int, int] | None = None
        self.frames: list[NDArray[np.uint8]] = []
        self.times: list[float] = []

    def push(self, frame: av.VideoFrame, fallback_time: float, report: DecodeReport) -> None:
        _check_pixels(frame.width, frame.height, self.label)
        report.decoded_frames += 1
        raw = frame.time
        if raw is None or not math.isfinite(raw):
            raw = fallback_time
        if self.origin is None:
            self.origin = raw
        # Damaged streams can step back in time; keep time monotonic for alignment.
        time = max(raw - self.origin, self.last_time if self.times else 0.0)
        report.duration_s = max(report.duration_s, time)
        if time > self.limit:
            raise MediaTooLongError(
                f"{self.label}: the sample is longer than the limit of {self.limit:g} s"
            )
        if report.decoded_frames > MAX_SOURCE_FPS * (time + 1.0):
            raise MediaTooLongError(
                f"{self.label}: {report.decoded_frames} frames in {time:.2f} s of video "
                f"(more than {MAX_SOURCE_FPS:g} frames per second)"
            )
        if time + self.tolerance < self.next_time:
            return
        if self.size is None:
            self.size = working_size(frame.width, frame.height)
        width, height = self.size
        # Luminance straight from FFmpeg (its Y plane, full range): half the cost of RGB.
        scaled = frame.reformat(width=width, height=height, format="gray", interpolation="AREA")
        self.frames.append(np.asarray(scaled.to_ndarray(), dtype=np.uint8))
        self.times.append(time)
        self.last_time = time
        self.next_time = (math.floor(time / self.interval + 0.5) + 1) * self.interval

    def full(self) -> bool:
        return len(self.frames) >= CHUNK_FRAMES

    def take(self) -> FrameChunk:
        chunk = FrameChunk(
            luma=np.stack(self.frames), times_s=np.array(self.times, dtype=np.float64)
        )
        self.frames, self.times = [], []
        return chunk


def _sample(
    container: av.container.InputContainer,
    reader: MediaReader,
    fps: float,
    max_seconds: float | None,
    report: DecodeReport,
) -> Iterator[FrameChunk]:
    label = reader.label
    stream = _pick_stream(container, label)
    codec = stream.codec_context
    if codec is None:
        raise UnsupportedFormatError(
            f"{label}: no decoder for the video codec {stream.codec.name!r}"
        )
    _check_pixels(codec.width, codec.height, label)
    codec.thread_type = "AUTO"
    rate = float(stream.average_rate) if stream.average_rate else 0.0
    frame_s = 1.0 / rate if math.isfinite(rate) and rate > 0 else 1.0 / 25.0
    spacing_s = frame_s
    if rate > _SKIP_ABOVE * fps:
        # Frames no other frame is predicted from (most B-frames) need not be
        # decoded: the rest still come every two or three frames, a tenth of a
        # sampling interval at 25 fps. Decoding 1080p H.264 is 1.4x faster.
        codec.skip_frame = "NONREF"
        spacing_s *= _SKIPPED_SPACING
    sampler = _Sampler(fps, spacing_s, label, max_seconds)
    consecutive = 0
    last_error: BaseException | None = None
    packets = container.demux(stream)
    while consecutive < _MAX_CONSECUTIVE_ERRORS:
        try:
            packet = next(packets, None)
        except PYAV_ERRORS as exc:
            reader.reraise_failure(exc)
            report.damaged_packets += 1
            consecutive, last_error = consecutive + 1, exc
            packets = container.demux(stream)
            continue
        if packet is None:
            break
        try:
            for frame in codec.decode(packet):
                sampler.push(frame, report.decoded_frames * frame_s, report)
                if sampler.full():
                    yield sampler.take()
        except PYAV_ERRORS as exc:
            if isinstance(exc, av.error.DecoderNotFoundError | av.error.PatchWelcomeError):
                raise UnsupportedFormatError(
                    f"{label}: cannot decode the video codec {stream.codec.name!r}: "
                    f"{describe_error(exc)}"
                ) from exc
            report.damaged_packets += 1
            consecutive, last_error = consecutive + 1, exc
            continue
        consecutive = 0
    reader.reraise_failure(None)
    if sampler.frames:
        yield sampler.take()
    if report.decoded_frames == 0:
        if last_error is not None:
            raise CorruptMediaError(
                f"{label}: the video stream is damaged, no frame decoded: "
                f"{describe_error(last_error)}"
            )
        raise MediaTooShortError(f"{label}: the video stream holds no frame")
    # The last frame lasts one frame interval.
    report.duration_s += frame_s
