"""The campaign lists (All, Running, ACR), a campaign's page, and its status actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from acr.auth import Principal
from acr.campaigns.lifecycle import READ_ONLY, Action, allowed_actions
from acr.db.models import Organisation
from api.dashboard.pages import PREFIX, PageRoute, render
from api.dashboard.reports import report_document
from api.dashboard.session import FormDep, VisitorDep
from api.deps import ServicesDep, SessionDep
from api.problems import Problem
from api.routers import campaigns as campaigns_api
from api.routers import content as content_api
from api.routers.match import ServedCampaignView

router = APIRouter(route_class=PageRoute)

VIEWS = {"all": "All campaigns", "running": "Running campaigns", "acr": "ACR campaigns"}
"""The API's list views, by the name of their page."""
PAGE_SIZE = 20
ACTION_LABELS = {
    Action.SCHEDULE: "Schedule",
    Action.START: "Start",
    Action.PAUSE: "Pause",
    Action.RESUME: "Resume",
    Action.COMPLETE: "End",
    Action.ARCHIVE: "Archive",
}
NOTICES = {
    "created": "Campaign created as a draft: start or schedule it to serve.",
    "saved": "Campaign saved.",
    Action.SCHEDULE.value: "Scheduled: it runs from its start time.",
    Action.START.value: "Started: the campaign is serving.",
    Action.PAUSE.value: "Paused: nothing is served until you resume it.",
    Action.RESUME.value: "Resumed: the campaign is serving again.",
    Action.COMPLETE.value: "Ended for good.",
    Action.ARCHIVE.value: "Archived.",
}
"""Messages after a redirect, by a fixed code (the query string never carries text)."""


@dataclass(frozen=True)
class Listed:
    """A campaign of a list with what its report says so far."""

    campaign: campaigns_api.CampaignView
    engagements: int
    spend: int

    @property
    def spend_percent(self) -> float | None:
        budget = self.campaign.budget_total
        return None if not budget else min(100.0, 100 * self.spend / budget)


def _listed(principal: Principal, session: Session, campaign: Any) -> Listed:
    totals = report_document(principal, session, campaign.id)["totals"]
    return Listed(campaign, totals["engagements"], totals["spend"])


def _list_page(
    request: Request,
    view: str,
    visitor: VisitorDep,
    services: ServicesDep,
    session: SessionDep,
    q: str | None,
    after: str | None,
) -> Response:
    page = campaigns_api.list_campaigns(
        visitor.principal,
        services,
        session,
        view=view,  # type: ignore[arg-type] # one of VIEWS
        status=None,
        q=q or None,
        organisation_id=None,
        content_id=None,
        sort="-created_at",
        limit=PAGE_SIZE,
        starting_after=after or None,
    )
    return render(
        request,
        "campaigns.html",
        {
            "view": view,
            "views": VIEWS,
            "title": VIEWS[view],
            "q": q or "",
            "rows": [_listed(visitor.principal, session, c) for c in page.data],
            # Admins see every organisation's campaigns: say whose each one is.
            "organisations": (
                {
                    row.id: row.name
                    for row in session.execute(select(Organisation.id, Organisation.name))
                }
                if visitor.is_admin
                else {}
            ),
            "next_cursor": page.next_cursor,
        },
    )


@router.get("/campaigns")
def all_campaigns(
    request: Request,
    visitor: VisitorDep,
    services: ServicesDep,
    session: SessionDep,
    q: str | None = None,
    after: str | None = None,
) -> Response:
    return _list_page(request, "all", visitor, services, session, q, after)


@router.get("/campaigns/running")
def running_campaigns(
    request: Request,
    visitor: VisitorDep,
    services: ServicesDep,
    session: SessionDep,
    q: str | None = None,
    after: str | None = None,
) -> Response:
    return _list_page(request, "running", visitor, services, session, q, after)


@router.get("/campaigns/acr")
def acr_campaigns(
    request: Request,
    visitor: VisitorDep,
    services: ServicesDep,
    session: SessionDep,
    q: str | None = None,
    after: str | None = None,
) -> Response:
    return _list_page(request, "acr", visitor, services, session, q, after)


