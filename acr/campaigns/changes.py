"""Campaign state changes, each with its event in the same transaction.

``campaign.created`` and ``campaign.updated`` events carry the campaign as
``data.object`` (:func:`~acr.campaigns.documents.campaign_document`) and, for
updates, the old values of what changed as ``data.previous_attributes`` (as
Stripe's events do), e.g. ``{"status": "scheduled"}`` when a schedule starts a
campaign.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from acr.campaigns.documents import campaign_document
from acr.campaigns.lifecycle import LIVE, Status, advance
from acr.db.models import Campaign, utcnow
from acr.db.session import write_session
from acr.events import emit


def record_created(session: Session, campaign: Campaign) -> None:
    """Emit ``campaign.created`` for a new (flushed) campaign."""
    emit(
        session,
        "campaign.created",
        {"object": campaign_document(campaign)},
        organisation_id=campaign.organisation_id,
    )


def record_updated(session: Session, campaign: Campaign, previous: dict[str, Any]) -> None:
    """Emit ``campaign.updated``; ``previous`` holds the changed fields' old values."""
    session.flush()  # so that updated_at and new triggers are in the document
    emit(
        session,
        "campaign.updated",
        {"object": campaign_document(campaign), "previous_attributes": previous},
        organisation_id=campaign.organisation_id,
    )


def set_status(session: Session, campaign: Campaign, status: Status) -> bool:
    """Move ``campaign`` to ``status`` (with its event); False if it already was there."""
    previous = campaign.status
    if previous == status:
        return False
    campaign.status = status.value
    record_updated(session, campaign, {"status": previous})
    return True


def apply_advance(session: Session, campaign: Campaign, now: datetime) -> bool:
    """Persist what the schedule says about ``campaign`` at ``now``; True if it changed."""
    return set_status(session, campaign, advance(campaign, now))


def due(now: datetime) -> ColumnElement[bool]:
    """SQL condition: the schedule moves this campaign at ``now`` (see :func:`advance`)."""
    return or_(
        and_(
            Campaign.status == Status.SCHEDULED.value,
            or_(Campaign.start_at.is_(None), Campaign.start_at <= now),
        ),
        and_(
            Campaign.status.in_([status.value for status in LIVE]),
            Campaign.end_at.is_not(None),
            Campaign.end_at <= now,
        ),
    )


def apply_schedules(
    sessions: sessionmaker[Session],
    now: datetime | None = None,
    *,
    organisation_id: str | None = None,
    batch: int = 200,
) -> bool:
    """The scheduler tick: start and complete the campaigns whose time has come.

    Looks for due campaigns in a read transaction first, so that the usual tick
    (nothing due) never takes SQLite's write lock; then moves them in one write
    transaction, with their rows locked on PostgreSQL and the condition checked
    again under the lock (a concurrent tick or serve may have moved them).

    Parameters
    ----------
    sessions : sessionmaker
        The service's session factory.
    now : datetime, optional
        The time to apply; the current time if not given.
    organisation_id : str, optional
        Only this organisation's campaigns (the API applies them before it reads).
    batch : int
        Most campaigns moved per call.

    Returns
    -------
    bool
        True if a full batch was moved and more may be due (run again at once),
        as :class:`acr.periodic.PeriodicTask` expects.
    """
    now = now or utcnow()
    condition = due(now)
    if organisation_id is not None:
        condition = and_(condition, Campaign.organisation_id == organisation_id)
    with sessions() as session:
        ids = session.scalars(
            select(Campaign.id).where(condition).order_by(Campaign.id).limit(batch)
        ).all()
    if not ids:
        return False
    with write_session(sessions) as session:
        rows = session.scalars(
            select(Campaign)
            .where(Campaign.id.in_(ids), condition)
            .order_by(Campaign.id)
            .with_for_update()
        ).all()
        for campaign in rows:
            apply_advance(session, campaign, now)
        session.commit()
    return len(ids) == batch
