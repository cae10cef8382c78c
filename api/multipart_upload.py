"""A ``multipart/form-data`` upload parsed as it arrives, its file part written once.

Starlette's form parsing spools every file part to a temporary file of its own
before the route runs; a route storing the file somewhere durable then writes
it a second time, and only learns the file is too large once all of it has
been received. :func:`receive_upload` instead feeds the request body to
python-multipart's streaming :class:`~python_multipart.MultipartParser` and
writes the one file part straight into an :class:`~acr.library.uploads.IncomingMedia`
(a temporary file inside the library, hashed on the way), refusing it the
moment it passes its limit. The small text fields are kept in memory, each up
to :data:`MAX_FIELD_BYTES`.

Parsing and writing run in a worker thread, a batch of about
:data:`BATCH_BYTES` at a time, so the event loop only moves bytes from the
socket; memory holds at most one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl

import anyio.to_thread
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from acr.library.uploads import IncomingMedia
from api.problems import Problem

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

__all__ = ["BATCH_BYTES", "MAX_FIELD_BYTES", "MAX_PARTS", "StreamedForm", "receive_upload"]

BATCH_BYTES: Final = 1 << 20
"""Body bytes gathered before one hop to a worker thread: fewer hops, bounded memory."""
MAX_FIELD_BYTES: Final = 64 * 1024
"""Largest text field (title, JSON maps): the body limit's allowance for the form around a file."""
MAX_PARTS: Final = 32
"""Parts accepted in one body; the upload form has six."""


def malformed(detail: str) -> Problem:
    """The problem for a body that is not well-formed ``multipart/form-data``."""
    return Problem(400, "malformed_multipart", detail)


@dataclass
class StreamedForm:
    """What a streamed upload form held.

    Attributes
    ----------
    fields : dict of str to str
        The wanted text fields that were sent (the last one of a repeated name).
    file : IncomingMedia or None
        The file part, received but not yet in the library; None if absent.
    filename : str or None
        The file part's ``filename`` parameter, if it had one.
    """

    fields: dict[str, str] = field(default_factory=dict)
    file: IncomingMedia | None = None
    filename: str | None = None

    def discard(self) -> None:
        """Delete the received file, unless it was committed to the library."""
        if self.file is not None:
            self.file.discard()


def _text(raw: bytes) -> str:
    # As Starlette decodes form fields: UTF-8, or Latin-1 (which decodes anything) if not.
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _Parts:
    """python-multipart's callbacks: route each part's bytes to the file, a field, or nowhere.

    Runs in a worker thread (inside ``MultipartParser.write``); raising stops
    the parse.
    """

    def __init__(
        self, open_file: Callable[[], IncomingMedia], file_field: str, text_fields: Collection[str]
    ) -> None:
        self.form = StreamedForm()
        self.ended = False
        self._open_file = open_file
        self._file_field = file_field
        self._text_fields = text_fields
        self._parts = 0
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._target: IncomingMedia | bytearray | None = None
        self._field_name = ""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise malformed(f"the form has more than {MAX_PARTS} parts")
        self._disposition = b""
        self._target = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        # The parser bounds each header line's size and count per part.
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise malformed('a part has no Content-Disposition header with a "name"')
        self._field_name = _text(options[b"name"])
        if self._field_name == self._file_field:
            if self.form.file is not None:
                raise malformed(f"the form has more than one {self._file_field!r} part")
            # The file part is the media, with or without a filename parameter.
            self.form.file = self._target = self._open_file()
            filename = options.get(b"filename")
            self.form.filename = _text(filename) if filename is not None else None
        elif self._field_name in self._text_fields:
            self._target = bytearray()
        # Any other part is read past and dropped, as a form parser ignores unknown fields.

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if isinstance(self._target, IncomingMedia):
            # A view, not a slice: the file's bytes are not copied on their way to disk.
            self._target.write(memoryview(data)[start:end])
        elif self._target is not None:
            if len(self._target) + end - start > MAX_FIELD_BYTES:
                raise Problem(
                    413,
                    "payload_too_large",
                    f"the form field {self._field_name!r} is larger than {MAX_FIELD_BYTES} bytes",
                )
            self._target += data[start:end]

    def on_part_end(self) -> None:
        if isinstance(self._target, bytearray):
            self.form.fields[self._field_name] = _text(bytes(self._target))
        self._target = None

    def on_end(self) -> None:
        self.ended = True