@dataclass(frozen=True)
class Window:
    """A trigger drawn on its content's timeline, in percent of the content's length."""

    trigger_id: str
    start_s: float | None
    end_s: float | None
    left: float
    width: float


@dataclass(frozen=True)
class Timeline:
    content_id: str
    title: str
    duration_s: float | None
    scale_s: float
    """Length the timeline shows: the content's, or up to the last window if unknown."""
    windows: list[Window]

    @property
    def ticks(self) -> list[tuple[float, float]]:
        """(seconds, percent) of five evenly spaced marks."""
        return [(self.scale_s * i / 4, 25.0 * i) for i in range(5)]


def timelines(
    principal: Principal, session: Session, campaign: campaigns_api.CampaignView
) -> list[Timeline]:
    """Each triggering content with its triggers' offset windows."""
    by_content: dict[str, list[campaigns_api.TriggerView]] = {}
    for trigger in campaign.triggers:
        by_content.setdefault(trigger.content_id, []).append(trigger)
    result = []
    for content_id, triggers in by_content.items():
        try:
            content = content_api.get_content(content_id, principal, session)
            title, duration = content.title, content.duration_s
        except Problem:
            title, duration = content_id, None
        ends = [t.end_s for t in triggers if t.end_s is not None]
        scale = duration or max(ends, default=0.0) or 1.0
        windows = []
        for t in sorted(triggers, key=lambda t: (t.start_s or 0.0, t.id)):
            start = 0.0 if t.start_s is None else min(t.start_s, scale)
            end = scale if t.end_s is None else min(t.end_s, scale)
            windows.append(
                Window(t.id, t.start_s, t.end_s, 100 * start / scale, 100 * (end - start) / scale)
            )
        result.append(Timeline(content_id, title, duration, scale, windows))
    return result


@router.get("/campaigns/{campaign_id}")
def campaign_page(
    request: Request,
    campaign_id: str,
    visitor: VisitorDep,
    services: ServicesDep,
    session: SessionDep,
    notice: str = "",
) -> Response:
    campaign = campaigns_api.get_campaign(campaign_id, visitor.principal, services, session)
    return _campaign_page(
        request, visitor.principal, session, campaign, notice=NOTICES.get(notice, "")
    )


def _campaign_page(
    request: Request,
    principal: Principal,
    session: Session,
    campaign: campaigns_api.CampaignView,
    *,
    notice: str = "",
    error: str = "",
    status_code: int = 200,
) -> Response:
    served = ServedCampaignView(
        id=campaign.id,
        name=campaign.name,
        advertiser=campaign.advertiser,
        trigger_id=campaign.triggers[0].id if campaign.triggers else "trg_…",
        engagement_id="eng_…",
        payload=campaign.payload,
    )
    totals = report_document(principal, session, campaign.id)["totals"]
    return render(
        request,
        "campaign.html",
        {
            "campaign": campaign,
            "actions": [(a.value, ACTION_LABELS[a]) for a in allowed_actions(campaign.status)],
            "editable": campaign.status not in READ_ONLY,
            "timelines": timelines(principal, session, campaign),
            "served_json": served.model_dump_json(indent=2),
            "totals": totals,
            "notice": notice,
            "error": error,
        },
        status_code=status_code,
    )


@router.post("/campaigns/{campaign_id}/actions/{action}")
def campaign_action(
    request: Request,
    campaign_id: str,
    action: Action,
    visitor: VisitorDep,
    services: ServicesDep,
    _posted: FormDep,
) -> Response:
    try:
        campaigns_api.ACTION_ROUTES[action](campaign_id, visitor.principal, services)
    except Problem as problem:
        if problem.status != 409:
            raise
        with services.sessions() as session:
            campaign = campaigns_api.get_campaign(campaign_id, visitor.principal, services, session)
            return _campaign_page(
                request, visitor.principal, session, campaign, error=problem.detail, status_code=409
            )
    return RedirectResponse(
        f"{PREFIX}/campaigns/{campaign_id}?notice={action.value}", status_code=303
    )
