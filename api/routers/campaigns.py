"""``/v1/campaigns``: campaign managers run campaigns on the content library.

Choices:

* Tenancy: a campaign_manager key sees and changes only its organisation's
  campaigns; another organisation's campaign answers 404, as a missing one
  does, so ids leak nothing. Admins see every campaign and name the
  ``organisation_id`` of a new one. Viewer-app keys get 403 everywhere here.
* Writes run in :func:`~acr.db.session.write_session` with the campaign row
  locked (``FOR UPDATE`` on PostgreSQL), and emit ``campaign.created`` /
  ``campaign.updated`` in the same transaction.
* The schedule is applied before every read and write (besides the periodic
  tick), so a campaign whose ``end_at`` has passed is shown as completed.
* ``PATCH`` replaces the top-level fields it is given; the nested ``schedule``,
  ``targeting``, ``payload`` and ``frequency_cap`` are replaced as a whole, and
  ``triggers`` replaces every trigger. Completed and archived campaigns are
  read-only (409 ``campaign_read_only``). Status changes only through the action
  routes (``/schedule``, ``/start``, ``/pause``, ``/resume``, ``/complete``,
  ``/archive``); a transition the status does not allow is 409 ``invalid_transition``.
* Triggers may name any live content of the library (processing or ready): the
  advertiser and the content owner are different parties.
* Lists are cursor-paginated, Stripe-like: ``{object: "list", data, has_more,
  next_cursor}``; pass ``next_cursor`` back as ``starting_after``. The sort order
  is keyset-stable under inserts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import ColumnElement, exists, func, or_, select
from sqlalchemy.orm import Session, selectinload

from acr.auth import Principal
from acr.campaigns.changes import apply_advance, apply_schedules, record_created, record_updated
from acr.campaigns.countries import COUNTRIES
from acr.campaigns.documents import campaign_document
from acr.campaigns.lifecycle import (
    READ_ONLY,
    Action,
    InvalidTransitionError,
    Status,
    clock_minutes,
    transition,
    zone,
)
from acr.campaigns.reports import (
    Granularity,
    GroupBy,
    aggregate,
    campaign_facts,
    row_document,
    to_csv,
)
from acr.db.models import App, Campaign, Content, Organisation, Trigger, utcnow
from acr.db.session import write_session
from api.deps import ManagerDep, ServicesDep, SessionDep
from api.pagination import sorted_page, unknown_cursor
from api.problems import Problem, not_found, responses
from api.services import Services

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"], responses=responses(401, 403))

MAX_MINOR_UNITS = 10**15
"""Largest amount of money accepted (fits a BIGINT with room for sums)."""
_URL = r"^https?://\S+$"


def _invalid(loc: list[str | int], msg: str, kind: str = "value_error") -> Problem:
    where = ".".join(str(part) for part in loc)
    return Problem(
        422, "validation_error", f"{where}: {msg}", errors=[{"loc": loc, "msg": msg, "type": kind}]
    )


# -- request bodies ------------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Daypart(Strict):
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        min_length=1, description="Days of the week, 0 = Monday … 6 = Sunday"
    )
    start: str = Field(description="Local start, HH:MM (inclusive)", examples=["18:00"])
    end: str = Field(
        description="Local end, HH:MM (exclusive; 24:00 = midnight; before start: next day)",
        examples=["23:30"],
    )

    @model_validator(mode="after")
    def _window(self) -> Daypart:
        start, end = clock_minutes(self.start), clock_minutes(self.end)
        if start == 24 * 60:
            raise ValueError("a window starts before 24:00")
        if start == end:
            raise ValueError("a window's end differs from its start")
        self.days = sorted(set(self.days))
        return self


class Schedule(Strict):
    start_at: AwareDatetime | None = Field(default=None, description="When a scheduled run starts")
    end_at: AwareDatetime | None = Field(default=None, description="When it completes")
    timezone: str = Field(
        default="UTC", description="IANA zone of day-parting and daily budgets", max_length=64
    )
    dayparts: list[Daypart] = Field(
        default_factory=list, max_length=50, description="Weekly windows; none means always"
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    @model_validator(mode="after")
    def _order(self) -> Schedule:
        if self.start_at and self.end_at and self.start_at >= self.end_at:
            raise ValueError("start_at is before end_at")
        return self


class TriggerIn(Strict):
    content_id: str = Field(max_length=32)
    start_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    end_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _window(self) -> TriggerIn:
        if (self.start_s is None) != (self.end_s is None):
            raise ValueError("give both start_s and end_s, or neither for the whole content")
        if self.start_s is not None and self.end_s is not None and self.start_s >= self.end_s:
            raise ValueError("start_s is before end_s")
        return self


class Payload(Strict):
    """What the viewer app shows; its JSON must fit the service's ``max_payload_bytes``."""

    title: str | None = Field(default=None, max_length=500)
    text: str | None = Field(default=None, max_length=10_000)
    url: str | None = Field(default=None, max_length=2048, pattern=_URL)
    image_url: str | None = Field(default=None, max_length=2048, pattern=_URL)
    coupon_code: str | None = Field(default=None, max_length=100)
    data: dict[str, Any] | None = Field(default=None, description="Anything else, as JSON")


