"""Durable files of an index directory: atomic writes, checked segment files, orphans.

Segment files (:mod:`acr.index.segment`, :mod:`acr.index.video_segment`) and
posting tables are written to a temporary name, fsynced, renamed into place and
the directory fsynced, so a reader sees a complete file or none. A segment file
is a 64-byte header (magic, version, the format's own fields, CRC-32 of the
body) and a body that starts with the catalogue key and the cumulative posting
count of each content (int64 each) and goes on with a fixed number of bytes a
posting. The CRC catches anything else (disk corruption, a copy cut short).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from acr.errors import IndexStoreError


class SegmentMissingError(IndexStoreError):
    """A segment named by the catalogue has no file (deleted by a compaction, or lost)."""

    code = "segment_missing"


def write_atomically(path: Path, chunks: Iterable[bytes | memoryview]) -> int:
    """Write ``chunks`` one after the other to ``path``, atomically and durably.

    Returns
    -------
    int
        The size of the file in bytes.
    """
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
            size = handle.tell()
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_directory(path.parent)
    return size


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def delete_unlisted(directory: Path, wanted: set[str]) -> None:
    """Delete the files of ``directory`` not named in ``wanted``, durably (none if it is missing).

    What a crash or a compaction leaves behind: files no committed catalogue
    entry refers to.
    """
    if not directory.is_dir():
        return
    removed = False
    for entry in directory.iterdir():
        if entry.name not in wanted:
            entry.unlink(missing_ok=True)
            removed = True
    if removed:
        fsync_directory(directory)


class SegmentContents:
    """The contents of a segment: what every segment format begins with.

    Content ``i`` owns postings ``[ends[i - 1], ends[i])``.

    Attributes
    ----------
    keys : ndarray of int64
        Catalogue key of each content.
    ends : ndarray of int64
        Cumulative posting count.
    """

    keys: NDArray[np.int64]
    ends: NDArray[np.int64]

    @property
    def starts(self) -> NDArray[np.int64]:
        """First posting of each content."""
        return np.concatenate([[0], self.ends])[:-1].astype(np.int64)

    @property
    def size(self) -> int:
        """Number of postings."""
        return int(self.ends[-1]) if self.ends.size else 0

    def posting_keys(self) -> NDArray[np.int64]:
        """Catalogue key of every posting."""
        return np.repeat(self.keys, np.diff(np.concatenate([[0], self.ends])))


class SegmentBody:
    """The verified body of a segment file, read array by array in file order."""

    def __init__(self, data: bytes, offset: int) -> None:
        self._data = data
        self._offset = offset

    def take(self, dtype: str, count: int) -> NDArray[np.generic]:
        """The next ``count`` values of ``dtype`` (a read-only view of the file's bytes)."""
        array = np.frombuffer(self._data, dtype=dtype, count=count, offset=self._offset)
        self._offset += array.nbytes
        return array


@dataclass(frozen=True)
class SegmentFormat:
    """One kind of segment file: its header and the size of a posting in its body."""

    name: str
    """What the file is called in errors ("segment", "video segment")."""
    magic: bytes
    """The first 8 bytes of every file."""
    version: int
    """The one version this code writes and reads."""
    header: struct.Struct
    """64 bytes: magic, version, the format's fields, CRC-32 of the body; the last two
    fields are the number of contents and of postings."""
    posting_bytes: int
    """Bytes of the body a posting takes, after the keys and ends of the contents."""

    def write(self, path: Path, fields: tuple[Any, ...], body: bytes) -> int:
        """Write a file of ``fields`` (those between version and CRC) and ``body``.

        Returns
        -------
        int
            The size of the file in bytes.
        """
        header = self.header.pack(self.magic, self.version, *fields, zlib.crc32(body))
        return write_atomically(path, [header, body])

    def read(self, path: Path) -> tuple[tuple[Any, ...], SegmentBody]:
        """Read and verify a file: its fields (those between version and CRC) and its body.

        Raises
        ------
        SegmentMissingError
            If the file does not exist.
        IndexStoreError
            If it cannot be read, is not of this format, is truncated, or fails its checksum.
        """
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SegmentMissingError(
                f"segment {path.name} is missing from {path.parent}"
            ) from None
        except OSError as error:
            raise IndexStoreError(f"segment {path.name} cannot be read: {error}") from error
        if len(data) < self.header.size:
            raise IndexStoreError(f"segment {path.name} is truncated")
        magic, version, *fields, crc = self.header.unpack_from(data)
        if magic != self.magic or version != self.version:
            raise IndexStoreError(f"{path.name} is not a version-{self.version} {self.name}")
        n_contents, n_postings = fields[-2:]
        expected = self.header.size + 16 * n_contents + self.posting_bytes * n_postings
        if len(data) != expected or zlib.crc32(memoryview(data)[self.header.size :]) != crc:
            raise IndexStoreError(f"segment {path.name} is corrupt (size or checksum mismatch)")
        return tuple(fields), SegmentBody(data, self.header.size)
