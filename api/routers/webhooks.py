"""``/v1/webhook_endpoints``: where events are sent, and the log of what was sent.

Choices:

* Tenancy: a campaign_manager key manages its organisation's endpoints, which
  receive that organisation's events only; another organisation's endpoint
  answers 404. An admin's endpoint may name an ``organisation_id`` (then it is
  that organisation's) or none: a platform endpoint that receives every event.
  Viewer-app keys get 403.
* The signing ``secret`` is in the answer to ``POST`` (and to ``roll_secret``)
  only; keep it then. Deliveries are signed as described in
  :mod:`acr.webhooks.signing` and sent as :mod:`acr.webhooks.delivery` says.
* ``enabled_events`` lists event types (``GET /v1/events`` shows them in use),
  ``group.*`` prefixes, or ``*``; an unknown type is a 422.
* ``DELETE`` answers ``{id, object, deleted: true}``; pending deliveries are canceled.
* Lists are cursor-paginated, newest first: ``{object: "list", data, has_more,
  next_cursor}``; pass ``next_cursor`` back as ``starting_after``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session, selectinload

from acr.auth import Principal
from acr.db.models import Organisation, WebhookDelivery, WebhookEndpoint, utcnow
from acr.db.session import write_session
from acr.webhooks.catalogue import EVENT_TYPES
from acr.webhooks.delivery import retry_delivery
from acr.webhooks.endpoints import (
    MAX_URL_LENGTH,
    EndpointError,
    check_events,
    check_url,
    create_endpoint,
    delete_endpoint,
    endpoint_document,
    roll_secret,
)
from api.deps import ManagerDep, ServicesDep, SessionDep
from api.pagination import newest_first, unknown_cursor
from api.problems import Problem, not_found, responses

router = APIRouter(prefix="/v1/webhook_endpoints", tags=["webhooks"], responses=responses(401, 403))

Status = Literal["enabled", "disabled"]
DeliveryStatus = Literal["pending", "succeeded", "failed", "canceled"]
_EVENTS_HELP = "Event types, `group.*` prefixes or `*`; known types: " + ", ".join(EVENT_TYPES)


def _invalid(loc: list[str | int], msg: str) -> Problem:
    where = ".".join(str(part) for part in loc)
    return Problem(
        422,
        "validation_error",
        f"{where}: {msg}",
        errors=[{"loc": loc, "msg": msg, "type": "value_error"}],
    )


# -- bodies and views ----------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Metadata = Annotated[dict[str, str], Field(max_length=50)]


class EndpointCreate(Strict):
    url: str = Field(max_length=MAX_URL_LENGTH, description="http:// or https:// URL")
    enabled_events: list[Annotated[str, Field(max_length=64)]] = Field(
        min_length=1, max_length=100, description=_EVENTS_HELP
    )
    description: str | None = Field(default=None, max_length=500)
    organisation_id: str | None = Field(
        default=None,
        max_length=32,
        description="Admins only: the organisation whose events it gets (none: every event)",
    )
    metadata: Metadata = Field(default_factory=dict)


class EndpointUpdate(Strict):
    url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)
    enabled_events: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, min_length=1, max_length=100, description=_EVENTS_HELP
    )
    description: str | None = Field(default=None, max_length=500)
    status: Status | None = Field(default=None, description="disabled: no deliveries")
    metadata: Metadata | None = None


class RollSecret(Strict):
    expires_in_s: int = Field(
        default=0, ge=0, le=86400, description="How long the old secret also signs (≤ 24 h)"
    )


class EndpointView(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    organisation_id: str | None
    url: str
    description: str | None
    enabled_events: list[str]
    status: Status
    api_version: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class EndpointWithSecret(EndpointView):
    secret: str = Field(description="Signs the deliveries; shown only now")


class EndpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EndpointView]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as starting_after for the next page")


class DeletedEndpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    deleted: Literal[True] = True


class AttemptView(BaseModel):
    object: Literal["webhook_attempt"] = "webhook_attempt"
    number: int
    attempted_at: datetime
    status_code: int | None = Field(description="None when no answer came")
    error: str | None
    response_excerpt: str | None
    duration_ms: int


class DeliveryView(BaseModel):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    endpoint_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None = Field(description="When a pending one is next tried")
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    attempt_log: list[AttemptView]


class DeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeliveryView]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as starting_after for the next page")


def _view(endpoint: WebhookEndpoint) -> EndpointView:
    return EndpointView.model_validate(endpoint_document(endpoint))


def _delivery_view(delivery: WebhookDelivery) -> DeliveryView:
    return DeliveryView(
        id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status,  # type: ignore[arg-type]
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        delivered_at=delivery.delivered_at,
        created_at=delivery.created_at,
        attempt_log=[
            AttemptView(
                number=attempt.number,
                attempted_at=attempt.attempted_at,
                status_code=attempt.status_code,
                error=attempt.error,
                response_excerpt=attempt.response_excerpt,
                duration_ms=attempt.duration_ms,
            )
            for attempt in delivery.attempt_log
        ],
    )


# -- helpers -------------------------------------------------------------------------------


def _scope(principal: Principal) -> str | None:
    return None if principal.is_admin else principal.organisation_id


def _load(
    session: Session, principal: Principal, endpoint_id: str, *, lock: bool
) -> WebhookEndpoint:
    """The caller's live endpoint (404 if it is not theirs or was deleted)."""
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.deleted_at.is_(None)
    )
    scope = _scope(principal)
    if scope is not None:
        query = query.where(WebhookEndpoint.organisation_id == scope)
    if lock:
        query = query.with_for_update()
    endpoint = session.scalars(query).first()
    if endpoint is None:
        raise not_found("webhook endpoint", endpoint_id)
    return endpoint