def _boundary(options: dict[bytes, bytes]) -> bytes:
    """The boundary parameter of a ``multipart/form-data`` content type (400 without one)."""
    boundary = options.get(b"boundary")
    if not boundary:
        raise malformed("the multipart/form-data content type has no boundary")
    return boundary


async def _url_encoded(request: Request, text_fields: Collection[str]) -> StreamedForm:
    """The fields of an ``application/x-www-form-urlencoded`` body, which cannot hold a file.

    Read (bounded) only so that such a form gets the field errors FastAPI gave
    it, the missing file first, rather than a bare 415.
    """
    limit = MAX_FIELD_BYTES * max(len(text_fields), 1)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise Problem(413, "payload_too_large", f"the form is larger than {limit} bytes")
    except ClientDisconnect:
        raise malformed("the client went away before the end of the body") from None
    pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    # Percent-decoded as Latin-1 to keep every byte, then read as UTF-8 like a multipart field.
    fields = {name: _text(value.encode("latin-1")) for name, value in pairs}
    return StreamedForm(
        fields={name: value for name, value in fields.items() if name in text_fields}
    )


async def receive_upload(
    request: Request,
    media_dir: Path,
    *,
    max_file_bytes: int,
    file_field: str,
    text_fields: Collection[str],
) -> StreamedForm:
    """Read a ``multipart/form-data`` request body, its file part into the library's intake.

    Parameters
    ----------
    request : Request
        Its body is not read yet.
    media_dir : Path
        Root of the library: the file part goes to a temporary file in its ``.incoming``.
    max_file_bytes : int
        Largest accepted file part.
    file_field : str
        Name of the file part.
    text_fields : collection of str
        Names of the text fields to keep; other parts are dropped.

    Returns
    -------
    StreamedForm
        The caller commits or discards its file. An
        ``application/x-www-form-urlencoded`` body gives its fields and no file.

    Raises
    ------
    Problem
        415 (not a form), 400 (malformed: bad boundary, truncated, client
        gone), 413 (a text field too large).
    MediaTooLargeError
        The file part is larger than ``max_file_bytes``.

    Nothing is left in ``.incoming`` when this raises.
    """
    media_type, options = parse_options_header(request.headers.get("content-type"))
    if media_type == b"application/x-www-form-urlencoded":
        return await _url_encoded(request, text_fields)
    if media_type != b"multipart/form-data":
        raise Problem(
            415,
            "unsupported_media_type",
            "send the upload as multipart/form-data"
            + (f", not {media_type.decode('latin-1')}" if media_type else ""),
        )
    boundary = _boundary(options)
    parts = _Parts(
        lambda: IncomingMedia(media_dir, max_bytes=max_file_bytes), file_field, text_fields
    )
    try:
        try:
            parser = MultipartParser(boundary, parts.callbacks())
            batch: list[bytes] = []
            pending = 0
            async for chunk in request.stream():
                batch.append(chunk)
                pending += len(chunk)
                if pending >= BATCH_BYTES:
                    await anyio.to_thread.run_sync(parser.write, b"".join(batch))
                    batch.clear()
                    pending = 0
            if batch:
                await anyio.to_thread.run_sync(parser.write, b"".join(batch))
        except FormParserError as error:
            raise malformed(f"the body is not valid multipart/form-data: {error}") from None
        except ClientDisconnect:
            raise malformed("the client went away before the end of the body") from None
        if not parts.ended:
            raise malformed("the body ended before the multipart closing boundary")
    except BaseException:
        parts.form.discard()
        raise
    return parts.form
