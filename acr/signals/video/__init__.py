"""Video signal kind: sample frames → remove bars → hash views with PDQ.

One small module per stage:

=============  ===========================================================
``frames``     decode any common video with PyAV, sample frames at ``fps``
``bars``       find letterbox/pillarbox bars over a run of frames
``views``      the rectangles of each frame that are hashed
``inset``      find a picture-in-picture inset (query side)
``pdq``        PDQ hashes and quality, many frames at once
``hashes``     :class:`VideoHashes` and its client wire format
=============  ===========================================================

Storage is :class:`acr.index.video.VideoIndex`; temporal alignment is
:mod:`acr.video_matching`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from contextlib import closing
from typing import Final

import numpy as np
from numpy.typing import NDArray

from acr.signals.audio.decode import DEFAULT_MAX_BYTES
from acr.signals.base import MediaSource
from acr.signals.video.bars import content_box, room_box
from acr.signals.video.frames import CHUNK_FRAMES, DecodeReport, FrameChunk, sample_frames
from acr.signals.video.hashes import VideoHashes
from acr.signals.video.inset import find_inset
from acr.signals.video.pdq import HASH_BYTES, Rect, luma, pdq_rects
from acr.signals.video.screen import find_screens, straighten
from acr.signals.video.views import (
    CENTRE,
    INSET,
    QUERY_ONLY,
    QUERY_VIEWS,
    REFERENCE_VIEWS,
    VIEWS,
    view_rect,
)

__all__ = [
    "DEFAULT_FPS",
    "KIND",
    "MIN_QUALITY",
    "QUERY_MIN_QUALITY",
    "QUERY_VIEWS",
    "REFERENCE_VIEWS",
    "VideoHashes",
    "VideoSignal",
    "hash_frames",
    "hash_stills",
    "hash_video",
]

KIND: Final = "video"
DEFAULT_FPS: Final = 4.0
"""Frames sampled per second, on both sides."""

MIN_QUALITY: Final = 25
"""Reference hashes of lower PDQ quality (flat, black, nearly uniform views) are not
kept: they carry no picture, and every black frame would match every other. PDQ's
quality is a sum of gradients (0-100); Meta's advice for single images is 50, but a
pan over a smooth gradient (a sky, some desktop artwork) scores 25-45 and is still a
picture: at 50, held-out 5 s clips of such shots had no reference hash to meet.
Black and flat pictures score 0-10."""

QUERY_MIN_QUALITY: Final = 15
"""Sample hashes are kept down to this quality. PDQ's quality falls with the contrast: a
sample at 0.6x contrast, or darkened by a gamma, has about half the quality of its
reference (held-out: a gamma and a contrast change whose 5 s clips kept no hash at 50)."""

_MIN_STRAIGHT: Final = 32
"""Smallest side, in pixels, of a straightened screen (it is resampled at half the size
of the rectangle inside the bars: PDQ keeps 64x64 of it)."""


def _hash_chunk(chunk: FrameChunk, views: Sequence[int]) -> VideoHashes:
    frames = chunk.luma.astype(np.float32)
    box = content_box(frames)
    # The picture is the rectangle inside the bars, at (top, left) of the frames: its
    # views are hashed as rectangles of the frames, never copied out.
    picture, top, left = frames, box.top, box.left
    height, width = box.bottom - box.top, box.right - box.left
    # The centre is for a screen filmed inside a room, which shows as bars: without bars
    # there are no wedges of room to cut off, and its scan of every window is saved.
    framed = box != (0, frames.shape[1], 0, frames.shape[2])
    if CENTRE in views:
        # Query side: a screen filmed inside a room. Its picture, straightened if it was
        # filmed at an angle, or else the rectangle inside the room.
        outer = box if framed else room_box(frames)
        if outer is not None:
            framed = True
            top, left = outer.top, outer.left
            height, width = outer.bottom - outer.top, outer.right - outer.left
            quads = find_screens(frames, outer)
            if quads is not None:
                picture = straighten(
                    frames, quads, max(_MIN_STRAIGHT, width // 2), max(_MIN_STRAIGHT, height // 2)
                )
                top, left, (height, width) = 0, 0, picture.shape[1:]
    rects: list[tuple[int, Rect]] = []
    for view in views:
        if view == INSET or (view == CENTRE and not framed):
            continue
        y0, y1, x0, x1 = view_rect(height, width, QUERY_ONLY.get(view) or VIEWS[view])
        rects.append((view, (top + y0, top + y1, left + x0, left + x1)))
    if (
        INSET in views
        and (inset := find_inset(picture[:, top : top + height, left : left + width])) is not None
    ):
        rects.append(
            (INSET, (top + inset.top, top + inset.bottom, left + inset.left, left + inset.right))
        )
    n, k = picture.shape[0], len(rects)
    hashes, quality = pdq_rects(picture, [rect for _, rect in rects])
    floor = QUERY_MIN_QUALITY if CENTRE in views else MIN_QUALITY  # sample or reference
    keep = (quality >= floor).reshape(-1)
    return VideoHashes(
        hashes=hashes.reshape(n * k, HASH_BYTES)[keep],
        times_s=np.repeat(chunk.times_s, k)[keep],
        quality=quality.reshape(-1)[keep],
        duration_s=0.0,
        views=np.tile(np.array([view for view, _ in rects], dtype=np.uint8), n)[keep],
    )


def _concatenate(parts: Iterable[VideoHashes], duration_s: float) -> VideoHashes:
    pieces = list(parts)
    if not pieces:
        return VideoHashes.empty(duration_s)
    return VideoHashes(
        hashes=np.concatenate([p.hashes for p in pieces]),
        times_s=np.concatenate([p.times_s for p in pieces]),
        quality=np.concatenate([p.quality for p in pieces]),
        duration_s=duration_s,
        views=np.concatenate([p.views for p in pieces]),
    )


def hash_video(
    source: MediaSource,
    *,
    fps: float = DEFAULT_FPS,
    max_seconds: float | None = None,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    views: Sequence[int] = QUERY_VIEWS,
) -> VideoHashes:
    """Decode a video, sample it at `fps` and hash the views of every sampled frame.

    Parameters
    ----------
    source : str, os.PathLike, bytes or binary file object
        Any common video container and codec, or a single image.
    fps : float
        Frames sampled per second of presentation time.
    max_seconds : float or None
        Longest accepted video; longer input raises
        :class:`~acr.errors.MediaTooLongError` as soon as it is seen.
    max_bytes : int or None
        Largest accepted input.
    views : sequence of int
        View ids to hash (:data:`QUERY_VIEWS` for a sample,
        :data:`REFERENCE_VIEWS` for the index).

    Returns
    -------
    VideoHashes
        Hashes of quality at least :data:`QUERY_MIN_QUALITY` (sample views) or
        :data:`MIN_QUALITY` (reference views), in time order; empty
        when every frame is flat.

    Raises
    ------
    MediaError
        See :func:`acr.signals.video.frames.sample_frames`.
    """
    report = DecodeReport()
    parts = [
        _hash_chunk(chunk, views)
        for chunk in sample_frames(
            source, fps=fps, max_seconds=max_seconds, max_bytes=max_bytes, report=report
        )
    ]
    return _concatenate(parts, report.duration_s)


def hash_frames(
    frames: Sequence[NDArray[np.uint8]],
    times_s: Sequence[float],
    *,
    views: Sequence[int] = QUERY_VIEWS,
) -> VideoHashes:
    """Hash frames already in memory (a smart TV's frame buffer, a handful of stills).

    Parameters
    ----------
    frames : sequence of ndarray of uint8, shape (h, w, 3)
        RGB frames, in time order; runs of frames of one shape are processed
        together, up to 32 at a time (bars are found over each run).
    times_s : sequence of float
        Presentation time of each frame, non-decreasing, from 0.
    views : sequence of int
        View ids to hash, as for :func:`hash_video`.

    Returns
    -------
    VideoHashes
        Its duration is the last time plus the median frame interval
        (``1 / DEFAULT_FPS`` for a single frame).
    """
    times = np.asarray(times_s, dtype=np.float64)
    if times.shape != (len(frames),):
        raise ValueError(f"{len(frames)} frames need {len(frames)} times, got {times.shape}")
    if times.size and not (
        np.isfinite(times).all() and times[0] >= 0 and np.all(np.diff(times) >= 0)
    ):
        raise ValueError("times must be finite, non-negative and non-decreasing")
    for frame in frames:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
            raise ValueError(f"frames must be RGB arrays of shape (h, w, 3), got {frame.shape}")
    step = float(np.median(np.diff(times))) if times.size > 1 else 1.0 / DEFAULT_FPS
    duration = (
        float(times[-1]) + (step if math.isfinite(step) and step > 0 else 0.0)
        if times.size
        else 0.0
    )
    parts = []
    start = 0
    for end in range(1, len(frames) + 1):
        # Runs of one shape, at most a decoder's chunk at a time: memory stays bounded.
        if (
            end == len(frames)
            or end - start == CHUNK_FRAMES
            or frames[end].shape != frames[start].shape
        ):
            rgb = np.stack([np.asarray(f, dtype=np.uint8) for f in frames[start:end]])
            grey = np.clip(np.round(luma(rgb)), 0, 255).astype(np.uint8)
            parts.append(_hash_chunk(FrameChunk(grey, times[start:end]), views))
            start = end
    return _concatenate(parts, duration)


def hash_stills(
    sources: Sequence[MediaSource],
    *,
    interval_s: float = 1.0 / DEFAULT_FPS,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    views: Sequence[int] = QUERY_VIEWS,
) -> VideoHashes:
    """Hash a handful of still images (or the first frame of each file), `interval_s` apart.

    Raises
    ------
    MediaError
        For the first source that is not a usable image or video
        (see :func:`acr.signals.video.frames.sample_frames`).
    """
    parts = []
    for i, source in enumerate(sources):
        with closing(sample_frames(source, fps=DEFAULT_FPS, max_bytes=max_bytes)) as chunks:
            first = next(chunks)
        still = FrameChunk(first.luma[:1], np.array([i * interval_s], dtype=np.float64))
        parts.append(_hash_chunk(still, views))
    return _concatenate(parts, len(sources) * interval_s)


class VideoSignal:
    """The video signal kind: what the index and the service call."""

    name = KIND
    fps = DEFAULT_FPS

    def hash_reference(
        self, source: MediaSource, *, max_seconds: float | None = None
    ) -> VideoHashes:
        """Hash a reference for the index (every view)."""
        return hash_video(source, fps=self.fps, max_seconds=max_seconds, views=REFERENCE_VIEWS)

    def hash_query(
        self,
        source: MediaSource,
        *,
        max_seconds: float | None = None,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> VideoHashes:
        """Hash a sample to be matched (the query views)."""
        return hash_video(
            source, fps=self.fps, max_seconds=max_seconds, max_bytes=max_bytes, views=QUERY_VIEWS
        )
