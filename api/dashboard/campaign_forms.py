"""Create and edit a campaign: a form in, the API's own models and route functions behind it.

The form's field names are the JSON paths of the API's body (``payload.title``,
``triggers.0.start_s``), so that every error the API's models or route give —
whose ``loc`` is such a path — lands beside its field. What the form adds is
only the people-friendly units: amounts in currency units (``1.50``), the
owner's share in percent, the frequency period in hours, and local times in
the campaign's time zone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from acr.auth import Principal
from acr.campaigns.lifecycle import zone
from acr.db.models import Organisation
from api.dashboard.pages import PREFIX, PageRoute, major_units, parse_amount, render
from api.dashboard.session import FormDep, VisitorDep
from api.deps import ServicesDep, SessionDep
from api.problems import Problem
from api.routers import campaigns as campaigns_api
from api.routers import content as content_api

router = APIRouter(route_class=PageRoute)

MAX_TRIGGER_ROWS = 50
MONEY_FIELDS = ("cost_per_engagement", "budget_total", "budget_daily")
FORM_NAMES = {
    "revenue_share_bps": "revenue_share_percent",
    "frequency_cap.period_s": "frequency_cap.period_h",
}
"""API fields that the form shows in other units, under another name."""
FORM_MESSAGES = {
    "revenue_share_percent": "a share from 0 to 100 %",
    "frequency_cap.period_h": "from 1 second to 366 days (8784 hours)",
    "payload.url": "an address starting with http:// or https://",
    "payload.image_url": "an address starting with http:// or https://",
    "currency": "three letters (ISO 4217), e.g. usd",
}
"""What to say about fields whose API message speaks of other units or of a pattern."""
RULE_MESSAGES = {
    "start_s is before end_s": "“To” must be after “From”.",
    "give both start_s and end_s, or neither for the whole content": (
        "Give both “From” and “To”, or neither for the whole content."
    ),
    "start_at is before end_at": "“Ends” must be after “Starts”.",
}
"""The API's rules about pairs of fields, in the words of the form's labels."""

Errors = dict[str, str]


class FormError(Exception):
    """A field the form could not even turn into the API's units."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _minor(form: FormData, name: str, currency: str) -> int | None:
    raw = _text(form, name)
    if not raw:
        return None
    try:
        return parse_amount(raw, currency)
    except ValueError as error:
        raise FormError(name, str(error)) from None


def _number(form: FormData, name: str) -> Decimal | None:
    raw = _text(form, name)
    if not raw:
        return None
    try:
        number = Decimal(raw)
    except InvalidOperation:
        raise FormError(name, f"{raw!r} is not a number") from None
    if not number.is_finite():
        raise FormError(name, f"{raw!r} is not a number")
    return number


def _local_time(form: FormData, name: str, timezone: str) -> str | None:
    raw = _text(form, name)
    if not raw:
        return None
    try:
        local = datetime.fromisoformat(raw)
    except ValueError:
        raise FormError(name, f"{raw!r} is not a date and time") from None
    try:
        place = zone(timezone)
    except ValueError as error:
        raise FormError("schedule.timezone", str(error)) from None
    return local.replace(tzinfo=place).isoformat()


def _basis_points(percent: Decimal | None) -> int:
    if percent is None:
        return 0
    points = percent * 100
    if not points.is_finite() or points != points.to_integral_value():
        raise FormError("revenue_share_percent", "at most two decimals, e.g. 30 or 12.5")
    return int(points)


def _words(form: FormData, name: str) -> list[str]:
    return [word for word in _text(form, name).replace(",", " ").split() if word]


def _triggers(form: FormData) -> list[dict[str, Any]]:
    triggers = []
    for i in range(MAX_TRIGGER_ROWS):
        content_id = _text(form, f"triggers.{i}.content_id")
        if not content_id:
            continue
        start, end = _number(form, f"triggers.{i}.start_s"), _number(form, f"triggers.{i}.end_s")
        triggers.append(
            {
                "content_id": content_id,
                "start_s": None if start is None else float(start),
                "end_s": None if end is None else float(end),
            }
        )
    return triggers


