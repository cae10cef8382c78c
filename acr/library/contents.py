"""The content library in the database: register, look up, change and delete contents.

Every function works inside the caller's session and leaves committing to it,
so that a change and its event (:func:`acr.events.emit`) commit together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, get_args

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from acr.db.models import Content, utcnow
from acr.events import emit

__all__ = [
    "EDITABLE_FIELDS",
    "KINDS",
    "Kind",
    "NewContent",
    "Status",
    "delete_content",
    "find_live_by_sha256",
    "list_query",
    "register_content",
    "to_resource",
    "update_content",
]

Kind = Literal["programme", "advert", "song"]
KINDS: Final = frozenset(get_args(Kind))
Status = Literal["processing", "ready", "failed"]

EDITABLE_FIELDS: Final = ("title", "kind", "owner_account_id", "external_ids", "metadata")
"""What a client may change after registering a content."""


@dataclass(frozen=True)
class NewContent:
    """What a client says about a content it registers."""

    title: str
    kind: str
    owner_account_id: str | None = None
    external_ids: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    organisation_id: str | None = None


def to_resource(row: Content) -> dict[str, Any]:
    """The API's view of a content (datetimes left as datetimes)."""
    return {
        "id": row.id,
        "object": "content",
        "title": row.title,
        "kind": row.kind,
        "status": row.status,
        "failure_reason": row.failure_reason,
        "owner_account_id": row.owner_account_id,
        "external_ids": dict(row.external_ids or {}),
        "metadata": dict(row.extra or {}),
        "duration_s": row.duration_s,
        "sha256": row.sha256,
        "size_bytes": row.size_bytes,
        "original_filename": row.original_filename,
        "organisation_id": row.organisation_id,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "indexed_at": row.indexed_at,
        "deleted_at": row.deleted_at,
    }


def _event_object(row: Content) -> dict[str, Any]:
    """:func:`to_resource` made JSON-ready, for an event's ``data.object``."""
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in to_resource(row).items()
    }


def emit_content_event(
    session: Session, type: str, row: Content, previous: dict[str, Any] | None = None
) -> None:
    """Record ``content.<what>`` with the content as it now is (and what changed, Stripe-like)."""
    data: dict[str, Any] = {"object": _event_object(row)}
    if previous is not None:
        data["previous_attributes"] = previous
    emit(
        session,
        type,
        data,
        organisation_id=row.organisation_id,
        account_id=row.owner_account_id,
    )


def find_live_by_sha256(session: Session, sha256: str) -> Content | None:
    """The content (not deleted) holding exactly these bytes, if any."""
    return session.scalars(
        select(Content).where(Content.sha256 == sha256, Content.deleted_at.is_(None))
    ).first()


def register_content(
    session: Session,
    new: NewContent,
    *,
    sha256: str,
    size_bytes: int,
    media_path: str,
    original_filename: str | None,
) -> tuple[Content, bool]:
    """The content for these bytes: a new one queued for indexing, or the live one holding them.

    Returns
    -------
    content : Content
    created : bool
        False when the bytes were already in the library (``new`` is then ignored).
    """
    existing = find_live_by_sha256(session, sha256)
    if existing is not None:
        return existing, False
    row = Content(
        title=new.title,
        kind=new.kind,
        owner_account_id=new.owner_account_id,
        external_ids=dict(new.external_ids),
        extra=dict(new.metadata),
        organisation_id=new.organisation_id,
        status="processing",
        sha256=sha256,
        size_bytes=size_bytes,
        media_path=media_path,
        original_filename=original_filename,
    )
    try:
        # A savepoint: losing a race to register the same bytes must not undo the
        # caller's other work in this transaction (an import registers many files).
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        # Someone else registered the same bytes between our look and our insert.
        winner = find_live_by_sha256(session, sha256)
        if winner is None:
            raise
        return winner, False
    emit_content_event(session, "content.created", row)
    return row, True


def update_content(session: Session, row: Content, changes: dict[str, Any]) -> bool:
    """Apply ``changes`` (keys from :data:`EDITABLE_FIELDS`); False if nothing changed."""
    previous: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in EDITABLE_FIELDS:
            raise ValueError(f"{name!r} cannot be changed")
        attribute = "extra" if name == "metadata" else name
        current = getattr(row, attribute)
        if current != value:
            previous[name] = current
            setattr(row, attribute, value)
    if not previous:
        return False
    row.updated_at = utcnow()
    session.flush()
    emit_content_event(session, "content.updated", row, previous)
    return True


def delete_content(session: Session, row: Content) -> bool:
    """Mark a content deleted (the row stays: engagements name it); False if it already was.

    The indexing worker takes it out of the index on its next pass.
    """
    if row.deleted_at is not None:
        return False
    row.deleted_at = utcnow()
    row.updated_at = row.deleted_at
    session.flush()
    emit_content_event(session, "content.deleted", row)
    return True


def list_query(
    *,
    status: str | None = None,
    kind: str | None = None,
    owner_account_id: str | None = None,
    q: str | None = None,
    include_deleted: bool = False,
) -> Select[Any]:
    """Contents matching the filters."""
    query = select(Content)
    if not include_deleted:
        query = query.where(Content.deleted_at.is_(None))
    if status is not None:
        query = query.where(Content.status == status)
    if kind is not None:
        query = query.where(Content.kind == kind)
    if owner_account_id is not None:
        query = query.where(Content.owner_account_id == owner_account_id)
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(Content.title.ilike(pattern, escape="\\"))
    return query
