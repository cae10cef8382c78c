"""``Idempotency-Key`` for a route: replay a finished request, or reserve the key for this one.

The routes that create engagements or move money share this one sequence::

    post = IdempotentPost(services.sessions, principal.key_id, key, path, request_hash)
    if (replayed := post.replay(response)) is not None:
        return replayed
    with post.released_on_error(), write_session(services.sessions) as session:
        ...                                   # the effects
        post.complete(session, 201, document)  # stored beside them
        session.commit()

See :mod:`acr.idempotency` for the rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from acr import idempotency
from api.problems import Problem

IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=idempotency.MAX_KEY_LENGTH,
        description="Retries with the same key and body get the first answer and change nothing",
    ),
]

REPLAYED_HEADER = "Idempotent-Replayed"


def body_fingerprint(body: BaseModel, *parts: str) -> str:
    """The request hash of a JSON body (canonical form) and any other deciding parts."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return idempotency.request_fingerprint(canonical, *parts)


@dataclass(frozen=True)
class IdempotentPost:
    """One POST with an optional ``Idempotency-Key`` (``key`` None: nothing to do)."""

    sessions: sessionmaker[Session]
    principal: str
    key: str | None
    path: str
    request_hash: str

    def replay(self, response: Response) -> dict[str, Any] | None:
        """Reserve the key; return the first answer if this is a retry of a finished request.

        Raises
        ------
        Problem
            409 ``idempotency_mismatch`` (the key was used for another request) or
            ``idempotency_in_progress`` (its first request is still running).
        """
        if self.key is None:
            return None
        try:
            stored = idempotency.reserve(
                self.sessions,
                principal=self.principal,
                key=self.key,
                method="POST",
                path=self.path,
                request_hash=self.request_hash,
            )
        except idempotency.IdempotencyConflictError as conflict:
            code = "idempotency_in_progress" if conflict.in_progress else "idempotency_mismatch"
            raise Problem(409, code, str(conflict)) from None
        if stored is None:
            return None
        response.status_code = stored.status_code
        response.headers[REPLAYED_HEADER] = "true"
        return stored.body

    def complete(self, session: Session, status_code: int, body: dict[str, Any]) -> None:
        """Store the answer in ``session``'s transaction, beside the effects it reports."""
        if self.key is not None:
            idempotency.complete(
                session, principal=self.principal, key=self.key, status_code=status_code, body=body
            )

    @contextmanager
    def released_on_error(self) -> Iterator[None]:
        """Free the key if the request fails, so that a corrected retry can use it."""
        try:
            yield
        except BaseException:
            if self.key is not None:
                idempotency.release(self.sessions, principal=self.principal, key=self.key)
            raise


def replayed_header(status: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI for a route's success answer that may be a replay."""
    return {
        status: {
            "headers": {
                REPLAYED_HEADER: {
                    "description": "`true` when this is the stored answer to an earlier request",
                    "schema": {"type": "string"},
                }
            }
        }
    }