def body_from_form(form: FormData, kept: campaigns_api.CampaignView | None) -> dict[str, Any]:
    """The API's JSON body for a submitted form; ``kept``: the edited campaign.

    What the form does not show (day-parting, targeted apps) is kept as it is.

    Raises
    ------
    FormError
        A value that is not a number, an amount or a time at all.
    """
    currency = _text(form, "currency") or "usd"
    timezone = _text(form, "schedule.timezone") or "UTC"
    share = _number(form, "revenue_share_percent")
    cap_count = _text(form, "frequency_cap.count")
    cap_hours = _number(form, "frequency_cap.period_h")
    payload = {
        name: _text(form, f"payload.{name}") or None
        for name in ("title", "text", "url", "image_url", "coupon_code")
    }
    if kept is not None and "data" in kept.payload:
        payload["data"] = kept.payload["data"]
    body: dict[str, Any] = {
        "name": _text(form, "name"),
        "advertiser": _text(form, "advertiser"),
        "schedule": {
            "start_at": _local_time(form, "schedule.start_at", timezone),
            "end_at": _local_time(form, "schedule.end_at", timezone),
            "timezone": timezone,
            "dayparts": kept.schedule.dayparts if kept is not None else [],
        },
        "triggers": _triggers(form),
        "payload": payload,
        "targeting": {
            "countries": _words(form, "targeting.countries"),
            "platforms": _words(form, "targeting.platforms"),
            "app_ids": kept.targeting.app_ids if kept is not None else [],
        },
        "currency": currency,
        "frequency_cap": (
            {
                "count": cap_count,
                "period_s": None if cap_hours is None else int(cap_hours * 3600),
            }
            if cap_count
            else None
        ),
        "revenue_share_bps": _basis_points(share),
        "priority": _text(form, "priority") or 0,
        **{name: _minor(form, name, currency) for name in MONEY_FIELDS},
    }
    if body["cost_per_engagement"] is None:
        body["cost_per_engagement"] = 0
    if kept is None:
        body["organisation_id"] = _text(form, "organisation_id") or None
    return body


def _field_of(loc: list[str | int] | tuple[str | int, ...]) -> str:
    path = [str(part) for part in loc if part != "body"]
    name = ".".join(path)
    return FORM_NAMES.get(name, name)


LABELS = {
    "organisation_id": "Organisation",
    "name": "Name",
    "advertiser": "Advertiser",
    "triggers": "Triggers",
    "payload": "Payload",
    "payload.title": "Title",
    "payload.text": "Text",
    "payload.url": "Link",
    "payload.image_url": "Image address",
    "payload.coupon_code": "Coupon code",
    "schedule": "Schedule",
    "schedule.start_at": "Starts",
    "schedule.end_at": "Ends",
    "schedule.timezone": "Time zone",
    "currency": "Currency",
    "cost_per_engagement": "Cost per engagement",
    "budget_total": "Total budget",
    "budget_daily": "Daily budget",
    "revenue_share_percent": "Content owner's share",
    "targeting.countries": "Countries",
    "targeting.platforms": "Platforms",
    "frequency_cap": "Frequency cap",
    "frequency_cap.count": "Most engagements per viewer",
    "frequency_cap.period_h": "Per period",
    "priority": "Priority",
}
"""What the form calls each field, for the list of errors at its top."""
_TRIGGER_PARTS = {"content_id": "content", "start_s": "from", "end_s": "to"}


def field_label(name: str) -> str:
    """The label of a form field by its name (``triggers.0.end_s`` is "Trigger 1, to")."""
    parts = name.split(".")
    if parts[0] == "triggers" and len(parts) > 1 and parts[1].isdigit():
        label = f"Trigger {int(parts[1]) + 1}"
        return f"{label}, {_TRIGGER_PARTS.get(parts[2], parts[2])}" if len(parts) > 2 else label
    return LABELS.get(name, name)


