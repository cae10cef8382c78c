"""Stage 4a: immutable segment files — the durable form of indexed codes.

A segment holds the codes of a batch of contents, grouped by content, in a flat
little-endian layout that can be memory-mapped::

    header (64 bytes)   magic, version, kind, hop, counts, CRC-32 of the body
    keys   int64[n_contents]   catalogue key of each content
    ends   int64[n_contents]   cumulative code count (content i owns [ends[i-1], ends[i]))
    codes  uint24[n_codes]     3-byte little-endian: codes are 24 bits wide
    frames uint24[n_codes]     3-byte little-endian: up to 2^24 frames (74 h) per content

Segments are written to a temporary name, fsynced, renamed into place and the
directory fsynced, so a reader sees a complete file or none. The CRC catches
anything else (disk corruption, a copy cut short).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from acr.errors import IndexStoreError

_MAGIC = b"ACRSEG\0\0"
_VERSION = 2
PACKED_BYTES = 3
MAX_FRAME = (1 << (8 * PACKED_BYTES)) - 1
_HEADER = struct.Struct("<8sI8sdQQI16x")
assert _HEADER.size == 64


@dataclass(frozen=True)
class Segment:
    """The codes of a batch of contents."""

    kind: str
    hop_s: float
    keys: NDArray[np.int64]
    ends: NDArray[np.int64]
    codes: NDArray[np.uint32]
    frames: NDArray[np.uint32]

    @property
    def starts(self) -> NDArray[np.int64]:
        """First code of each content."""
        return np.concatenate([[0], self.ends[:-1]]).astype(np.int64)

    def posting_keys(self) -> NDArray[np.int64]:
        """Catalogue key of every code."""
        return np.repeat(self.keys, np.diff(np.concatenate([[0], self.ends])))


def build_segment(
    kind: str,
    hop_s: float,
    contents: list[tuple[int, NDArray[np.uint32], NDArray[np.uint32]]],
) -> Segment:
    """Assemble a segment from ``(key, codes, frames)`` per content."""
    keys = np.array([key for key, _, _ in contents], dtype=np.int64)
    counts = np.array([codes.size for _, codes, _ in contents], dtype=np.int64)
    empty = np.zeros(0, dtype=np.uint32)
    return Segment(
        kind=kind,
        hop_s=hop_s,
        keys=keys,
        ends=np.cumsum(counts).astype(np.int64),
        codes=np.concatenate([c for _, c, _ in contents] or [empty]).astype(np.uint32),
        frames=np.concatenate([f for _, _, f in contents] or [empty]).astype(np.uint32),
    )


def write_segment(segment: Segment, path: Path) -> int:
    """Write ``segment`` to ``path`` atomically and durably; return its size in bytes."""
    for values in (segment.codes, segment.frames):
        if values.size and int(values.max()) > MAX_FRAME:
            raise IndexStoreError(
                "a code or frame does not fit in 24 bits (content longer than 74 h?)"
            )
    body = b"".join(
        [
            segment.keys.astype("<i8").tobytes(),
            segment.ends.astype("<i8").tobytes(),
            packed_bytes(segment.codes).tobytes(),
            packed_bytes(segment.frames).tobytes(),
        ]
    )
    header = _HEADER.pack(
        _MAGIC,
        _VERSION,
        segment.kind.encode("ascii").ljust(8, b"\0"),
        segment.hop_s,
        segment.keys.size,
        segment.codes.size,
        zlib.crc32(body),
    )
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            handle.write(header)
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_directory(path.parent)
    return len(header) + len(body)


class SegmentMissingError(IndexStoreError):
    """A segment named by the catalogue has no file (deleted by a compaction, or lost)."""

    code = "segment_missing"


def read_segment(path: Path) -> Segment:
    """Read and verify a segment file.

    Raises
    ------
    SegmentMissingError
        If the file does not exist.
    IndexStoreError
        If it cannot be read, is not a segment, is truncated, or fails its checksum.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SegmentMissingError(f"segment {path.name} is missing from {path.parent}") from None
    except OSError as error:
        raise IndexStoreError(f"segment {path.name} cannot be read: {error}") from error
    if len(data) < _HEADER.size:
        raise IndexStoreError(f"segment {path.name} is truncated")
    magic, version, kind, hop_s, n_contents, n_codes, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _VERSION:
        raise IndexStoreError(f"{path.name} is not a version-{_VERSION} segment")
    expected = _HEADER.size + 16 * n_contents + 2 * PACKED_BYTES * n_codes
    if len(data) != expected or zlib.crc32(memoryview(data)[_HEADER.size :]) != crc:
        raise IndexStoreError(f"segment {path.name} is corrupt (size or checksum mismatch)")
    offset = _HEADER.size

    def take(dtype: str, count: int) -> NDArray[np.generic]:
        nonlocal offset
        array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        offset += array.nbytes
        return array

    keys = take("<i8", n_contents).astype(np.int64)
    ends = take("<i8", n_contents).astype(np.int64)
    codes = _unpack24(take("u1", PACKED_BYTES * n_codes))
    frames = _unpack24(take("u1", PACKED_BYTES * n_codes))
    return Segment(
        kind=kind.rstrip(b"\0").decode("ascii"),
        hop_s=hop_s,
        keys=keys,
        ends=ends,
        codes=codes,
        frames=frames,
    )


def packed_bytes(values: NDArray[np.uint32]) -> NDArray[np.uint8]:
    """The low ``PACKED_BYTES`` bytes of each value, little-endian, shape (n, PACKED_BYTES).

    The layout of codes and frames in a segment, and of codes as FAISS binary vectors.
    Higher bytes are dropped: callers that store values check the range first.
    """
    little_endian = np.ascontiguousarray(values.astype("<u4")).view(np.uint8).reshape(-1, 4)
    return np.ascontiguousarray(little_endian[:, :PACKED_BYTES])


def _unpack24(raw: NDArray[np.generic]) -> NDArray[np.uint32]:
    padded = np.zeros((raw.size // PACKED_BYTES, 4), dtype=np.uint8)
    padded[:, :PACKED_BYTES] = np.asarray(raw, dtype=np.uint8).reshape(-1, PACKED_BYTES)
    return padded.view("<u4").reshape(-1).astype(np.uint32)


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
