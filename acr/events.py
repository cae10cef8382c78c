"""Every state change is an event, in Stripe's shape: ``{id, type, created, data}``.

Events are written in the same transaction as the change they describe, so
that an event exists exactly when its change does; the payouts module and the
webhook sender read them from the table.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from acr.db.models import Event


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
