"""Storing uploaded media: content-addressed, durable, never half-written.

An upload is written to a temporary file in ``media_dir/.incoming`` while its
SHA-256 and size are computed (:class:`IncomingMedia`), then fsynced and
renamed to ``media_dir/<sha256[:2]>/<sha256><ext>``. The rename is atomic, so a
file at its final path is always complete; a crash leaves at most a temporary
file. The same bytes uploaded twice land on the same path, so the second copy
is simply dropped.

There is one way in: the bytes are fed to an :class:`IncomingMedia` piece by
piece as they arrive (the HTTP routes parse the request body as it comes) and
:meth:`IncomingMedia.commit` puts them in place.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from acr.errors import EmptyMediaError, MediaTooLargeError
from acr.index.files import fsync_directory

__all__ = ["INCOMING_DIR", "IncomingMedia", "StoredMedia", "media_suffix"]

INCOMING_DIR = ".incoming"
"""Temporary files live beside the library so that the final rename stays on one file system."""

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


def stored_copy(media_dir: Path, sha256: str) -> Path | None:
    """The library's file holding the bytes of digest ``sha256``, if there is one.

    Parameters
    ----------
    media_dir : Path
        Root of the library.
    sha256 : str
        Hex digest of the bytes.

    Returns
    -------
    Path or None
    """
    shard = media_dir / sha256[:2]
    # The same bytes under another extension are still the same media.
    return next(shard.glob(f"{sha256}*"), None) if shard.is_dir() else None


def place(temp: Path, media_dir: Path, sha256: str, suffix: str) -> tuple[Path, bool]:
    """Move a complete, fsynced temporary file to its content address (or drop it).

    Parameters
    ----------
    temp : Path
        The file in ``media_dir/.incoming``; gone when this returns.
    media_dir : Path
        Root of the library.
    sha256 : str
        Hex digest of the file's bytes.
    suffix : str
        Extension of the final name (see :func:`media_suffix`).

    Returns
    -------
    path : Path
        Where the bytes are now.
    created : bool
        False when they were already in the library and ``temp`` was deleted.
    """
    existing = stored_copy(media_dir, sha256)
    if existing is not None:
        temp.unlink()
        return existing, False
    final = media_dir / sha256[:2] / f"{sha256}{suffix}"
    final.parent.mkdir(exist_ok=True)
    temp.replace(final)
    # The rename is durable only once the directory holding the new name is on disk.
    fsync_directory(final.parent)
    return final, True


class IncomingMedia:
    """An upload being received: a temporary file in ``media_dir/.incoming``.

    Bytes given to :meth:`write` are hashed and counted on their way to the
    file, so the content address is known without reading the file back.
    :meth:`commit` makes it part of the library; :meth:`discard` (or leaving a
    ``with`` block without committing) deletes it. Not thread-safe: one
    writer at a time, though that writer may be any thread.

    Parameters
    ----------
    media_dir : Path
        Root of the library (created if missing).
    max_bytes : int
        Largest accepted upload.
    """

    def __init__(self, media_dir: Path, *, max_bytes: int) -> None:
        incoming = media_dir / INCOMING_DIR
        incoming.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=incoming, suffix=".part")
        self.media_dir = media_dir
        self.max_bytes = max_bytes
        self.size = 0
        self.temp: Path | None = Path(temp_name)
        self._digest = hashlib.sha256()
        self._out = os.fdopen(handle, "wb")

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data``.

        Raises
        ------
        MediaTooLargeError
            The upload now holds more than ``max_bytes``; nothing of ``data`` is
            written (the caller discards the upload).
        """
        if self.size + len(data) > self.max_bytes:
            raise MediaTooLargeError(
                f"the upload is larger than the limit of {self.max_bytes} bytes"
            )
        self.size += len(data)
        self._digest.update(data)
        self._out.write(data)

    def commit(self, filename: str | None) -> StoredMedia:
        """Make the bytes written so far part of the library.

        Parameters
        ----------
        filename : str or None
            The client's file name; only its extension is used.

        Returns
        -------
        StoredMedia

        Raises
        ------
        EmptyMediaError
            Nothing was written (the temporary file is deleted).
        """
        if self.temp is None:
            raise RuntimeError("this upload was already committed or discarded")
        try:
            if self.size == 0:
                raise EmptyMediaError("the upload is empty")
            self._out.flush()
            os.fsync(self._out.fileno())
            self._out.close()
            sha256 = self._digest.hexdigest()
            path, created = place(self.temp, self.media_dir, sha256, media_suffix(filename))
        except BaseException:
            self.discard()
            raise
        self.temp = None
        return StoredMedia(path, sha256, self.size, created)

    def discard(self) -> None:
        """Delete the temporary file (nothing happens once committed or discarded)."""
        self._out.close()
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)
            self.temp = None

    def __enter__(self) -> IncomingMedia:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.discard()
