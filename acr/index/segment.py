"""Stage 4a: immutable segment files — the durable form of indexed codes.

A segment holds the codes of a batch of contents, grouped by content, in a flat
little-endian layout that can be memory-mapped::

    header (64 bytes)   magic, version, kind, hop, counts, CRC-32 of the body
    keys   int64[n_contents]   catalogue key of each content
    ends   int64[n_contents]   cumulative code count (content i owns [ends[i-1], ends[i]))
    codes  uint24[n_codes]     3-byte little-endian: codes are 24 bits wide
    frames uint24[n_codes]     3-byte little-endian: up to 2^24 frames (74 h) per content

Segments are written and verified as :mod:`acr.index.files` describes.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from acr.errors import IndexStoreError
from acr.index.files import SegmentContents, SegmentFormat, write_atomically

PACKED_BYTES = 3
MAX_FRAME = (1 << (8 * PACKED_BYTES)) - 1
_FORMAT = SegmentFormat(
    name="segment",
    magic=b"ACRSEG\0\0",
    version=2,
    header=struct.Struct("<8sI8sdQQI16x"),
    posting_bytes=2 * PACKED_BYTES,
)
assert _FORMAT.header.size == 64


@dataclass(frozen=True)
class Segment(SegmentContents):
    """The codes of a batch of contents (a posting is a code and its frame)."""

    kind: str
    hop_s: float
    keys: NDArray[np.int64]
    ends: NDArray[np.int64]
    codes: NDArray[np.uint32]
    frames: NDArray[np.uint32]


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
    fields = (
        segment.kind.encode("ascii").ljust(8, b"\0"),
        segment.hop_s,
        segment.keys.size,
        segment.codes.size,
    )
    return _FORMAT.write(path, fields, body)


def read_segment(path: Path) -> Segment:
    """Read and verify a segment file.

    Raises
    ------
    SegmentMissingError
        If the file does not exist.
    IndexStoreError
        If it cannot be read, is not a segment, is truncated, or fails its checksum.
    """
    (kind, hop_s, n_contents, n_codes), body = _FORMAT.read(path)
    return Segment(
        kind=kind.rstrip(b"\0").decode("ascii"),
        hop_s=hop_s,
        keys=body.take("<i8", n_contents).astype(np.int64),
        ends=body.take("<i8", n_contents).astype(np.int64),
        codes=_unpack24(body.take("u1", PACKED_BYTES * n_codes)),
        frames=_unpack24(body.take("u1", PACKED_BYTES * n_codes)),
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


# -- postings in code order: what a lookup searches ----------------------------------------------

_TABLE_MAGIC = b"ACRPOST\0"
_TABLE_VERSION = 1
_TABLE_HEADER = struct.Struct("<8sIIQQQ24x")
assert _TABLE_HEADER.size == 64
DENSE_MIN_POSTINGS = 1 << 24
"""From this many postings (about 55 h of audio) a table addresses codes directly:
2^23 + 1 offsets, 64 MB, at most 4 bytes a posting. Smaller tables binary-search
their distinct codes (12 bytes per distinct code)."""


@dataclass(frozen=True)
class PostingTable:
    """A segment's postings sorted by code, as a lookup reads them.

    Each posting is one integer on a *timeline*: the contents of the segment
    laid end to end, content ``i`` owning ``[bases[i], bases[i] + frames)``, so
    a posting costs 4 bytes instead of a key and a frame. Postings of one code
    keep the order they have in the segment, which is FAISS's insertion order.
    Segments hold their contents one after the other, so under one code the
    postings of each content form one run and the runs follow the contents'
    timeline order: a content's postings under a code are found by binary
    search on its ``[base, next base)`` (a table built otherwise must keep
    that order, as the scale benchmark's distractor tables do).

    Attributes
    ----------
    keys : ndarray of int64
        Catalogue key of each content.
    bases : ndarray of int64
        Timeline position of each content's frame 0 (non-decreasing).
    codes : ndarray of uint32 or None
        Sorted distinct codes (``offsets`` has one more entry); ``None`` when
        ``offsets`` is a dense directory of ``2**code_bits + 1`` entries.
    offsets : ndarray of int64
        The postings of the ``j``-th distinct code (or of code ``j``) are
        ``postings[offsets[j]:offsets[j + 1]]``.
    postings : ndarray of uint32 or uint64
        Timeline positions in code order.
    """

    keys: NDArray[np.int64]
    bases: NDArray[np.int64]
    codes: NDArray[np.uint32] | None
    offsets: NDArray[np.int64]
    postings: NDArray[np.unsignedinteger]

    @classmethod
    def from_segment(cls, segment: Segment, code_bits: int) -> PostingTable:
        """Sort a segment's postings by code (stably)."""
        counts = np.diff(np.concatenate([[0], segment.ends])).astype(np.int64)
        spans = np.zeros(segment.keys.size, dtype=np.int64)
        for i, (start, end) in enumerate(zip(segment.ends - counts, segment.ends, strict=True)):
            if end > start:
                spans[i] = int(segment.frames[start:end].max()) + 1
        bases = (np.cumsum(spans) - spans).astype(np.int64)
        width = np.uint32 if int(spans.sum()) <= np.iinfo(np.uint32).max else np.uint64
        timeline: NDArray[np.unsignedinteger] = (np.repeat(bases, counts) + segment.frames).astype(
            width
        )
        order = np.argsort(segment.codes, kind="stable")
        sorted_codes = segment.codes[order]
        if segment.codes.size >= DENSE_MIN_POSTINGS:
            directory = None
            offsets = np.searchsorted(sorted_codes, np.arange((1 << code_bits) + 1), "left")
        else:
            directory, firsts = np.unique(sorted_codes, return_index=True)
            offsets = np.append(firsts, sorted_codes.size)
        return cls(
            keys=segment.keys.astype(np.int64),
            bases=bases,
            codes=None if directory is None else directory.astype(np.uint32),
            offsets=offsets.astype(np.int64),
            postings=timeline[order],
        )

    @property
    def size(self) -> int:
        """Number of postings."""
        return int(self.postings.size)

    @property
    def mapped_bytes(self) -> int:
        """Bytes of its arrays memory-mapped from a file (0 for a table built in memory)."""
        return sum(array.nbytes for array in self._mapped())

    def make_resident(self) -> bool:
        """Fault every page of its mapped arrays into this process now, as reads would.

        Returns
        -------
        bool
            False where the kernel cannot (Linux before 5.14, other systems):
            the pages then fault in as lookups read them.
        """
        return all(_populate(array) for array in self._mapped())

    def _mapped(self) -> list[NDArray[Any]]:
        arrays = (self.codes, self.offsets, self.postings)
        return [array for array in arrays if isinstance(array, np.memmap)]

    def followed_by(self, other: PostingTable) -> PostingTable:
        """One table holding this table's postings and then ``other``'s (sparse tables only).

        The other table's timeline is laid after this one's, and within a code
        this table's postings stay first, so lookups return the same hits in
        the same order as from the two tables searched one after the other.
        """
        if self.codes is None or other.codes is None:
            raise ValueError("only tables that list their distinct codes can be merged")
        span = int(self.postings.max()) + 1 if self.postings.size else 0
        codes = np.concatenate(
            [
                np.repeat(self.codes, np.diff(self.offsets)),
                np.repeat(other.codes, np.diff(other.offsets)),
            ]
        )
        timeline = np.concatenate(
            [self.postings.astype(np.uint64), other.postings.astype(np.uint64) + np.uint64(span)]
        )
        order = np.argsort(codes, kind="stable")
        directory, firsts = np.unique(codes[order], return_index=True)
        width = np.uint32 if timeline.size == 0 or int(timeline.max()) <= 0xFFFFFFFF else np.uint64
        return PostingTable(
            keys=np.concatenate([self.keys, other.keys]),
            bases=np.concatenate([self.bases, other.bases + span]),
            codes=directory.astype(np.uint32),
            offsets=np.append(firsts, codes.size).astype(np.int64),
            postings=timeline[order].astype(width),
        )

    def decode(self, positions: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Content key and frame of the postings at ``positions``."""
        timeline = self.postings[positions].astype(np.int64)
        content = np.searchsorted(self.bases, timeline, "right") - 1
        return self.keys[content], timeline - self.bases[content]


def write_table(table: PostingTable, path: Path) -> int:
    """Write a posting table for :func:`map_table`, atomically; return its size in bytes.

    A table is derived data (rebuilt from its segment at will), so it carries no
    checksum: checking one would read the whole file, which mapping avoids.
    """
    n_codes = -1 if table.codes is None else table.codes.size
    header = _TABLE_HEADER.pack(
        _TABLE_MAGIC,
        _TABLE_VERSION,
        table.postings.dtype.itemsize,
        table.keys.size,
        n_codes & 0xFFFFFFFFFFFFFFFF,
        table.postings.size,
    )
    parts = [table.keys.astype("<i8"), table.bases.astype("<i8")]
    if table.codes is not None:
        parts.append(table.codes.astype("<u4"))
    parts += [
        table.offsets.astype("<i8"),
        table.postings.astype(f"<u{table.postings.dtype.itemsize}"),
    ]
    return write_atomically(path, [header, *(np.ascontiguousarray(part).data for part in parts)])


_MADV_POPULATE_READ = 22
"""Linux's madvise advice that faults pages in as reads would (5.14+); Python's
``mmap`` module has no name for it, and NumPy's memmap keeps its mmap private."""
_libc = ctypes.CDLL(None, use_errno=True)


def _populate(array: NDArray[Any]) -> bool:
    """Fault in the pages under a memory-mapped array; False if the kernel refuses."""
    start = array.ctypes.data // mmap.PAGESIZE * mmap.PAGESIZE
    length = array.ctypes.data + array.nbytes - start
    done = _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), _MADV_POPULATE_READ)
    return bool(done == 0)