class Targeting(Strict):
    countries: list[str] = Field(
        default_factory=list, max_length=300, description="ISO 3166-1 alpha-2; empty = any"
    )
    platforms: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]] = Field(
        default_factory=list, max_length=50, description="e.g. ios, android; empty = any"
    )
    app_ids: list[str] = Field(default_factory=list, max_length=100, description="empty = any")

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: list[str]) -> list[str]:
        codes = [code.upper() for code in value]
        unknown = [code for code in codes if code not in COUNTRIES]
        if unknown:
            raise ValueError(f"not ISO 3166-1 alpha-2 country codes: {', '.join(unknown)}")
        return sorted(set(codes))

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, value: list[str]) -> list[str]:
        return sorted({platform.lower() for platform in value})

    @field_validator("app_ids")
    @classmethod
    def _app_ids(cls, value: list[str]) -> list[str]:
        return sorted(set(value))


class FrequencyCap(Strict):
    count: int = Field(ge=1, le=1_000_000, description="Engagements per viewer per period")
    period_s: int | None = Field(
        default=None, ge=1, le=366 * 86400, description="Period in seconds; none means ever"
    )


Money = Annotated[int, Field(ge=0, le=MAX_MINOR_UNITS)]


class CampaignFields(Strict):
    schedule: Schedule = Field(default_factory=Schedule)
    triggers: list[TriggerIn] = Field(default_factory=list, max_length=200)
    payload: Payload = Field(default_factory=Payload)
    targeting: Targeting = Field(default_factory=Targeting)
    cost_per_engagement: Money = Field(default=0, description="In minor units of currency")
    currency: str = Field(default="usd", pattern=r"^[A-Za-z]{3}$", description="ISO 4217")
    budget_total: Money | None = Field(default=None, description="Most spend ever; none = no cap")
    budget_daily: Money | None = Field(
        default=None, description="Most spend per calendar day in schedule.timezone"
    )
    frequency_cap: FrequencyCap | None = None
    revenue_share_bps: int = Field(
        default=0, ge=0, le=10_000, description="Content owner's share of each cost, in 1/10000"
    )
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher serves first")

    @field_validator("currency")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class CampaignCreate(CampaignFields):
    organisation_id: str | None = Field(
        default=None, description="Required for admin keys; a campaign manager's is implied"
    )
    name: str = Field(min_length=1, max_length=200)
    advertiser: str = Field(min_length=1, max_length=200)


