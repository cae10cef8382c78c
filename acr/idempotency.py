"""``Idempotency-Key``: a retried request gets the first response, and changes nothing twice.

The first request with a key reserves it (a row with no response yet), does its
work, and stores its response in the same transaction as its effects, so that
either both or neither exist. A retry with the same key and the same request
replays the stored response; with a different request it is refused, as is a
retry that arrives while the first is still being handled.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from acr.db.models import IdempotencyRecord, utcnow

MAX_KEY_LENGTH = 255
STALE_RESERVATION = timedelta(seconds=120)
"""A reservation this old without a response belongs to a request that died."""


class IdempotencyConflictError(Exception):
    """The key was used for another request, or its first request is still running."""

    def __init__(self, message: str, *, in_progress: bool) -> None:
        super().__init__(message)
        self.in_progress = in_progress


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: dict[str, Any]


def request_fingerprint(*parts: bytes | str | None) -> str:
    """SHA-256 over the parts of a request that decide its outcome."""
    digest = hashlib.sha256()
    for part in parts:
        data = b"\x00" if part is None else part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def reserve(
    sessions: sessionmaker[Session],
    *,
    principal: str,
    key: str,
    method: str,
    path: str,
    request_hash: str,
) -> Replay | None:
    """Claim ``key`` for this request, or return the response to replay.

    Returns
    -------
    Replay or None
        The stored response when this is a retry of a finished request; None
        when the key is now reserved for this request (call :func:`complete`
        or :func:`release`).

    Raises
    ------
    IdempotencyConflictError
        Same key, different request (or endpoint); or the first request is in flight.
    """
    with sessions() as session:
        session.add(
            IdempotencyRecord(
                principal=principal, key=key, method=method, path=path, request_hash=request_hash
            )
        )
        try:
            session.commit()
            return None
        except IntegrityError:
            session.rollback()
        found = session.scalars(
            select(IdempotencyRecord)
            .where(IdempotencyRecord.principal == principal, IdempotencyRecord.key == key)
            # Row-locked on PostgreSQL, so that only one retry can take over a stale reservation.
            .with_for_update()
        ).one()
        if (found.method, found.path, found.request_hash) != (method, path, request_hash):
            raise IdempotencyConflictError(
                "this Idempotency-Key was used with a different request", in_progress=False
            )
        if found.status_code is None or found.response_body is None:
            if utcnow() - found.created_at > STALE_RESERVATION:
                # Its server died mid-request; nothing it did was committed, so start over.
                found.created_at = utcnow()
                session.commit()
                return None
            raise IdempotencyConflictError(
                "a request with this Idempotency-Key is still being handled", in_progress=True
            )
        return Replay(found.status_code, found.response_body)


def complete(
    session: Session, *, principal: str, key: str, status_code: int, body: dict[str, Any]
) -> None:
    """Store the response in the caller's transaction (beside the effects it reports)."""
    record = session.scalars(
        select(IdempotencyRecord).where(
            IdempotencyRecord.principal == principal, IdempotencyRecord.key == key
        )
    ).one()
    record.status_code = status_code
    record.response_body = body


def release(sessions: sessionmaker[Session], *, principal: str, key: str) -> None:
    """Forget a reservation whose request failed before it changed anything, so it can retry."""
    with sessions() as session:
        session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.principal == principal,
                IdempotencyRecord.key == key,
                IdempotencyRecord.status_code.is_(None),
            )
        )
        session.commit()