def _validation_errors(error: ValidationError) -> Errors:
    errors: Errors = {}
    for item in error.errors():
        field = _field_of(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        errors.setdefault(field, FORM_MESSAGES.get(field, RULE_MESSAGES.get(message, message)))
    return errors


def _problem_errors(problem: Problem) -> Errors:
    if not problem.errors:
        return {"": problem.detail}
    return {_field_of(item["loc"]): str(item["msg"]) for item in problem.errors}


def values_of(campaign: campaigns_api.CampaignView) -> dict[str, str]:
    """A campaign as the form's fields show it."""
    place = zone(campaign.schedule.timezone)

    def local(moment: datetime | None) -> str:
        return "" if moment is None else moment.astimezone(place).strftime("%Y-%m-%dT%H:%M")

    currency = campaign.currency
    values = {
        "name": campaign.name,
        "advertiser": campaign.advertiser,
        "schedule.start_at": local(campaign.schedule.start_at),
        "schedule.end_at": local(campaign.schedule.end_at),
        "schedule.timezone": campaign.schedule.timezone,
        "targeting.countries": " ".join(campaign.targeting.countries),
        "targeting.platforms": " ".join(campaign.targeting.platforms),
        "currency": currency,
        "revenue_share_percent": f"{Decimal(campaign.revenue_share_bps) / 100:g}",
        "priority": str(campaign.priority),
        "frequency_cap.count": str(campaign.frequency_cap.count) if campaign.frequency_cap else "",
        "frequency_cap.period_h": (
            f"{Decimal(campaign.frequency_cap.period_s) / 3600:g}"
            if campaign.frequency_cap and campaign.frequency_cap.period_s
            else ""
        ),
        **{f"payload.{k}": str(v) for k, v in campaign.payload.items() if k != "data"},
        **{name: major_units(getattr(campaign, name), currency) for name in MONEY_FIELDS},
    }
    for i, trigger in enumerate(campaign.triggers):
        values[f"triggers.{i}.content_id"] = trigger.content_id
        values[f"triggers.{i}.start_s"] = "" if trigger.start_s is None else f"{trigger.start_s:g}"
        values[f"triggers.{i}.end_s"] = "" if trigger.end_s is None else f"{trigger.end_s:g}"
    return values


def _submitted(form: FormData) -> dict[str, str]:
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _trigger_rows(values: dict[str, str]) -> int:
    used = [i for i in range(MAX_TRIGGER_ROWS) if values.get(f"triggers.{i}.content_id")]
    return (max(used) + 1 if used else 0) + 1  # and one empty row to add another


def _form_page(
    request: Request,
    principal: Principal,
    session: Session,
    *,
    campaign: campaigns_api.CampaignView | None,
    values: dict[str, str],
    errors: Errors,
) -> Response:
    library = content_api.list_content(
        principal,
        session,
        status=None,
        kind=None,
        owner_account_id=None,
        q=None,
        include_deleted=False,
        limit=100,
        starting_after=None,
    )
    organisations = (
        session.execute(
            select(Organisation.id, Organisation.name).order_by(Organisation.name)
        ).all()
        if principal.is_admin and campaign is None
        else []
    )
    return render(
        request,
        "campaign_form.html",
        {
            "campaign": campaign,
            "values": values,
            "errors": errors,
            "contents": library.data,
            "organisations": organisations,
            "trigger_rows": _trigger_rows(values),
            "field_label": field_label,
        },
        status_code=422 if errors else 200,
    )


def _submit(submit: Callable[[], str]) -> Response | Errors:
    """Run a form's submission: a redirect to where it leads, or the errors to show.

    Errors the manager can fix (the form's own, the models', the API's 422) go
    beside their fields; any other problem propagates as the API's would.
    """
    try:
        location = submit()
    except FormError as error:
        return {error.field: error.message}
    except ValidationError as error:
        return _validation_errors(error)
    except Problem as problem:
        if problem.status != 422:
            raise
        return _problem_errors(problem)
    return RedirectResponse(location, status_code=303)


@router.get("/campaigns/new")
def new_campaign(request: Request, visitor: VisitorDep, session: SessionDep) -> Response:
    values = {"currency": "usd", "schedule.timezone": "UTC", "priority": "0"}
    return _form_page(request, visitor.principal, session, campaign=None, values=values, errors={})


@router.post("/campaigns/new")
def create_campaign(
    request: Request, visitor: VisitorDep, services: ServicesDep, form: FormDep
) -> Response:

    def create() -> str:
        body = campaigns_api.CampaignCreate.model_validate(body_from_form(form, None))
        created = campaigns_api.create_campaign(body, visitor.principal, services)
        return f"{PREFIX}/campaigns/{created.id}?notice=created"

    outcome = _submit(create)
    if isinstance(outcome, Response):
        return outcome
    with services.sessions() as session:
        return _form_page(
            request,
            visitor.principal,
            session,
            campaign=None,
            values=_submitted(form),
            errors=outcome,
        )


@router.get("/campaigns/{campaign_id}/edit")
def edit_campaign(
    request: Request,
    campaign_id: str,
    visitor: VisitorDep,
    services: ServicesDep,
    session: SessionDep,
) -> Response:
    campaign = campaigns_api.get_campaign(campaign_id, visitor.principal, services, session)
    return _form_page(
        request,
        visitor.principal,
        session,
        campaign=campaign,
        values=values_of(campaign),
        errors={},
    )


@router.post("/campaigns/{campaign_id}/edit")
def save_campaign(
    request: Request,
    campaign_id: str,
    visitor: VisitorDep,
    services: ServicesDep,
    form: FormDep,
) -> Response:
    with services.sessions() as session:
        campaign = campaigns_api.get_campaign(campaign_id, visitor.principal, services, session)

    def save() -> str:
        body = campaigns_api.CampaignUpdate.model_validate(body_from_form(form, campaign))
        campaigns_api.update_campaign(campaign_id, body, visitor.principal, services)
        return f"{PREFIX}/campaigns/{campaign_id}?notice=saved"

    outcome = _submit(save)
    if isinstance(outcome, Response):
        return outcome
    with services.sessions() as session:
        return _form_page(
            request,
            visitor.principal,
            session,
            campaign=campaign,
            values=_submitted(form),
            errors=outcome,
        )
