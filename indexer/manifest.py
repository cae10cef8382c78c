"""Manifests: CSV or JSON Lines files that list media to index with their metadata.

A manifest names one media file per row and says what the catalogue should
record about it:

``path`` (required)
    The media file. A relative path is resolved against the directory that
    holds the manifest, so a manifest can travel with its media.
``title``
    Display title; defaults to the file name without its extension.
``external_id``, ``owner``, ``content_id``
    Free-form identifiers stored with the content. ``content_id`` fixes the
    content's id in the index (one is generated otherwise).
``metadata``
    A JSON object stored with the content.

CSV manifests (``.csv``) start with a header row naming the columns (the
field names above in any case). Any
column that is not one of the fields above goes into ``metadata`` under its
header name (empty cells are left out); a ``metadata`` column, if present,
holds a JSON object that the extra columns are merged into.

JSON Lines manifests (``.jsonl``) hold one JSON object per line; blank lines
are ignored. Keys other than the fields above are merged into ``metadata``
(an explicit ``metadata`` object wins on a conflict).

Reading never stops at a malformed row: :func:`read_manifest` yields a
:class:`ManifestError` for it, naming the manifest and the line, and carries on
with the next row. Only a manifest that cannot be read at all (missing,
undecodable, a CSV without a ``path`` column) ends with an error after the rows
read so far.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acr.errors import AcrError

__all__ = [
    "MANIFEST_SUFFIXES",
    "ManifestEntry",
    "ManifestError",
    "is_manifest",
    "read_manifest",
]

MANIFEST_SUFFIXES = (".csv", ".jsonl")
"""File name endings that mark an input as a manifest rather than media."""

FIELDS = ("path", "title", "external_id", "owner", "content_id", "metadata")
"""The fields a manifest row may set."""

_TEXT_FIELDS = ("title", "external_id", "owner", "content_id")


class ManifestError(AcrError):
    """A manifest, or one row of it, cannot be used.

    Attributes
    ----------
    manifest : str
        Path of the manifest.
    line : int or None
        Line number (1-based) where the bad row starts, or None when the
        problem concerns the whole file.
    """

    code = "invalid_manifest"

    def __init__(self, manifest: str, line: int | None, problem: str) -> None:
        where = f"{manifest}:{line}" if line is not None else manifest
        super().__init__(f"{where}: {problem}")
        self.manifest = manifest
        self.line = line
        self.problem = problem

    @property
    def location(self) -> str:
        """``manifest:line``, or the manifest alone for a whole-file problem."""
        return f"{self.manifest}:{self.line}" if self.line is not None else self.manifest


@dataclass(frozen=True)
class ManifestEntry:
    """One media file named by a manifest, with what to record about it.

    Attributes
    ----------
    path : str
        Absolute path of the media file (relative paths already resolved
        against the manifest's directory).
    title, external_id, owner, content_id : str or None
        As given in the manifest; None when absent or empty.
    metadata : dict
        JSON-ready metadata for the content.
    manifest : str
        Path of the manifest the entry came from.
    line : int
        Line (1-based) of the manifest where the entry starts.
    """

    path: str
    title: str | None = None
    external_id: str | None = None
    owner: str | None = None
    content_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    manifest: str = ""
    line: int = 0


def is_manifest(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a manifest (by its extension) rather than a media file."""
    return os.fspath(path).lower().endswith(MANIFEST_SUFFIXES)


def read_manifest(path: str | os.PathLike[str]) -> Iterator[ManifestEntry | ManifestError]:
    """Read a CSV or JSON Lines manifest row by row.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.csv`` or ``.jsonl`` file.

    Yields
    ------
    ManifestEntry or ManifestError
        An entry per valid row, an error (with its line number) per malformed
        row, in file order. A manifest that cannot be read at all yields one
        error without a line number (after any rows already read).

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.csv`` or ``.jsonl``.
    """
    name = os.fspath(path)
    suffix = name.lower()
    if suffix.endswith(".csv"):
        rows = _read_csv(name)
    elif suffix.endswith(".jsonl"):
        rows = _read_jsonl(name)
    else:
        raise ValueError(f"{name}: a manifest must end in .csv or .jsonl")
    try:
        yield from rows
    except OSError as exc:
        yield ManifestError(name, None, f"cannot read the manifest: {exc.strerror or exc}")


def _read_csv(manifest: str) -> Iterator[ManifestEntry | ManifestError]:
    base = Path(manifest).resolve().parent
    # Undecodable bytes become lone surrogates, so that only their row is rejected.
    with open(manifest, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle, strict=True)
        header: list[str] | None = None
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                yield ManifestError(manifest, line, f"malformed CSV: {exc}")
                continue
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if not _is_utf8(row):
                yield ManifestError(manifest, line, _NOT_UTF8)
                if header is None:
                    return
                continue
            if header is None:
                header = [_column_name(cell) for cell in row]
                problem = _check_header(header)
                if problem is not None:
                    yield ManifestError(manifest, line, problem)
                    return
                continue
            if len(row) != len(header):
                yield ManifestError(
                    manifest,
                    line,
                    f"row has {len(row)} fields but the header names {len(header)} columns",
                )
                continue
            yield _csv_entry(manifest, line, base, dict(zip(header, row, strict=True)))
        if header is None:
            yield ManifestError(manifest, None, "empty manifest: no header row")


_NOT_UTF8 = "not UTF-8 text"


def _is_utf8(cells: list[str]) -> bool:
    try:
        "".join(cells).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _column_name(cell: str) -> str:
    """Header cells naming a known field are matched without regard to case."""
    name = cell.strip()
    return name.lower() if name.lower() in FIELDS else name


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (JSON has no such number)")


def _parse_json(text: str) -> Any:
    """Strict JSON: NaN and Infinity, which Python would accept, are refused."""
    return json.loads(text, parse_constant=_reject_constant)


def _check_header(header: list[str]) -> str | None:
    if "path" not in header:
        return f"the header row has no 'path' column (columns: {', '.join(header)})"
    if "" in header:
        return "the header row has an unnamed column"
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        return f"the header row names a column twice: {', '.join(duplicates)}"
    return None


def _csv_entry(
    manifest: str, line: int, base: Path, row: dict[str, str]
) -> ManifestEntry | ManifestError:
    metadata: dict[str, Any] = {}
    raw_metadata = row.get("metadata", "").strip()
    if raw_metadata:
        try:
            parsed = _parse_json(raw_metadata)
        except json.JSONDecodeError as exc:
            return ManifestError(manifest, line, f"'metadata' is not valid JSON: {exc.msg}")
        except ValueError as exc:
            return ManifestError(manifest, line, f"'metadata' is not valid JSON: {exc}")
        if not isinstance(parsed, dict):
            return ManifestError(manifest, line, "'metadata' must be a JSON object")
        metadata.update(parsed)
    for column, value in row.items():
        if column not in FIELDS and value.strip():
            metadata[column] = value.strip()
    fields = {name: (row.get(name) or "").strip() or None for name in _TEXT_FIELDS}
    return _entry(manifest, line, base, (row.get("path") or "").strip(), fields, metadata)


def _read_jsonl(manifest: str) -> Iterator[ManifestEntry | ManifestError]:
    base = Path(manifest).resolve().parent
    with open(manifest, "rb") as handle:
        for line, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
            except UnicodeDecodeError:
                yield ManifestError(manifest, line, _NOT_UTF8)
                continue
            if not text.strip():
                continue
            try:
                row = _parse_json(text)
            except json.JSONDecodeError as exc:
                problem = f"not valid JSON: {exc.msg} (column {exc.colno})"
                yield ManifestError(manifest, line, problem)
                continue
            except ValueError as exc:
                yield ManifestError(manifest, line, f"not valid JSON: {exc}")
                continue
            if not isinstance(row, dict):
                yield ManifestError(manifest, line, "each line must be a JSON object")
                continue
            yield _jsonl_entry(manifest, line, base, row)


def _jsonl_entry(
    manifest: str, line: int, base: Path, row: dict[str, Any]
) -> ManifestEntry | ManifestError:
    raw_path = row.get("path")
    if not isinstance(raw_path, str):
        if raw_path is None:
            return ManifestError(manifest, line, "missing 'path'")
        return ManifestError(manifest, line, "'path' must be a string")
    fields: dict[str, str | None] = {}
    for name in _TEXT_FIELDS:
        value = row.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and name != "title":
            value = str(value)  # numeric ids are common in catalogues
        if value is not None and not isinstance(value, str):
            return ManifestError(
                manifest, line, f"{name!r} must be a string, not {type(value).__name__}"
            )
        fields[name] = (value.strip() or None) if value is not None else None
    metadata: dict[str, Any] = {k: v for k, v in row.items() if k not in FIELDS}
    explicit = row.get("metadata")
    if explicit is not None:
        if not isinstance(explicit, dict):
            return ManifestError(manifest, line, "'metadata' must be a JSON object")
        metadata.update(explicit)
    return _entry(manifest, line, base, raw_path.strip(), fields, metadata)


def _entry(
    manifest: str,
    line: int,
    base: Path,
    raw_path: str,
    fields: dict[str, str | None],
    metadata: dict[str, Any],
) -> ManifestEntry | ManifestError:
    if not raw_path:
        return ManifestError(manifest, line, "empty 'path'")
    if "\0" in raw_path:
        return ManifestError(manifest, line, "'path' contains a NUL character")
    resolved = base / os.path.expanduser(raw_path)
    return ManifestEntry(
        path=os.path.normpath(resolved),
        title=fields["title"],
        external_id=fields["external_id"],
        owner=fields["owner"],
        content_id=fields["content_id"],
        metadata=metadata,
        manifest=manifest,
        line=line,
    )
