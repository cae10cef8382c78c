"""``/v1/events``: every state change, newest first, in Stripe's event shape.

Choices:

* Tenancy: a campaign_manager key sees its organisation's events only (another
  organisation's event answers 404, as a missing one does); admins see all.
  Viewer-app keys get 403.
* ``type`` is an exact type, ``group.*`` for a prefix (``payout.*``), or ``*``.
  ``created[gte]``, ``created[gt]``, ``created[lte]``, ``created[lt]`` bound the
  creation time, in Unix seconds, as Stripe's do.
* Lists are cursor-paginated: ``{object: "list", data, has_more, next_cursor}``;
  pass ``next_cursor`` back as ``starting_after``. The order (``created`` then
  ``id``, both descending) is keyset-stable under inserts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, select

from acr.auth import Principal
from acr.db.models import Event
from acr.webhooks.catalogue import event_document
from api.deps import ManagerDep, SessionDep
from api.pagination import newest_first, unknown_cursor
from api.problems import Problem, not_found, responses

router = APIRouter(prefix="/v1/events", tags=["events"], responses=responses(401, 403))

MAX_UNIX = 253402300798
"""9999-12-31T23:59:58Z: a second before the latest time a datetime holds (bounds add one)."""
UnixTime = Annotated[int, Field(ge=0, le=MAX_UNIX)]


class EventData(BaseModel):
    model_config = ConfigDict(extra="allow")

    object: dict[str, Any]
    previous_attributes: dict[str, Any] | None = None


class EventView(BaseModel):
    id: str
    object: Literal["event"] = "event"
    api_version: str
    created: int = Field(description="Unix time")
    data: EventData
    livemode: bool
    type: str
    organisation_id: str | None
    account: str | None = Field(default=None, description="The connected account it is about")


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EventView]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as starting_after for the next page")


def _view(event: Event) -> EventView:
    return EventView.model_validate(event_document(event))


def _scope(principal: Principal) -> str | None:
    return None if principal.is_admin else principal.organisation_id


def _invalid(name: str, msg: str) -> Problem:
    return Problem(
        422,
        "validation_error",
        f"query.{name}: {msg}",
        errors=[{"loc": ["query", name], "msg": msg, "type": "value_error"}],
    )


def _time(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def type_condition(pattern: str) -> ColumnElement[bool] | None:
    """The filter for ``type``: exact, ``group.*`` prefix, or ``*`` (none)."""
    if pattern == "*":
        return None
    if pattern.endswith(".*"):
        return Event.type.startswith(pattern[:-1], autoescape=True)
    return Event.type == pattern


@router.get("", responses=responses(422))
def list_events(
    principal: ManagerDep,
    session: SessionDep,
    type: Annotated[
        str | None,
        Query(max_length=64, description="An event type, `group.*` (e.g. `payout.*`), or `*`"),
    ] = None,
    created_gte: Annotated[UnixTime | None, Query(alias="created[gte]")] = None,
    created_gt: Annotated[UnixTime | None, Query(alias="created[gt]")] = None,
    created_lte: Annotated[UnixTime | None, Query(alias="created[lte]")] = None,
    created_lt: Annotated[UnixTime | None, Query(alias="created[lt]")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[
        str | None, Query(max_length=32, description="An event id: the page after it")
    ] = None,
) -> EventList:
    """The caller's events, newest first, a page at a time."""
    conditions: list[ColumnElement[bool]] = []
    scope = _scope(principal)
    if scope is not None:
        conditions.append(Event.organisation_id == scope)
    if type is not None:
        condition = type_condition(type)
        if condition is not None:
            conditions.append(condition)
    if created_gte is not None:
        conditions.append(Event.created_at >= _time(created_gte))
    if created_gt is not None:
        # `created` is shown in whole seconds: "after second s" starts at s + 1.
        conditions.append(Event.created_at >= _time(created_gt + 1))
    if created_lte is not None:
        conditions.append(Event.created_at < _time(created_lte + 1))
    if created_lt is not None:
        conditions.append(Event.created_at < _time(created_lt))
    after = None
    if starting_after is not None:
        after = session.scalars(
            select(Event).where(
                Event.id == starting_after,
                *([Event.organisation_id == scope] if scope is not None else []),
            )
        ).first()
        if after is None:
            raise unknown_cursor("event", starting_after)
    page = newest_first(session, select(Event).where(*conditions), Event, limit=limit, after=after)
    return EventList(
        data=[_view(event) for event in page.rows],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/{event_id}", responses=responses(404))
def get_event(event_id: str, principal: ManagerDep, session: SessionDep) -> EventView:
    """One event."""
    query = select(Event).where(Event.id == event_id)
    scope = _scope(principal)
    if scope is not None:
        query = query.where(Event.organisation_id == scope)
    event = session.scalars(query).first()
    if event is None:
        raise not_found("event", event_id)
    return _view(event)
