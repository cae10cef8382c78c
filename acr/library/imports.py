"""Registering media already on the server, by path or through an indexer manifest.

Admins may name server files only inside the configured ``import_roots``: every
path is resolved (symbolic links and ``..`` included) before it is checked, so
that an import cannot be used to read arbitrary files of the server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from acr.db.models import Content
from acr.errors import AcrError
from acr.index.directory import file_sha256
from acr.library.contents import KINDS, NewContent, register_content
from indexer.manifest import ManifestError, is_manifest, read_manifest

__all__ = [
    "ImportPathError",
    "PathNotAllowedError",
    "PlannedImport",
    "hash_planned",
    "manifest_imports",
    "register_planned",
    "resolve_import_path",
]


MAX_TITLE_LENGTH = 500
MAX_OWNER_LENGTH = 64
"""Column sizes of ``Content.title`` and ``Content.owner_account_id``."""


class PathNotAllowedError(AcrError):
    """A path outside every import root (or imports are not configured)."""

    code = "path_not_allowed"


class ImportPathError(AcrError):
    """A path inside the roots that cannot be imported (missing, not a file, bad manifest row)."""

    code = "invalid_import_path"


@dataclass(frozen=True)
class PlannedImport:
    """One file to register in place, with what to record about it."""

    path: Path
    content: NewContent


def resolve_import_path(raw: str, roots: Sequence[Path], *, what: str = "file") -> Path:
    """The real path of ``raw`` if it is a regular file inside one of ``roots``.

    Raises
    ------
    PathNotAllowedError
        No roots are configured, or the path (once resolved) is outside all of them.
    ImportPathError
        The path is relative, missing or not a regular file.
    """
    if not roots:
        raise PathNotAllowedError("importing server files is disabled (no import roots are set)")
    if "\0" in raw or not os.path.isabs(raw):
        raise ImportPathError(f"{what} path {raw!r} must be absolute")
    resolved = Path(os.path.realpath(raw))
    if not any(resolved.is_relative_to(os.path.realpath(root)) for root in roots):
        raise PathNotAllowedError(f"{what} path {raw!r} is outside the import roots")
    # Checked only once the path is known to be allowed: no probing outside the roots.
    if not resolved.exists():
        raise ImportPathError(f"{what} path {raw!r} does not exist")
    if not resolved.is_file():
        raise ImportPathError(f"{what} path {raw!r} is not a regular file")
    return resolved


def manifest_imports(
    manifest: str, roots: Sequence[Path], *, default_kind: str | None
) -> tuple[list[PlannedImport], list[AcrError]]:
    """Read an indexer manifest (CSV or JSON Lines) into imports, and the rows that cannot be.

    The manifest format is :mod:`indexer.manifest`'s. Its ``owner`` is the
    content's owner account, ``external_id`` and ``content_id`` go into
    ``external_ids``, and a ``kind`` column (or key) sets the kind, which
    otherwise is ``default_kind``.

    Raises
    ------
    PathNotAllowedError, ImportPathError
        For the manifest itself.
    """
    path = resolve_import_path(manifest, roots, what="manifest")
    if not is_manifest(path):
        raise ImportPathError(f"manifest {manifest!r} must end in .csv or .jsonl")
    planned: list[PlannedImport] = []
    errors: list[AcrError] = []
    for entry in read_manifest(path):
        if isinstance(entry, ManifestError):
            errors.append(entry)
            continue
        where = f"{entry.manifest}:{entry.line}"
        metadata: dict[str, Any] = dict(entry.metadata)
        kind = metadata.pop("kind", None) or default_kind
        if kind not in KINDS:
            errors.append(
                ImportPathError(f"{where}: kind must be one of {', '.join(sorted(KINDS))}")
            )
            continue
        try:
            media = resolve_import_path(entry.path, roots)
        except AcrError as error:
            errors.append(type(error)(f"{where}: {error.message}"))
            continue
        ids = (("external_id", entry.external_id), ("content_id", entry.content_id))
        external_ids = {name: value for name, value in ids if value is not None}
        if entry.owner is not None and len(entry.owner) > MAX_OWNER_LENGTH:
            errors.append(ImportPathError(f"{where}: owner is longer than {MAX_OWNER_LENGTH}"))
            continue
        if entry.title is not None and len(entry.title) > MAX_TITLE_LENGTH:
            errors.append(ImportPathError(f"{where}: title is longer than {MAX_TITLE_LENGTH}"))
            continue
        content = NewContent(
            title=entry.title or media.stem,
            kind=str(kind),
            owner_account_id=entry.owner,
            external_ids=external_ids,
            metadata=metadata,
        )
        planned.append(PlannedImport(media, content))
    return planned, errors


@dataclass(frozen=True)
class HashedImport:
    """A planned import with the identity of its bytes."""

    plan: PlannedImport
    sha256: str
    size_bytes: int


def hash_planned(planned: Sequence[PlannedImport]) -> list[HashedImport]:
    """Hash every planned file (outside any transaction: this reads them all).

    Raises
    ------
    ImportPathError
        A file cannot be read.
    """
    hashed = []
    for plan in planned:
        try:
            hashed.append(HashedImport(plan, file_sha256(plan.path), os.stat(plan.path).st_size))
        except OSError as error:
            raise ImportPathError(f"cannot read {plan.path}: {error.strerror}") from None
    return hashed


def register_planned(
    session: Session, hashed: Sequence[HashedImport]
) -> list[tuple[Content, bool]]:
    """Register hashed files in place, queued for indexing; the caller commits.

    Returns each file's content and whether it is new (False: the bytes were
    already in the library).
    """
    registered = []
    for item in hashed:
        row, is_new = register_content(
            session,
            item.plan.content,
            sha256=item.sha256,
            size_bytes=item.size_bytes,
            media_path=str(item.plan.path),
            original_filename=item.plan.path.name[:500],
        )
        session.flush()
        registered.append((row, is_new))
    return registered