def map_table(path: Path, code_bits: int) -> PostingTable:
    """Memory-map a table written by :func:`write_table`; nothing is read but its header.

    Raises
    ------
    IndexStoreError
        If the file is missing, not a table, or of the wrong size.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(_TABLE_HEADER.size)
        size = path.stat().st_size
    except OSError as error:
        raise IndexStoreError(f"posting table {path.name} cannot be read: {error}") from error
    if len(head) < _TABLE_HEADER.size:
        raise IndexStoreError(f"posting table {path.name} is truncated")
    magic, version, width, n_contents, n_codes, n_postings = _TABLE_HEADER.unpack(head)
    if magic != _TABLE_MAGIC or version != _TABLE_VERSION or width not in (4, 8):
        raise IndexStoreError(f"{path.name} is not a version-{_TABLE_VERSION} posting table")
    dense = n_codes == 0xFFFFFFFFFFFFFFFF
    n_offsets = (1 << code_bits) + 1 if dense else n_codes + 1
    layout = [("keys", "<i8", n_contents), ("bases", "<i8", n_contents)]
    layout += [] if dense else [("codes", "<u4", n_codes)]
    layout += [("offsets", "<i8", n_offsets), ("postings", f"<u{width}", n_postings)]
    expected = _TABLE_HEADER.size + sum(np.dtype(t).itemsize * n for _, t, n in layout)
    if size != expected:
        raise IndexStoreError(f"posting table {path.name} is corrupt (size mismatch)")
    arrays: dict[str, NDArray[Any]] = {}
    offset = _TABLE_HEADER.size
    for name, dtype, count in layout:
        arrays[name] = (
            np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,))
            if count
            else np.zeros(0, dtype=dtype)
        )
        offset += np.dtype(dtype).itemsize * count
    return PostingTable(
        keys=np.asarray(arrays["keys"]),
        bases=np.asarray(arrays["bases"]),
        codes=arrays.get("codes"),
        offsets=arrays["offsets"],
        postings=arrays["postings"],
    )
