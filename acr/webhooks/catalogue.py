"""The event types there are, and the JSON an event is delivered (and listed) as.

This is the one list of event types: webhook endpoints may subscribe only to
these (or to ``*``, or to a ``group.*`` prefix of them). A module that emits a
new type adds it here; until then only ``*`` and prefix subscribers get it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from acr.db.models import Event

API_VERSION = "2025-01-01"
"""The version of the event shape, sent as ``api_version`` (Stripe's field)."""

EVENT_TYPES: dict[str, str] = {
    "account.created": "A connected account was created.",
    "account.updated": "A connected account changed (schedule, payouts enabled, details).",
    "account.external_account.created": "A bank account or card was added to an account.",
    "account.external_account.updated": "A bank account or card of an account changed.",
    "account.external_account.deleted": "A bank account or card was removed from an account.",
    "balance.available": "Revenue of a connected account became available to pay out.",
    "campaign.created": "A campaign was created.",
    "campaign.updated": "A campaign changed (its status, too).",
    "content.created": "Content was registered in the library.",
    "content.updated": "Content's details changed.",
    "content.deleted": "Content was deleted.",
    "content.ready": "Content was indexed and can be matched.",
    "content.failed": "Content could not be indexed.",
    "engagement.created": "A campaign was served to a viewer.",
    "payout.created": "A payout was created.",
    "payout.updated": "A payout changed.",
    "payout.paid": "A payout arrived at its bank account or card.",
    "payout.failed": "A payout failed.",
    "payout.canceled": "A payout was canceled.",
    "transfer.created": "Held revenue was transferred to a connected account.",
}
"""Every event type, with what it means."""

WILDCARD = "*"


def _groups() -> set[str]:
    return {kind.rsplit(".", 1)[0] for kind in EVENT_TYPES} | {
        kind.split(".", 1)[0] for kind in EVENT_TYPES
    }


def invalid_subscriptions(patterns: Iterable[str]) -> list[str]:
    """The patterns that name no known event type (empty when all are fine)."""
    groups = _groups()
    return [
        pattern
        for pattern in patterns
        if not (
            pattern == WILDCARD
            or pattern in EVENT_TYPES
            or (pattern.endswith(".*") and pattern[:-2] in groups)
        )
    ]


def matches(pattern: str, event_type: str) -> bool:
    """Whether ``event_type`` is one that ``pattern`` (type, ``group.*`` or ``*``) names."""
    if pattern == WILDCARD:
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def subscribed(patterns: Iterable[str], event_type: str) -> bool:
    return any(matches(pattern, event_type) for pattern in patterns)


def event_document(event: Event, api_version: str = API_VERSION) -> dict[str, Any]:
    """The event as Stripe shapes one: ``{id, object, type, created (unix), data: {object}}``.

    Events whose ``data`` is not already ``{object, previous_attributes?}`` (such
    as ``engagement.created``) have it wrapped as ``data.object``.
    """
    data = event.data if isinstance(event.data.get("object"), dict) else {"object": event.data}
    document: dict[str, Any] = {
        "id": event.id,
        "object": "event",
        "api_version": api_version,
        "created": int(event.created_at.timestamp()),
        "data": data,
        "livemode": False,
        "type": event.type,
        "organisation_id": event.organisation_id,
    }
    if event.account_id is not None:
        # Stripe Connect names the connected account an event is about.
        document["account"] = event.account_id
    return document
