"""Immutable video segment files: the per-frame hashes of a batch of contents.

The video counterpart of :mod:`acr.index.segment`, written and verified the
same way (see :mod:`acr.index.files`), with records sized for 256-bit hashes::

    header (64 bytes)   magic, version, counts, CRC-32 of the body
    keys     int64[n_contents]   catalogue key of each content
    ends     int64[n_contents]   cumulative hash count
    hashes   uint8[n_hashes, 32] PDQ hashes
    times    uint32[n_hashes]    presentation time in milliseconds (up to 49 days)
    quality  uint8[n_hashes]
    views    uint8[n_hashes]     view id (acr.signals.video.views)

38 bytes a hash.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from acr.errors import IndexStoreError
from acr.index.files import SegmentContents, SegmentFormat
from acr.signals.video.hashes import VideoHashes
from acr.signals.video.pdq import HASH_BYTES

__all__ = ["VideoSegment", "build_video_segment", "read_video_segment", "write_video_segment"]

_FORMAT: Final = SegmentFormat(
    name="video segment",
    magic=b"ACRVSEG\0",
    version=1,
    header=struct.Struct("<8sIQQI32x"),
    posting_bytes=HASH_BYTES + 6,
)
assert _FORMAT.header.size == 64
_MAX_MS: Final = (1 << 32) - 1


@dataclass(frozen=True)
class VideoSegment(SegmentContents):
    """The hashes of a batch of contents, grouped by content (a posting is a hash)."""

    keys: NDArray[np.int64]
    ends: NDArray[np.int64]
    hashes: NDArray[np.uint8]
    times_ms: NDArray[np.uint32]
    quality: NDArray[np.uint8]
    views: NDArray[np.uint8]

    def content(self, index: int) -> VideoSegment:
        """The segment of the `index`-th content alone."""
        start, end = int(self.starts[index]), int(self.ends[index])
        return VideoSegment(
            keys=self.keys[index : index + 1],
            ends=np.array([end - start], dtype=np.int64),
            hashes=self.hashes[start:end],
            times_ms=self.times_ms[start:end],
            quality=self.quality[start:end],
            views=self.views[start:end],
        )


def build_video_segment(contents: list[tuple[int, VideoHashes]]) -> VideoSegment:
    """Assemble a segment from ``(key, hashes)`` per content."""
    for _, hashes in contents:
        if len(hashes) and float(hashes.times_s[-1]) * 1000.0 > _MAX_MS:
            raise IndexStoreError("a video is longer than 49 days")
    return VideoSegment(
        keys=np.array([key for key, _ in contents], dtype=np.int64),
        ends=np.cumsum([len(h) for _, h in contents], dtype=np.int64),
        hashes=np.concatenate(
            [h.hashes for _, h in contents] or [np.zeros((0, HASH_BYTES), np.uint8)]
        ),
        times_ms=np.concatenate(
            [np.round(h.times_s * 1000.0).astype(np.uint32) for _, h in contents]
            or [np.zeros(0, np.uint32)]
        ),
        quality=np.concatenate([h.quality for _, h in contents] or [np.zeros(0, np.uint8)]),
        views=np.concatenate([h.views for _, h in contents] or [np.zeros(0, np.uint8)]),
    )


def merge_video_segments(parts: list[VideoSegment]) -> VideoSegment:
    """One segment holding the contents of `parts`, in order."""
    counts = np.concatenate([np.diff(np.concatenate([[0], p.ends])) for p in parts])
    return VideoSegment(
        keys=np.concatenate([p.keys for p in parts]).astype(np.int64),
        ends=np.cumsum(counts, dtype=np.int64),
        hashes=np.concatenate([p.hashes for p in parts]),
        times_ms=np.concatenate([p.times_ms for p in parts]),
        quality=np.concatenate([p.quality for p in parts]),
        views=np.concatenate([p.views for p in parts]),
    )


def write_video_segment(segment: VideoSegment, path: Path) -> int:
    """Write `segment` to `path` atomically and durably; return its size in bytes."""
    body = b"".join(
        [
            segment.keys.astype("<i8").tobytes(),
            segment.ends.astype("<i8").tobytes(),
            np.ascontiguousarray(segment.hashes, dtype=np.uint8).tobytes(),
            segment.times_ms.astype("<u4").tobytes(),
            segment.quality.astype(np.uint8).tobytes(),
            segment.views.astype(np.uint8).tobytes(),
        ]
    )
    return _FORMAT.write(path, (segment.keys.size, segment.times_ms.size), body)


def read_video_segment(path: Path) -> VideoSegment:
    """Read and verify a video segment file.

    Raises
    ------
    SegmentMissingError
        If the file does not exist.
    IndexStoreError
        If it cannot be read, is not a video segment, is truncated, or fails its checksum.
    """
    (n_contents, n_hashes), body = _FORMAT.read(path)
    keys = body.take("<i8", n_contents).astype(np.int64)
    ends = body.take("<i8", n_contents).astype(np.int64)
    hashes = body.take("u1", HASH_BYTES * n_hashes).reshape(n_hashes, HASH_BYTES)
    return VideoSegment(
        keys=keys,
        ends=ends,
        hashes=hashes.astype(np.uint8),
        times_ms=body.take("<u4", n_hashes).astype(np.uint32),
        quality=body.take("u1", n_hashes).astype(np.uint8),
        views=body.take("u1", n_hashes).astype(np.uint8),
    )
