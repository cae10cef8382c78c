"""Which campaigns a matched moment serves, and the engagements that serving records.

Used by the match endpoint, inside its write transaction. Choices:

* A trigger covers an offset in its half-open window ``[start_s, end_s)``; a
  whole-content trigger (both null) covers every offset. When several triggers of
  one campaign cover the moment, the windowed one wins over a whole-content one
  (it is the more specific), then the smallest id: one engagement per campaign.
* A campaign serves when it is running at ``now`` by its status and schedule
  (scheduled ones past ``start_at`` start here, and ones past ``end_at``
  complete here, persisted with their events, so a slow scheduler tick never
  matters) and ``now`` is inside its day-parting.
* Targeting lists are ANDed; an empty list means any. Countries compare
  upper-case, platforms lower-case; an unknown country, platform or app does
  not match a non-empty list.
* Budgets and frequency caps are counted from the engagement rows themselves,
  never from a stored counter, so they cannot drift. The total budget counts
  every engagement; the daily budget those of the calendar day of ``now`` in
  the campaign's time zone; the frequency cap counts the viewer's engagements in
  the last ``frequency_period_s`` seconds (ever, when there is no period).
  A serve is allowed when the spend *including the new cost* stays within the
  budget, so a budget is never overspent; a cost that does not fit is skipped
  even if a cheaper campaign after it fits.
* Concurrency: on PostgreSQL the campaigns whose serving reads or writes
  shared state (a budget, a frequency cap, a status to move) are locked with
  ``SELECT … FOR UPDATE`` in id order (no deadlocks between matches) before the
  counting, and re-read under the lock; READ COMMITTED then shows each counting
  statement every engagement committed before it. On SQLite the caller's
  ``BEGIN IMMEDIATE`` (:func:`acr.db.session.write_session`) serialises writers.
* Order: priority (high first), then cost per engagement (high first), then id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select
from sqlalchemy.orm import Session

from acr.campaigns.changes import apply_advance
from acr.campaigns.lifecycle import Status, advance, servable, zone
from acr.db.models import Base, Campaign, Content, Engagement, Trigger, new_id
from acr.events import emit_now


@dataclass(frozen=True)
class Moment:
    """What a viewer is watching, as matched, and who they are."""

    content_id: str
    offset_s: float
    confidence: float
    viewer_hash: str
    """Already hashed by the caller."""
    app_id: str | None
    country: str | None
    """ISO 3166-1 alpha-2, upper-case, or None."""
    platform: str | None


@dataclass(frozen=True)
class ServedCampaign:
    campaign_id: str
    name: str
    advertiser: str
    trigger_id: str
    engagement_id: str
    payload: dict[str, Any]
    cost: int
    currency: str


def targets(targeting: dict[str, Any], moment: Moment) -> bool:
    """Whether ``moment``'s viewer is in the campaign's audience (empty lists mean any)."""
    countries = targeting.get("countries") or []
    if countries and (moment.country or "").upper() not in countries:
        return False
    platforms = targeting.get("platforms") or []
    if platforms and (moment.platform or "").lower() not in platforms:
        return False
    app_ids = targeting.get("app_ids") or []
    return not app_ids or moment.app_id in app_ids


def day_bounds(timezone: str, now: datetime) -> tuple[datetime, datetime]:
    """The calendar day of ``now`` in ``timezone``, as a UTC ``[start, end)``."""
    place = zone(timezone)
    day = now.astimezone(place).date()
    start = datetime.combine(day, time(), tzinfo=place)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=place)
    return start.astimezone(UTC), end.astimezone(UTC)


def owner_share(cost: int, revenue_share_bps: int) -> int:
    """The content owner's part of ``cost``, rounded down (the platform keeps the fraction)."""
    return cost * revenue_share_bps // 10_000


def _has_limits(campaign: Campaign) -> bool:
    return (
        campaign.budget_total is not None
        or campaign.budget_daily is not None
        or campaign.frequency_cap is not None
    )


def _spent(
    session: Session, campaign_id: str, since: datetime | None = None, until: datetime | None = None
) -> int:
    query = select(func.coalesce(func.sum(Engagement.cost), 0)).where(
        Engagement.campaign_id == campaign_id
    )
    if since is not None:
        query = query.where(Engagement.created_at >= since)
    if until is not None:
        query = query.where(Engagement.created_at < until)
    return int(session.scalar(query) or 0)


def _within_limits(session: Session, campaign: Campaign, moment: Moment, now: datetime) -> bool:
    """Whether one more engagement keeps the budgets and the viewer's frequency cap."""
    cost = campaign.cost_per_engagement
    if campaign.budget_total is not None and (
        _spent(session, campaign.id) + cost > campaign.budget_total
    ):
        return False
    if campaign.budget_daily is not None:
        start, end = day_bounds(campaign.timezone, now)
        if _spent(session, campaign.id, start, end) + cost > campaign.budget_daily:
            return False
    if campaign.frequency_cap is not None:
        query = select(func.count()).where(
            Engagement.campaign_id == campaign.id, Engagement.viewer_hash == moment.viewer_hash
        )
        if campaign.frequency_period_s is not None:
            query = query.where(
                Engagement.created_at > now - timedelta(seconds=campaign.frequency_period_s)
            )
        if int(session.scalar(query) or 0) >= campaign.frequency_cap:
            return False
    return True


