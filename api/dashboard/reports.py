"""A campaign's report: engagements over time, spend against budget, by content and trigger.

The figures come from the API's own report route (the same call as
``GET /v1/campaigns/{id}/report``), and the CSV download is its CSV answer.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from acr.auth import Principal
from acr.campaigns.reports import Granularity, GroupBy
from api.dashboard import charts
from api.dashboard.pages import PageRoute, clock, money, render
from api.dashboard.session import VisitorDep
from api.deps import ServicesDep, SessionDep
from api.problems import Problem
from api.routers import campaigns as campaigns_api
from api.routers import content as content_api


def report_document(
    principal: Principal,
    session: Session,
    campaign_id: str,
    *,
    granularity: Granularity = Granularity.DAY,
    group_by: GroupBy = GroupBy.NONE,
    tz: str = "UTC",
) -> dict[str, Any]:
    """The JSON report of ``GET /v1/campaigns/{id}/report``, as a document."""
    answer = campaigns_api.campaign_report(
        campaign_id,
        principal,
        session,
        granularity=granularity,
        group_by=group_by,
        from_=None,
        to=None,
        tz=tz,
        format="json",
    )
    document: dict[str, Any] = json.loads(bytes(answer.body))
    return document


router = APIRouter(route_class=PageRoute)


def _totals_by_key(document: dict[str, Any], key: str) -> dict[str, dict[str, int]]:
    """Sum a grouped report's rows over its periods, per content or trigger."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"engagements": 0, "spend": 0})
    for row in document["rows"]:
        bucket = totals[row[key] or "—"]
        bucket["engagements"] += row["engagements"]
        bucket["spend"] += row["spend"]
    return dict(totals)


def _content_titles(session: Session, principal: Principal, ids: set[str]) -> dict[str, str]:
    titles = {}
    for content_id in ids:
        try:
            titles[content_id] = content_api.get_content(content_id, principal, session).title
        except Problem:
            titles[content_id] = content_id
    return titles


@router.get("/campaigns/{campaign_id}/report")
def report_page(
    request: Request,
    campaign_id: str,
    visitor: VisitorDep,
    services: ServicesDep,
    session: SessionDep,
    granularity: Granularity = Granularity.DAY,
    tz: str = "UTC",
) -> Response:
    principal = visitor.principal
    campaign = campaigns_api.get_campaign(campaign_id, principal, services, session)
    error = ""
    try:
        overall = report_document(principal, session, campaign_id, granularity=granularity, tz=tz)
    except Problem as problem:
        if problem.status != 422:
            raise
        error, tz = problem.detail, "UTC"
        overall = report_document(principal, session, campaign_id, granularity=granularity)
    by_content = _totals_by_key(
        report_document(principal, session, campaign_id, group_by=GroupBy.CONTENT), "content_id"
    )
    by_trigger = _totals_by_key(
        report_document(principal, session, campaign_id, group_by=GroupBy.TRIGGER), "trigger_id"
    )
    currency = campaign.currency
    titles = _content_titles(
        session, principal, set(by_content) | {t.content_id for t in campaign.triggers}
    )
    trigger_names = {
        t.id: f"{titles.get(t.content_id, t.content_id)}, "
        + ("whole content" if t.start_s is None else f"{clock(t.start_s)}–{clock(t.end_s)}")
        for t in campaign.triggers
    }
    time_label = "%Y-%m-%d %H:00" if granularity is Granularity.HOUR else "%Y-%m-%d"
    periods = [
        (datetime.fromisoformat(row["period_start"]).strftime(time_label), row["engagements"])
        for row in overall["rows"]
    ]
    spent = overall["totals"]["spend"]
    return render(
        request,
        "report.html",
        {
            "campaign": campaign,
            "report": overall,
            "error": error,
            "granularity": granularity.value,
            "tz": tz,
            "over_time": charts.columns(periods),
            "chart": {"width": charts.WIDTH, "height": charts.HEIGHT, "gutter": charts.GUTTER},
            "spend_percent": (
                min(100.0, 100 * spent / campaign.budget_total) if campaign.budget_total else None
            ),
            "by_content": charts.rows(
                [
                    (titles.get(key, key), value["engagements"], money(value["spend"], currency))
                    for key, value in by_content.items()
                ]
            ),
            "by_trigger": charts.rows(
                [
                    (
                        trigger_names.get(key, key),
                        value["engagements"],
                        money(value["spend"], currency),
                    )
                    for key, value in by_trigger.items()
                ]
            ),
        },
    )


@router.get("/campaigns/{campaign_id}/report.csv")
def report_csv(
    campaign_id: str,
    visitor: VisitorDep,
    session: SessionDep,
    granularity: Granularity = Granularity.DAY,
    group_by: GroupBy = GroupBy.NONE,
    tz: str = "UTC",
) -> Response:
    answer: Response = campaigns_api.campaign_report(
        campaign_id,
        visitor.principal,
        session,
        granularity=granularity,
        group_by=group_by,
        from_=None,
        to=None,
        tz=tz,
        format="csv",
    )
    return answer
