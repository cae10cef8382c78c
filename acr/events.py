"""Every state change is an event, in Stripe's shape: ``{id, type, created, data}``.

Events are written in the same transaction as the change they describe, so
that an event exists exactly when its change does; the payouts module and the
webhook sender read them from the table.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from acr.db.models import Base, Event, new_id, utcnow

_INSERT_EVENT = insert(Base.metadata.tables[Event.__tablename__])


def emit(
    session: Session,
    type: str,
    data: dict[str, Any],
    *,
    organisation_id: str | None = None,
    account_id: str | None = None,
) -> Event:
    """Add an event to the session's transaction (the caller commits)."""
    event = Event(type=type, data=data, organisation_id=organisation_id, account_id=account_id)
    session.add(event)
    return event


def emit_now(
    session: Session,
    type: str,
    data: dict[str, Any],
    *,
    organisation_id: str | None = None,
    account_id: str | None = None,
) -> str:
    """:func:`emit`, written at once by a plain INSERT in the session's transaction; its id.

    For the match path, where flushing one object through the session's unit of
    work would cost more than the rest of the transaction. Nothing to change on
    the event afterwards: it is not an object in the session.
    """
    event_id = new_id("evt")
    session.execute(
        _INSERT_EVENT,
        {
            "id": event_id,
            "type": type,
            "organisation_id": organisation_id,
            "account_id": account_id,
            "data": data,
            "created_at": utcnow(),
        },
    )
    return event_id