# Built once: a statement's SQL is then compiled once per process and only its
# parameters change from match to match.
_CANDIDATES = (
    select(Trigger, Campaign, Content.owner_account_id)
    .join(Campaign, Trigger.campaign_id == Campaign.id)
    .join(Content, Trigger.content_id == Content.id)
    .where(
        Trigger.content_id == bindparam("content_id"),
        Content.deleted_at.is_(None),
        Campaign.status.in_([Status.SCHEDULED.value, Status.RUNNING.value]),
        or_(Trigger.start_s.is_(None), Trigger.start_s <= bindparam("offset")),
        or_(Trigger.end_s.is_(None), Trigger.end_s > bindparam("offset")),
    )
)
"""Triggers covering a moment (``content_id``, ``offset``) of campaigns that may serve."""

_INSERT_ENGAGEMENT = insert(Base.metadata.tables[Engagement.__tablename__])
"""A plain insert, executed at once: the next campaign's counting sees the row, and
the session's unit of work (its flush) has nothing to track."""


def _trigger_rank(trigger: Trigger) -> tuple[bool, str]:
    return (trigger.start_s is None and trigger.end_s is None, trigger.id)


def serve(session: Session, moment: Moment, *, limit: int, now: datetime) -> list[ServedCampaign]:
    """Campaigns to show for this moment, best first; records one engagement per campaign.

    Each engagement gets an ``engagement.created`` event (for payouts) with the
    campaign's organisation as ``organisation_id``, the content owner's account
    as ``account_id`` and as data ``engagement_id``, ``campaign_id``,
    ``trigger_id``, ``content_id``, ``organisation_id``, ``app_id``, ``cost``,
    ``currency``, ``owner_share``, ``owner_account_id``, ``created_at``. Runs in
    the caller's transaction (opened with :func:`acr.db.session.write_session`);
    the caller commits.

    Parameters
    ----------
    session : Session
        The caller's write session.
    moment : Moment
        The match and the viewer.
    limit : int
        Most campaigns to serve.
    now : datetime
        The time of the match (aware); engagements are stamped with it.
    """
    if limit <= 0:
        return []
    rows = session.execute(
        _CANDIDATES, {"content_id": moment.content_id, "offset": moment.offset_s}
    ).all()
    best: dict[str, tuple[Trigger, Campaign, str | None]] = {}
    for trigger, campaign, owner_account_id in rows:
        if not targets(campaign.targeting or {}, moment):
            continue
        held = best.get(campaign.id)
        if held is None or _trigger_rank(trigger) < _trigger_rank(held[0]):
            best[campaign.id] = (trigger, campaign, owner_account_id)
    if not best:
        return []

    # Lock, in id order, whatever this serve counts or moves; re-read it under the lock.
    locked = sorted(
        campaign.id
        for _, campaign, _ in best.values()
        if _has_limits(campaign) or advance(campaign, now) != campaign.status
    )
    if locked:
        session.scalars(
            select(Campaign)
            .where(Campaign.id.in_(locked))
            .order_by(Campaign.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).all()

    ranked = sorted(
        best.values(),
        key=lambda row: (-row[1].priority, -row[1].cost_per_engagement, row[1].id),
    )
    served: list[ServedCampaign] = []
    for trigger, campaign, owner_account_id in ranked:
        if len(served) >= limit:
            break
        apply_advance(session, campaign, now)
        if not servable(campaign, now) or not _within_limits(session, campaign, moment, now):
            continue
        served.append(_record(session, campaign, trigger, owner_account_id, moment, now))
    return served


def _record(
    session: Session,
    campaign: Campaign,
    trigger: Trigger,
    owner_account_id: str | None,
    moment: Moment,
    now: datetime,
) -> ServedCampaign:
    cost = campaign.cost_per_engagement
    engagement_id = new_id("eng")
    share = owner_share(cost, campaign.revenue_share_bps)
    session.execute(
        _INSERT_ENGAGEMENT,
        {
            "id": engagement_id,
            "campaign_id": campaign.id,
            "trigger_id": trigger.id,
            "organisation_id": campaign.organisation_id,
            "content_id": moment.content_id,
            "app_id": moment.app_id,
            "viewer_hash": moment.viewer_hash,
            "country": moment.country,
            "platform": moment.platform,
            "offset_s": moment.offset_s,
            "confidence": moment.confidence,
            "cost": cost,
            "currency": campaign.currency,
            "owner_account_id": owner_account_id,
            "owner_share": share,
            "created_at": now,
        },
    )
    emit_now(
        session,
        "engagement.created",
        {
            "engagement_id": engagement_id,
            "campaign_id": campaign.id,
            "trigger_id": trigger.id,
            "content_id": moment.content_id,
            "organisation_id": campaign.organisation_id,
            "app_id": moment.app_id,
            "cost": cost,
            "currency": campaign.currency,
            "owner_share": share,
            "owner_account_id": owner_account_id,
            "created_at": now.astimezone(UTC).isoformat(),
        },
        organisation_id=campaign.organisation_id,
        account_id=owner_account_id,
    )
    return ServedCampaign(
        campaign_id=campaign.id,
        name=campaign.name,
        advertiser=campaign.advertiser,
        trigger_id=trigger.id,
        engagement_id=engagement_id,
        payload=dict(campaign.payload or {}),
        cost=cost,
        currency=campaign.currency,
    )
