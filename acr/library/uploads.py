"""Storing uploaded media: content-addressed, durable, never half-written.

An upload is copied through a temporary file in ``media_dir/.incoming`` while
its SHA-256 and size are computed, then fsynced and renamed to
``media_dir/<sha256[:2]>/<sha256><ext>``. The rename is atomic, so a file at
its final path is always complete; a crash leaves at most a temporary file.
The same bytes uploaded twice land on the same path, so the second copy is
simply dropped.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from acr.errors import EmptyMediaError, MediaTooLargeError
from acr.index.segment import fsync_directory

__all__ = ["INCOMING_DIR", "StoredMedia", "media_suffix", "store_upload"]

INCOMING_DIR = ".incoming"
"""Temporary files live beside the library so that the final rename stays on one file system."""

CHUNK_BYTES = 1 << 20
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,10}$")


@dataclass(frozen=True)
class StoredMedia:
    """An upload at its final place in the library.

    Attributes
    ----------
    path : Path
        ``media_dir/<sha256[:2]>/<sha256><ext>``.
    sha256 : str
        Hex digest of the bytes.
    size_bytes : int
        Number of bytes.
    created : bool
        False when the same bytes were already stored (nothing new was kept).
    """

    path: Path
    sha256: str
    size_bytes: int
    created: bool


def media_suffix(filename: str | None) -> str:
    """The extension to store a file under: its own if it is plain, none otherwise.

    The decoder sniffs the format from the bytes; the suffix only helps people
    looking at the directory, so anything odd (long, non-alphanumeric) is dropped
    rather than trusted in a path.
    """
    suffix = Path(filename or "").suffix.lower()
    return suffix if _SUFFIX.match(suffix) else ""


def store_upload(
    source: BinaryIO, media_dir: Path, *, filename: str | None, max_bytes: int
) -> StoredMedia:
    """Copy ``source`` into the library, hashing it on the way.

    Parameters
    ----------
    source : binary file object
        Read from its current position to its end.
    media_dir : Path
        Root of the library (created if missing).
    filename : str or None
        The client's file name; only its extension is used.
    max_bytes : int
        Largest accepted upload.

    Returns
    -------
    StoredMedia

    Raises
    ------
    EmptyMediaError
        The upload holds no bytes.
    MediaTooLargeError
        It holds more than ``max_bytes`` (nothing is kept).
    """
    incoming = media_dir / INCOMING_DIR
    incoming.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    handle, temp_name = tempfile.mkstemp(dir=incoming, suffix=".part")
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            while block := source.read(CHUNK_BYTES):
                size += len(block)
                if size > max_bytes:
                    raise MediaTooLargeError(
                        f"the upload is larger than the limit of {max_bytes} bytes"
                    )
                digest.update(block)
                out.write(block)
            if size == 0:
                raise EmptyMediaError("the upload is empty")
            out.flush()
            os.fsync(out.fileno())
        sha256 = digest.hexdigest()
        shard = media_dir / sha256[:2]
        # The same bytes under another extension are still the same media.
        existing = next(shard.glob(f"{sha256}*"), None) if shard.is_dir() else None
        if existing is not None:
            temp.unlink()
            return StoredMedia(existing, sha256, size, created=False)
        final = shard / f"{sha256}{media_suffix(filename)}"
        final.parent.mkdir(exist_ok=True)
        temp.replace(final)
        # The rename is durable only once the directory holding the new name is on disk.
        fsync_directory(final.parent)
        return StoredMedia(final, sha256, size, created=True)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