class CampaignUpdate(CampaignFields):
    """Only the fields given change (see the module notes on nested objects)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    advertiser: str | None = Field(default=None, min_length=1, max_length=200)


_NOT_NULL = ("name", "advertiser", "schedule", "triggers", "payload", "targeting",
             "cost_per_engagement", "currency", "revenue_share_bps", "priority")  # fmt: skip


# -- responses -----------------------------------------------------------------------------


class TriggerView(BaseModel):
    id: str
    object: Literal["trigger"] = "trigger"
    content_id: str
    start_s: float | None
    end_s: float | None
    created_at: datetime


class ScheduleView(BaseModel):
    start_at: datetime | None
    end_at: datetime | None
    timezone: str
    dayparts: list[dict[str, Any]]


class TargetingView(BaseModel):
    countries: list[str]
    platforms: list[str]
    app_ids: list[str]


class CampaignView(BaseModel):
    id: str
    object: Literal["campaign"] = "campaign"
    organisation_id: str
    name: str
    advertiser: str
    status: Status
    schedule: ScheduleView
    triggers: list[TriggerView]
    payload: dict[str, Any]
    targeting: TargetingView
    cost_per_engagement: int
    currency: str
    budget_total: int | None
    budget_daily: int | None
    frequency_cap: FrequencyCap | None
    revenue_share_bps: int
    priority: int
    created_at: datetime
    updated_at: datetime


class CampaignList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CampaignView]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as starting_after for the next page")


class ReportRowView(BaseModel):
    period_start: str = Field(description="Local start of the period, ISO 8601 with offset")
    content_id: str | None = None
    trigger_id: str | None = None
    engagements: int
    unique_viewers: int
    spend: int
    owner_share: int


class ReportTotals(BaseModel):
    engagements: int
    unique_viewers: int
    spend: int
    owner_share: int


class CampaignReport(BaseModel):
    object: Literal["campaign_report"] = "campaign_report"
    campaign_id: str
    currency: str
    granularity: Granularity
    group_by: GroupBy
    timezone: str
    from_: datetime | None = Field(serialization_alias="from")
    to: datetime | None
    rows: list[ReportRowView]
    totals: ReportTotals


def _view(campaign: Campaign) -> CampaignView:
    return CampaignView.model_validate(campaign_document(campaign))


# -- helpers -------------------------------------------------------------------------------


def _scope(principal: Principal) -> str | None:
    """The organisation a key is confined to (None for admins)."""
    return None if principal.is_admin else principal.organisation_id


def _load(session: Session, principal: Principal, campaign_id: str, *, lock: bool) -> Campaign:
    """The caller's campaign (404 if it is not theirs), locked for a write if asked."""
    query = select(Campaign).where(Campaign.id == campaign_id)
    scope = _scope(principal)
    if scope is not None:
        query = query.where(Campaign.organisation_id == scope)
    if lock:
        query = query.with_for_update()
    campaign = session.scalars(query).first()
    if campaign is None:
        raise not_found("campaign", campaign_id)
    return campaign


def _check_triggers(session: Session, triggers: list[TriggerIn], loc: list[str | int]) -> None:
    wanted = {trigger.content_id for trigger in triggers}
    if not wanted:
        return
    live = set(
        session.scalars(
            select(Content.id).where(Content.id.in_(wanted), Content.deleted_at.is_(None))
        )
    )
    for i, trigger in enumerate(triggers):
        if trigger.content_id not in live:
            raise _invalid([*loc, i, "content_id"], f"no content {trigger.content_id!r}")


def _check_targeting(session: Session, targeting: Targeting, loc: list[str | int]) -> None:
    if not targeting.app_ids:
        return
    known = set(session.scalars(select(App.id).where(App.id.in_(targeting.app_ids))))
    for i, app_id in enumerate(targeting.app_ids):
        if app_id not in known:
            raise _invalid([*loc, "app_ids", i], f"no app {app_id!r}")