def _field_error(error: EndpointError) -> Problem:
    return _invalid(["body", error.field], error.message)


# -- routes --------------------------------------------------------------------------------


@router.post("", status_code=201, responses=responses(422))
def create_webhook_endpoint(
    body: EndpointCreate, principal: ManagerDep, services: ServicesDep
) -> EndpointWithSecret:
    """Add an endpoint; the answer holds its signing secret, which is not shown again."""
    if principal.is_admin:
        organisation_id = body.organisation_id
    else:
        if body.organisation_id not in (None, principal.organisation_id):
            raise _invalid(
                ["body", "organisation_id"], "a campaign manager adds its own organisation's"
            )
        organisation_id = principal.organisation_id
    with write_session(services.sessions) as session:
        if organisation_id is not None and session.get(Organisation, organisation_id) is None:
            raise _invalid(["body", "organisation_id"], f"no organisation {organisation_id!r}")
        try:
            endpoint = create_endpoint(
                session,
                organisation_id=organisation_id,
                url=body.url,
                enabled_events=body.enabled_events,
                description=body.description,
                metadata=body.metadata,
            )
        except EndpointError as error:
            raise _field_error(error) from None
        session.commit()
        return EndpointWithSecret.model_validate(endpoint_document(endpoint, secret=True))


@router.get("", responses=responses(422))
def list_webhook_endpoints(
    principal: ManagerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[
        str | None, Query(max_length=32, description="An endpoint id: the page after it")
    ] = None,
) -> EndpointList:
    """The caller's endpoints, newest first (without their secrets)."""
    conditions: list[ColumnElement[bool]] = [WebhookEndpoint.deleted_at.is_(None)]
    scope = _scope(principal)
    if scope is not None:
        conditions.append(WebhookEndpoint.organisation_id == scope)
    after = None
    if starting_after is not None:
        after = session.scalars(
            select(WebhookEndpoint).where(WebhookEndpoint.id == starting_after, *conditions)
        ).first()
        if after is None:
            raise unknown_cursor("webhook endpoint", starting_after)
    query = select(WebhookEndpoint).where(*conditions)
    page = newest_first(session, query, WebhookEndpoint, limit=limit, after=after)
    return EndpointList(
        data=[_view(endpoint) for endpoint in page.rows],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/{endpoint_id}", responses=responses(404))
def get_webhook_endpoint(
    endpoint_id: str, principal: ManagerDep, session: SessionDep
) -> EndpointView:
    """One endpoint (without its secret)."""
    return _view(_load(session, principal, endpoint_id, lock=False))


@router.patch("/{endpoint_id}", responses=responses(404, 422))
def update_webhook_endpoint(
    endpoint_id: str, body: EndpointUpdate, principal: ManagerDep, services: ServicesDep
) -> EndpointView:
    """Change an endpoint's URL, events, description, metadata, or enable or disable it."""
    given = body.model_fields_set
    for name in ("url", "enabled_events", "status", "metadata"):
        if name in given and getattr(body, name) is None:
            raise _invalid(["body", name], "may not be null")
    with write_session(services.sessions) as session:
        endpoint = _load(session, principal, endpoint_id, lock=True)
        try:
            if body.url is not None:
                endpoint.url = check_url(body.url)
            if body.enabled_events is not None:
                endpoint.enabled_events = check_events(body.enabled_events)
        except EndpointError as error:
            raise _field_error(error) from None
        if "description" in given:
            endpoint.description = body.description
        if body.status is not None:
            endpoint.status = body.status
        if body.metadata is not None:
            endpoint.extra = dict(body.metadata)
        session.commit()
        return _view(endpoint)


@router.delete("/{endpoint_id}", responses=responses(404))
def delete_webhook_endpoint(
    endpoint_id: str, principal: ManagerDep, services: ServicesDep
) -> DeletedEndpoint:
    """Delete an endpoint: it gets nothing more, and its pending deliveries are canceled."""
    with write_session(services.sessions) as session:
        endpoint = _load(session, principal, endpoint_id, lock=True)
        delete_endpoint(session, endpoint, utcnow())
        session.commit()
        return DeletedEndpoint(id=endpoint.id)


@router.post("/{endpoint_id}/roll_secret", responses=responses(404, 422))
def roll_webhook_secret(
    endpoint_id: str, body: RollSecret, principal: ManagerDep, services: ServicesDep
) -> EndpointWithSecret:
    """Replace the signing secret; the old one may go on signing beside it for a while."""
    with write_session(services.sessions) as session:
        endpoint = _load(session, principal, endpoint_id, lock=True)
        roll_secret(endpoint, timedelta(seconds=body.expires_in_s), utcnow())
        session.commit()
        return EndpointWithSecret.model_validate(endpoint_document(endpoint, secret=True))


@router.get("/{endpoint_id}/deliveries", responses=responses(404, 422))
def list_webhook_deliveries(
    endpoint_id: str,
    principal: ManagerDep,
    session: SessionDep,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    event_id: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[
        str | None, Query(max_length=32, description="A delivery id: the page after it")
    ] = None,
) -> DeliveryList:
    """The delivery log of an endpoint, newest first, each with its attempts."""
    endpoint = _load(session, principal, endpoint_id, lock=False)
    conditions: list[ColumnElement[bool]] = [WebhookDelivery.endpoint_id == endpoint.id]
    if status is not None:
        conditions.append(WebhookDelivery.status == status)
    if event_id is not None:
        conditions.append(WebhookDelivery.event_id == event_id)
    after = None
    if starting_after is not None:
        after = session.scalars(
            select(WebhookDelivery).where(
                WebhookDelivery.id == starting_after,
                WebhookDelivery.endpoint_id == endpoint.id,
            )
        ).first()
        if after is None:
            raise unknown_cursor("delivery", starting_after)
    query = (
        select(WebhookDelivery)
        .where(*conditions)
        .options(selectinload(WebhookDelivery.attempt_log))
    )
    page = newest_first(session, query, WebhookDelivery, limit=limit, after=after)
    return DeliveryList(
        data=[_delivery_view(delivery) for delivery in page.rows],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.post("/{endpoint_id}/deliveries/{delivery_id}/retry", responses=responses(404))
def retry_webhook_delivery(
    endpoint_id: str, delivery_id: str, principal: ManagerDep, services: ServicesDep
) -> DeliveryView:
    """Send a delivery once more, now (a failed one, or to replay a delivered event)."""
    with write_session(services.sessions) as session:
        endpoint = _load(session, principal, endpoint_id, lock=False)
        delivery = session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint.id)
            .with_for_update()
        ).first()
        if delivery is None:
            raise not_found("webhook delivery", delivery_id)
        retry_delivery(session, delivery, utcnow())
        session.commit()
        session.refresh(delivery, ["attempt_log"])
        return _delivery_view(delivery)
