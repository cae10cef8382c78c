"""Campaigns as JSON documents: the API's response body and the events' ``data.object``.

One function makes both, so that a webhook consumer sees exactly what the API shows.
"""

from __future__ import annotations

from typing import Any

from acr.db.models import Campaign, Trigger, iso_utc


def trigger_document(trigger: Trigger) -> dict[str, Any]:
    return {
        "id": trigger.id,
        "object": "trigger",
        "content_id": trigger.content_id,
        "start_s": trigger.start_s,
        "end_s": trigger.end_s,
        "created_at": iso_utc(trigger.created_at),
    }


def campaign_document(campaign: Campaign) -> dict[str, Any]:
    """The campaign with its triggers, JSON-ready (times as ISO 8601 strings in UTC)."""
    targeting = campaign.targeting or {}
    frequency_cap = (
        None
        if campaign.frequency_cap is None
        else {"count": campaign.frequency_cap, "period_s": campaign.frequency_period_s}
    )
    return {
        "id": campaign.id,
        "object": "campaign",
        "organisation_id": campaign.organisation_id,
        "name": campaign.name,
        "advertiser": campaign.advertiser,
        "status": campaign.status,
        "schedule": {
            "start_at": iso_utc(campaign.start_at),
            "end_at": iso_utc(campaign.end_at),
            "timezone": campaign.timezone,
            "dayparts": list(campaign.dayparts or []),
        },
        "triggers": [trigger_document(trigger) for trigger in campaign.triggers],
        "payload": dict(campaign.payload or {}),
        "targeting": {
            "countries": list(targeting.get("countries", [])),
            "platforms": list(targeting.get("platforms", [])),
            "app_ids": list(targeting.get("app_ids", [])),
        },
        "cost_per_engagement": campaign.cost_per_engagement,
        "currency": campaign.currency,
        "budget_total": campaign.budget_total,
        "budget_daily": campaign.budget_daily,
        "frequency_cap": frequency_cap,
        "revenue_share_bps": campaign.revenue_share_bps,
        "priority": campaign.priority,
        "created_at": iso_utc(campaign.created_at),
        "updated_at": iso_utc(campaign.updated_at),
    }