def _payload(payload: Payload, limit: int) -> dict[str, Any]:
    stored = payload.model_dump(exclude_none=True)
    size = len(json.dumps(stored, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limit:
        raise _invalid(
            ["body", "payload"],
            f"the payload is {size} bytes as JSON; the most is {limit}",
            "payload_too_large",
        )
    return stored


def _targeting(targeting: Targeting) -> dict[str, Any]:
    return targeting.model_dump()


def _triggers(triggers: list[TriggerIn]) -> list[Trigger]:
    return [Trigger(content_id=t.content_id, start_s=t.start_s, end_s=t.end_s) for t in triggers]


def _apply_schedule(campaign: Campaign, schedule: Schedule) -> None:
    # In UTC, as the database gives it back, so that every answer shows the same value.
    campaign.start_at = schedule.start_at and schedule.start_at.astimezone(UTC)
    campaign.end_at = schedule.end_at and schedule.end_at.astimezone(UTC)
    campaign.timezone = schedule.timezone
    campaign.dayparts = [daypart.model_dump() for daypart in schedule.dayparts]


def _apply_frequency(campaign: Campaign, cap: FrequencyCap | None) -> None:
    campaign.frequency_cap = None if cap is None else cap.count
    campaign.frequency_period_s = None if cap is None else cap.period_s


def _changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in before.items()
        if key != "updated_at" and after.get(key) != value
    }


# -- routes --------------------------------------------------------------------------------


@router.post("", status_code=201, responses=responses(422))
def create_campaign(
    body: CampaignCreate, principal: ManagerDep, services: ServicesDep
) -> CampaignView:
    """Create a campaign, as a draft (schedule or start it to serve)."""
    if principal.is_admin:
        if body.organisation_id is None:
            raise _invalid(["body", "organisation_id"], "admin keys name the organisation")
        organisation_id = body.organisation_id
    else:
        assert principal.organisation_id is not None
        if body.organisation_id not in (None, principal.organisation_id):
            raise _invalid(
                ["body", "organisation_id"], "a campaign manager creates in its own organisation"
            )
        organisation_id = principal.organisation_id
    with write_session(services.sessions) as session:
        if principal.is_admin and session.get(Organisation, organisation_id) is None:
            raise _invalid(["body", "organisation_id"], f"no organisation {organisation_id!r}")
        _check_triggers(session, body.triggers, ["body", "triggers"])
        _check_targeting(session, body.targeting, ["body", "targeting"])
        campaign = Campaign(
            organisation_id=organisation_id,
            name=body.name,
            advertiser=body.advertiser,
            status=Status.DRAFT.value,
            payload=_payload(body.payload, services.settings.max_payload_bytes),
            targeting=_targeting(body.targeting),
            priority=body.priority,
            cost_per_engagement=body.cost_per_engagement,
            currency=body.currency,
            budget_total=body.budget_total,
            budget_daily=body.budget_daily,
            revenue_share_bps=body.revenue_share_bps,
            triggers=_triggers(body.triggers),
        )
        _apply_schedule(campaign, body.schedule)
        _apply_frequency(campaign, body.frequency_cap)
        session.add(campaign)
        session.flush()
        record_created(session, campaign)
        session.commit()
        return _view(campaign)


_SORTS: dict[str, Callable[[], Any]] = {
    "created_at": lambda: Campaign.created_at,
    "updated_at": lambda: Campaign.updated_at,
    "name": lambda: Campaign.name,
    "priority": lambda: Campaign.priority,
}
Sort = Literal[
    "created_at", "-created_at", "updated_at", "-updated_at", "name", "-name", "priority",
    "-priority",
]  # fmt: skip


@router.get("", responses=responses(422))
def list_campaigns(
    principal: ManagerDep,
    services: ServicesDep,
    session: SessionDep,
    view: Annotated[
        Literal["all", "running", "acr"],
        Query(description="all; running ones; ACR-triggered ones (with at least one trigger)"),
    ] = "all",
    status: Annotated[list[Status] | None, Query(description="Any of these statuses")] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Substring of name or advertiser")
    ] = None,
    organisation_id: Annotated[str | None, Query(max_length=32)] = None,
    content_id: Annotated[
        str | None, Query(max_length=32, description="Only campaigns triggered by this content")
    ] = None,
    sort: Annotated[Sort, Query(description="Field, with - for descending")] = "-created_at",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[
        str | None, Query(max_length=32, description="A campaign id: the page after it")
    ] = None,
) -> CampaignList:
    """The caller's campaigns, a page at a time."""
    scope = _scope(principal)
    apply_schedules(services.sessions, organisation_id=scope)
    conditions: list[ColumnElement[bool]] = []
    if scope is not None:
        conditions.append(Campaign.organisation_id == scope)
    if organisation_id is not None:
        conditions.append(Campaign.organisation_id == organisation_id)
    if view == "running":
        conditions.append(Campaign.status == Status.RUNNING.value)
    elif view == "acr":
        conditions.append(exists().where(Trigger.campaign_id == Campaign.id))
    if status:
        conditions.append(Campaign.status.in_([s.value for s in status]))
    if q:
        needle = q.lower()
        conditions.append(
            or_(
                func.lower(Campaign.name).contains(needle, autoescape=True),
                func.lower(Campaign.advertiser).contains(needle, autoescape=True),
            )
        )
    if content_id is not None:
        conditions.append(
            exists().where(Trigger.campaign_id == Campaign.id, Trigger.content_id == content_id)
        )
    after = None
    if starting_after is not None:
        after = session.scalars(
            select(Campaign).where(
                Campaign.id == starting_after,
                *([Campaign.organisation_id == scope] if scope is not None else []),
            )
        ).first()
        if after is None:
            raise unknown_cursor("campaign", starting_after)
    page = sorted_page(
        session,
        select(Campaign).where(*conditions).options(selectinload(Campaign.triggers)),
        Campaign,
        column=_SORTS[sort.lstrip("-")](),
        descending=sort.startswith("-"),
        limit=limit,
        after=after,
    )
    return CampaignList(
        data=[_view(campaign) for campaign in page.rows],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/{campaign_id}", responses=responses(404))
def get_campaign(
    campaign_id: str, principal: ManagerDep, services: ServicesDep, session: SessionDep
) -> CampaignView:
    """One campaign with its triggers."""
    apply_schedules(services.sessions, organisation_id=_scope(principal))
    return _view(_load(session, principal, campaign_id, lock=False))


def _editable(session: Session, principal: Principal, campaign_id: str) -> Campaign:
    """The caller's campaign locked for an edit, its schedule applied; 409 if read-only."""
    campaign = _load(session, principal, campaign_id, lock=True)
    apply_advance(session, campaign, utcnow())
    if campaign.status in READ_ONLY:
        session.commit()  # keep what the schedule did
        raise Problem(
            409, "campaign_read_only", f"campaign {campaign_id!r} is {campaign.status}: read-only"
        )
    return campaign


@router.patch("/{campaign_id}", responses=responses(404, 409, 422))
def update_campaign(
    campaign_id: str, body: CampaignUpdate, principal: ManagerDep, services: ServicesDep
) -> CampaignView:
    """Change some of a campaign's fields (not its status: see the action routes)."""
    given = body.model_fields_set
    for name in _NOT_NULL:
        if name in given and getattr(body, name) is None:
            raise _invalid(["body", name], "may not be null")
    with write_session(services.sessions) as session:
        campaign = _editable(session, principal, campaign_id)
        before = campaign_document(campaign)
        if "triggers" in given:
            _check_triggers(session, body.triggers, ["body", "triggers"])
            campaign.triggers = _triggers(body.triggers)
        if "targeting" in given:
            _check_targeting(session, body.targeting, ["body", "targeting"])
            campaign.targeting = _targeting(body.targeting)
        if "payload" in given:
            campaign.payload = _payload(body.payload, services.settings.max_payload_bytes)
        if "schedule" in given:
            _apply_schedule(campaign, body.schedule)
        if "frequency_cap" in given:
            _apply_frequency(campaign, body.frequency_cap)
        for name in ("name", "advertiser", "cost_per_engagement", "currency", "budget_total",
                     "budget_daily", "revenue_share_bps", "priority"):  # fmt: skip
            if name in given:
                setattr(campaign, name, getattr(body, name))
        session.flush()
        previous = _changed(before, campaign_document(campaign))
        if previous:
            record_updated(session, campaign, previous)
            # A new schedule may start or end the campaign at once.
            apply_advance(session, campaign, utcnow())
        session.commit()
        return _view(campaign)


ActionRoute = Callable[[str, Principal, Services], CampaignView]


def _action_route(action: Action) -> ActionRoute:
    def act(campaign_id: str, principal: ManagerDep, services: ServicesDep) -> CampaignView:
        with write_session(services.sessions) as session:
            campaign = _load(session, principal, campaign_id, lock=True)
            now = utcnow()
            apply_advance(session, campaign, now)
            try:
                target = transition(campaign.status, action, end_at=campaign.end_at, now=now)
            except InvalidTransitionError as error:
                session.commit()  # keep what the schedule did
                raise Problem(409, "invalid_transition", str(error)) from None
            previous = campaign.status
            campaign.status = target.value
            record_updated(session, campaign, {"status": previous})
            # `schedule` without a future start_at runs at once.
            apply_advance(session, campaign, now)
            session.commit()
            return _view(campaign)

    act.__name__ = f"{action.value}_campaign"
    act.__doc__ = {
        Action.SCHEDULE: "Arm a draft: it runs from its start_at (now if none) until its end_at.",
        Action.START: "Run a draft or scheduled campaign now.",
        Action.PAUSE: "Stop serving a running campaign for now.",
        Action.RESUME: "Serve a paused campaign again.",
        Action.COMPLETE: "End a scheduled, running or paused campaign for good.",
        Action.ARCHIVE: "Hide a campaign for good (a running one stops).",
    }[action]
    router.post(f"/{{campaign_id}}/{action.value}", responses=responses(404, 409))(act)
    return act


ACTION_ROUTES: dict[Action, ActionRoute] = {action: _action_route(action) for action in Action}
"""``POST /v1/campaigns/{id}/<action>`` by action (the dashboard calls them too)."""


@router.post("/{campaign_id}/triggers", status_code=201, responses=responses(404, 409, 422))
def add_trigger(
    campaign_id: str, body: TriggerIn, principal: ManagerDep, services: ServicesDep
) -> CampaignView:
    """Add a trigger to a campaign; the answer is the whole campaign."""
    with write_session(services.sessions) as session:
        campaign = _editable(session, principal, campaign_id)
        _check_triggers(session, [body], ["body"])
        before = campaign_document(campaign)
        campaign.triggers.append(*_triggers([body]))
        session.flush()
        record_updated(session, campaign, {"triggers": before["triggers"]})
        session.commit()
        return _view(campaign)


@router.delete("/{campaign_id}/triggers/{trigger_id}", responses=responses(404, 409))
def remove_trigger(
    campaign_id: str, trigger_id: str, principal: ManagerDep, services: ServicesDep
) -> CampaignView:
    """Remove one trigger from a campaign; the answer is the whole campaign."""
    with write_session(services.sessions) as session:
        campaign = _editable(session, principal, campaign_id)
        before = campaign_document(campaign)
        kept = [trigger for trigger in campaign.triggers if trigger.id != trigger_id]
        if len(kept) == len(campaign.triggers):
            raise not_found("trigger", trigger_id)
        campaign.triggers = kept
        session.flush()
        record_updated(session, campaign, {"triggers": before["triggers"]})
        session.commit()
        return _view(campaign)


_CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
}


