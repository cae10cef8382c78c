"""Opening untrusted media for FFmpeg: one reader for every signal kind.

Audio (:mod:`acr.signals.audio.decode`) and video
(:mod:`acr.signals.video.frames`) decode through PyAV and the FFmpeg it
bundles. Both hand FFmpeg a :class:`MediaReader` instead of a path or the
caller's file object, limit the demuxers FFmpeg may pick, check sizes before
decoding and turn FFmpeg's failures to open a container into typed
:class:`~acr.errors.MediaError` subclasses.

FFmpeg writes a warning for every damaged packet it skips. So that a service
decoding damaged uploads does not flood its logs, importing this module lowers
FFmpeg's log level to ``ERROR`` if it is more verbose than that (it never makes
FFmpeg louder); an application can still call ``av.logging.set_level`` later.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import IO, Final

import av
import av.container
import av.error
import av.logging

from acr.errors import (
    CorruptMediaError,
    EmptyMediaError,
    MediaTooLargeError,
    UnsupportedFormatError,
)
from acr.signals.base import MediaSource

# Demuxers FFmpeg may pick, by the names FFmpeg gives them. Probing is done on
# the content, so without a list a crafted upload could select a demuxer that
# opens other files or network URLs (HLS playlists, concat scripts, SDP, image
# sequences). Every common audio and audio-video container is on the list.
ALLOWED_DEMUXERS: Final = (
    "aac,ac3,aiff,amr,amrnb,amrwb,ape,asf,au,avi,caf,dsf,dts,dtshd,dv,eac3,flac,flv,"
    "loas,matroska,mlp,mov,mp3,mpc,mpc8,mpeg,mpegts,mxf,nut,ogg,oma,rm,shn,tak,truehd,"
    "tta,voc,w64,wav,wv,xwma"
)

# Leading bytes of containers on the list above. When FFmpeg refuses a file
# that starts with one of them, the header is damaged rather than unknown.
_SIGNATURES: Final = (
    b"RIFF",
    b"RIFX",
    b"RF64",
    b"fLaC",
    b"OggS",
    b"ID3",
    b"\x1a\x45\xdf\xa3",  # EBML: Matroska, WebM
    b"FORM",  # AIFF
    b"caff",
    b"wvpk",
    b"MAC ",
    b"\x30\x26\xb2\x75\x8e\x66\xcf\x11",  # ASF: WMA, WMV
    b".snd",
    b"FLV",
    b"\x00\x00\x01\xba",  # MPEG program stream
    b"#!AMR",
)

# What PyAV raises for media problems: its av.error.* classes (which also
# derive from the matching builtin), and plain ValueError/OSError/EOFError/
# RuntimeError from its Python layer.
PYAV_ERRORS: Final = (av.error.FFmpegError, ValueError, OSError, EOFError, RuntimeError)

IO_BUFFER_BYTES: Final = 1 << 18
"""Size of the buffer through which FFmpeg reads the input."""


def _quiet_ffmpeg_logs() -> None:
    level = av.logging.get_level()
    if level is not None and level > av.logging.ERROR:
        av.logging.set_level(av.logging.ERROR)


_quiet_ffmpeg_logs()


class MediaReader:
    """Read-only file object handed to FFmpeg in place of the caller's input.

    It hides the caller's ``close`` (FFmpeg closes custom inputs when the
    container closes), makes positions relative to where the input started,
    keeps the first bytes for error reports, and enforces the byte limit on
    inputs whose size cannot be known in advance.

    PyAV re-raises an exception from ``read`` once FFmpeg has given up, but
    FFmpeg may also take a failed read for the end of the file. The exception
    is therefore kept in :attr:`failure` and re-raised by the decoder: a read
    error of the caller's stream is not a property of the media.
    """

    _HEAD_BYTES: Final = 16

    def __init__(
        self,
        raw: IO[bytes],
        label: str,
        *,
        name: str,
        size: int | None,
        limit: int | None = None,
    ) -> None:
        self._raw = raw
        self._limit = limit
        self._seekable = size is not None
        self._start = raw.tell() if self._seekable else 0
        self.label = label
        self.name = name  # FFmpeg takes the extension of the name as a probing hint
        self.size = size
        self.bytes_read = 0
        self.failure: Exception | None = None
        self.head = b""
        if self._seekable:
            self.head = self._as_bytes(self._raw.read(self._HEAD_BYTES))
            self._raw.seek(self._start, io.SEEK_SET)

    def _as_bytes(self, data: object) -> bytes:
        if data is None:  # a non-blocking stream with nothing to give yet
            return b""
        if isinstance(data, bytes | bytearray | memoryview):
            return bytes(data)
        raise TypeError(f"{self.label}: file object must be opened in binary mode")

    def reraise_failure(self, exc: BaseException | None) -> None:
        """Raise the exception of a failed read, if any, in place of `exc`."""
        failure = self.failure
        if failure is not None:
            raise failure from (None if failure is exc else exc)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def read(self, size: int = -1) -> bytes:
        if self.failure is not None:
            # FFmpeg may retry a failed read; a second exception would replace
            # the first in PyAV (which prints the one it drops). End the input.
            return b""
        try:
            data = self._as_bytes(self._raw.read(size))
            if not self._seekable:
                if len(self.head) < self._HEAD_BYTES:
                    self.head += data[: self._HEAD_BYTES - len(self.head)]
                self.bytes_read += len(data)
                if self._limit is not None and self.bytes_read > self._limit:
                    raise MediaTooLargeError(
                        f"{self.label}: input is larger than the limit of {self._limit} bytes "
                        f"({self.bytes_read} bytes read so far)"
                    )
        except Exception as exc:
            self.failure = exc
            raise
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            offset += self._start
        try:
            return self._raw.seek(offset, whence) - self._start
        except Exception as exc:
            self.failure = exc
            raise

    def tell(self) -> int:
        return self._raw.tell() - self._start


def seekable_size(raw: IO[bytes]) -> int | None:
    """Bytes from the current position to the end, or None if `raw` cannot seek."""
    try:
        if not raw.seekable():
            return None
        start = raw.tell()
        end = raw.seek(0, io.SEEK_END)
        raw.seek(start, io.SEEK_SET)
    except (AttributeError, OSError, ValueError):
        return None
    return max(0, end - start)


def check_size(size: int, max_bytes: int | None, label: str) -> None:
    if size == 0:
        raise EmptyMediaError(f"{label}: the input is empty (0 bytes)")
    if max_bytes is not None and size > max_bytes:
        raise MediaTooLargeError(
            f"{label}: input is {size} bytes, larger than the limit of {max_bytes} bytes"
        )


@contextmanager
def opened_container(
    reader: MediaReader, demuxers: str = ALLOWED_DEMUXERS
) -> Iterator[av.container.InputContainer]:
    """FFmpeg's container for ``reader``, limited to ``demuxers``, closed on exit.

    Raises
    ------
    EmptyMediaError, CorruptMediaError, UnsupportedFormatError
        FFmpeg could not open the input (see :func:`open_error`); a failed read
        of the caller's stream propagates as it was raised instead.
    """
    try:
        container = av.open(
            reader,
            mode="r",
            container_options={"format_whitelist": demuxers},
            metadata_errors="ignore",
            buffer_size=IO_BUFFER_BYTES,
        )
    except PYAV_ERRORS as exc:
        reader.reraise_failure(exc)
        raise open_error(reader, exc) from exc
    try:
        yield container
    finally:
        with suppress(*PYAV_ERRORS):  # what was decoded stands; a failed close adds nothing
            container.close()


@contextmanager
def open_media(source: MediaSource, max_bytes: int | None) -> Iterator[MediaReader]:
    """Open a path, bytes or binary file object for FFmpeg, checking its size first.

    A path is opened here rather than by FFmpeg, so that it is never taken for
    an FFmpeg URL and so that FileNotFoundError and friends propagate.

    Raises
    ------
    EmptyMediaError, MediaTooLargeError
        The input is empty or larger than ``max_bytes`` (measured up front when
        the size can be known, while reading otherwise).
    TypeError
        ``source`` is of an unsupported type.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        check_size(len(data), max_bytes, "<bytes input>")
        yield MediaReader(io.BytesIO(data), "<bytes input>", name="", size=len(data))
    elif isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        with open(path, "rb") as raw:
            size = os.fstat(raw.fileno()).st_size
            check_size(size, max_bytes, repr(path))
            yield MediaReader(raw, repr(path), name=path, size=size)
    elif hasattr(source, "read"):
        name = getattr(source, "name", None)
        name = name if isinstance(name, str) else ""
        label = repr(name) if name else "<file object>"
        known_size = seekable_size(source)
        if known_size is not None:
            check_size(known_size, max_bytes, label)
        yield MediaReader(source, label, name=name, size=known_size, limit=max_bytes)
    else:
        raise TypeError(
            f"source must be a path, bytes or a binary file object, not {type(source).__name__}"
        )


def describe_error(exc: BaseException) -> str:
    """FFmpeg's description of an error, without PyAV's errno decoration."""
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


def _broken_header(head: bytes) -> bool:
    """Whether `head` starts like a known container (so it is damaged, not unknown)."""
    if head.startswith(_SIGNATURES):
        return True
    return len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")


def open_error(reader: MediaReader, exc: BaseException) -> Exception:
    label = reader.label
    if not reader.seekable() and reader.bytes_read == 0:
        return EmptyMediaError(f"{label}: the input is empty (0 bytes)")
    if _broken_header(reader.head):
        hint = "" if reader.seekable() else " (or it needs a seekable input)"
        return CorruptMediaError(
            f"{label}: the container header is damaged or truncated{hint}: {describe_error(exc)}"
        )
    return UnsupportedFormatError(
        f"{label}: not a recognised audio or video format: {describe_error(exc)}"
    )
