"""Video files in and out with PyAV: H.264 encoding and decoding of clips.

The benchmark's own decoder (independent of the system under test) cuts query
clips out of the references, and every query is written as a real H.264 file
so that the matcher's decode path is exercised.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray
from PIL import Image

U8 = NDArray[np.uint8]
"""Frames: ``(h, w, 3)`` RGB, or ``(n, h, w, 3)`` for a clip."""

Thumbs = NDArray[np.float32]
"""Grey thumbnails ``(n, 36, 64)``, levels 0-255."""

THUMB_SIZE = (64, 36)

PRESET = "veryfast"
"""x264 preset of every file the benchmark writes."""


@dataclass(frozen=True)
class VideoClip:
    """Decoded frames with their frame rate.

    Attributes
    ----------
    frames : ndarray of uint8, shape (n, h, w, 3)
        RGB frames, evenly spaced.
    fps : float
        Frames per second.
    """

    frames: U8
    fps: float

    @property
    def duration_s(self) -> float:
        """Length of the clip in seconds."""
        return float(self.frames.shape[0]) / self.fps


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def encode_video(
    path: Path,
    frames: Iterable[U8],
    fps: float,
    *,
    crf: int = 23,
    bitrate: int | None = None,
    keyframe_s: float = 2.0,
    threads: int = 1,
) -> int:
    """Write RGB frames to an H.264 (yuv420p) MP4 file.

    Parameters
    ----------
    path : Path
        Output file (``.mp4``).
    frames : iterable of ndarray of uint8, shape (h, w, 3)
        Frames of one size; width and height must be even.
    fps : float
        Frame rate.
    crf : int
        Constant rate factor when ``bitrate`` is None.
    bitrate : int or None
        Target bit rate in bit/s (single pass, with a matching VBV buffer)
        instead of constant quality.
    keyframe_s : float
        Maximum distance between key frames (a broadcast-like GOP).
    threads : int
        Encoder threads.

    Returns
    -------
    int
        Number of frames written.
    """
    rate = _rate(fps)
    count = 0
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.thread_count = threads
        gop = max(1, round(keyframe_s * fps))
        options: dict[str, object] = {
            "preset": PRESET,
            "g": str(gop),
            "keyint_min": str(max(1, gop // 2)),
        }
        if bitrate is None:
            options["crf"] = str(crf)
        else:
            stream.bit_rate = bitrate
            options["maxrate"] = str(bitrate)
            options["bufsize"] = str(bitrate)
        stream.options = options
        for frame in frames:
            if count == 0:
                stream.height, stream.width = frame.shape[:2]
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            container.mux(stream.encode(video_frame))
            count += 1
        container.mux(stream.encode(None))
    return count


def probe(path: Path) -> tuple[float, float, int, int]:
    """Duration (s), frame rate, width and height of a video file's first video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        duration = (
            float(stream.duration * stream.time_base)
            if stream.duration is not None and stream.time_base is not None
            else float(container.duration or 0) / 1_000_000.0
        )
        return duration, fps, stream.codec_context.width, stream.codec_context.height


def read_clip(path: Path, start_s: float, length_s: float) -> VideoClip:
    """Decode the frames whose timestamps fall in ``[start_s, start_s + length_s)``,
    both ends rounded to the nearest frame.

    Seeks to the key frame before ``start_s`` and decodes forward.

    Parameters
    ----------
    path : Path
        Video file.
    start_s : float
        Start time in seconds (stream time, 0 = first frame).
    length_s : float
        Length in seconds; ``math.inf`` for the rest of the file.

    Returns
    -------
    VideoClip
        RGB frames at the stream's average frame rate (empty when the range
        holds no frame).
    """
    frames: list[U8] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        base = stream.time_base
        origin = float(stream.start_time * base) if stream.start_time and base else 0.0
        if start_s > 0 and base is not None:
            container.seek(round((origin + start_s) / base), stream=stream, backward=True)
        first = round(start_s * fps)
        last = math.inf if math.isinf(length_s) else round((start_s + length_s) * fps)
        for frame in container.decode(stream):
            k = round((float(frame.time or 0.0) - origin) * fps)
            if k < first:
                continue
            if k >= last:
                break
            frames.append(np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8))
    if not frames:
        return VideoClip(np.zeros((0, 2, 2, 3), dtype=np.uint8), fps)
    return VideoClip(np.stack(frames), fps)


def even(n: float) -> int:
    """Nearest even integer of at least 2 (yuv420p needs even sizes)."""
    return max(2, 2 * math.floor(n / 2 + 0.5))


def thumbnails(clip: VideoClip) -> Thumbs:
    """Grey 64x36 thumbnails (box-filtered) of every frame of a clip."""
    if clip.frames.shape[0] == 0:
        return np.zeros((0, THUMB_SIZE[1], THUMB_SIZE[0]), dtype=np.float32)
    return np.stack(
        [
            np.asarray(Image.fromarray(f).convert("L").resize(THUMB_SIZE, Image.Resampling.BOX))
            for f in clip.frames
        ]
    ).astype(np.float32)


def detail(thumbs: Thumbs) -> NDArray[np.float32]:
    """Mean absolute difference between neighbouring thumbnail pixels, per frame."""
    dx = np.abs(np.diff(thumbs, axis=2)).mean(axis=(1, 2))
    dy = np.abs(np.diff(thumbs, axis=1)).mean(axis=(1, 2))
    result: NDArray[np.float32] = (dx + dy).astype(np.float32)
    return result