@router.get(
    "/{campaign_id}/report",
    response_model=CampaignReport,
    responses={**responses(404, 422), **_CSV_RESPONSE},
)
def campaign_report(
    campaign_id: str,
    principal: ManagerDep,
    session: SessionDep,
    granularity: Granularity = Granularity.DAY,
    group_by: Annotated[GroupBy, Query(description="Split rows by content or trigger")] = (
        GroupBy.NONE
    ),
    from_: Annotated[
        AwareDatetime | None, Query(alias="from", description="Inclusive start")
    ] = None,
    to: Annotated[AwareDatetime | None, Query(description="Exclusive end")] = None,
    tz: Annotated[str, Query(max_length=64, description="IANA zone of the periods")] = "UTC",
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    """Engagements, unique viewers, spend and owner share by hour or day (JSON or CSV)."""
    try:
        zone(tz)
    except ValueError as error:
        raise _invalid(["query", "tz"], str(error)) from None
    if from_ is not None and to is not None and from_ >= to:
        raise _invalid(["query", "to"], "to is after from")
    campaign = _load(session, principal, campaign_id, lock=False)
    rows, totals = aggregate(
        campaign_facts(session, campaign.id, since=from_, until=to),
        granularity=granularity,
        timezone=tz,
        group_by=group_by,
    )
    if format == "csv":
        return Response(
            to_csv(rows, group_by, campaign.currency),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": (
                    f'attachment; filename="{campaign.id}-{granularity.value}.csv"'
                )
            },
        )
    report = CampaignReport(
        campaign_id=campaign.id,
        currency=campaign.currency,
        granularity=granularity,
        group_by=group_by,
        timezone=tz,
        from_=from_,
        to=to,
        rows=[ReportRowView.model_validate(row_document(row, group_by)) for row in rows],
        totals=ReportTotals(
            engagements=totals.engagements,
            unique_viewers=totals.unique_viewers,
            spend=totals.spend,
            owner_share=totals.owner_share,
        ),
    )
    return Response(report.model_dump_json(by_alias=True), media_type="application/json")
