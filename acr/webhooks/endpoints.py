"""Webhook endpoints: where events are sent, which ones, and the secret they are signed with.

The secret (``whsec_…``) is returned once, when the endpoint is created or its
secret rolled; it is kept in the database because every delivery is signed with
it. A deleted endpoint is kept (its delivery log stays readable to the worker)
but hidden, and its pending deliveries are canceled.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import update
from sqlalchemy.orm import Session

from acr.db.models import WebhookDelivery, WebhookEndpoint, utcnow
from acr.webhooks.catalogue import API_VERSION, invalid_subscriptions

SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048
MAX_ROLL_OVERLAP = timedelta(hours=24)
"""Longest a rolled secret keeps signing beside the new one."""
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class EndpointError(ValueError):
    """An endpoint's field is invalid; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and 40 random letters and digits (238 bits)."""
    return SECRET_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(40))


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host.

    Raises
    ------
    EndpointError
        Another scheme, no host, or too long.
    """
    if len(url) > MAX_URL_LENGTH:
        raise EndpointError("url", f"a URL has at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as error:
        raise EndpointError("url", f"not a URL: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError("url", "give an absolute http:// or https:// URL")
    if any(c.isspace() for c in url):
        raise EndpointError("url", "a URL has no spaces")
    return url


def check_events(enabled_events: Sequence[str]) -> list[str]:
    """The subscriptions, de-duplicated in order.

    Raises
    ------
    EndpointError
        None given, or one that names no known event type.
    """
    if not enabled_events:
        raise EndpointError("enabled_events", "subscribe to at least one event type (or '*')")
    unknown = invalid_subscriptions(enabled_events)
    if unknown:
        raise EndpointError("enabled_events", f"unknown event types: {', '.join(unknown)}")
    return list(dict.fromkeys(enabled_events))


def create_endpoint(
    session: Session,
    *,
    organisation_id: str | None,
    url: str,
    enabled_events: Sequence[str],
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> WebhookEndpoint:
    """Add an enabled endpoint with a new secret (the caller commits)."""
    endpoint = WebhookEndpoint(
        organisation_id=organisation_id,
        url=check_url(url),
        enabled_events=check_events(enabled_events),
        description=description,
        status="enabled",
        secret=new_secret(),
        api_version=API_VERSION,
        extra=dict(metadata or {}),
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def roll_secret(endpoint: WebhookEndpoint, overlap: timedelta, now: datetime) -> str:
    """Give the endpoint a new secret; the old one also signs for ``overlap`` (≤ 24 h)."""
    if overlap < timedelta(0) or overlap > MAX_ROLL_OVERLAP:
        raise EndpointError("expires_in_s", "the old secret may stay valid 0 to 24 hours")
    if overlap > timedelta(0):
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = now + overlap
    else:
        endpoint.previous_secret = None
        endpoint.previous_secret_expires_at = None
    endpoint.secret = new_secret()
    return endpoint.secret


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and a rolled one still valid."""
    result = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and now < expires:
        result.append(endpoint.previous_secret)
    return result


def delete_endpoint(session: Session, endpoint: WebhookEndpoint, now: datetime) -> None:
    """Hide the endpoint, cancel its pending deliveries, forget a rolled secret (caller commits)."""
    endpoint.deleted_at = now
    endpoint.status = "disabled"
    endpoint.previous_secret = None
    endpoint.previous_secret_expires_at = None
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == "pending")
        .values(status="canceled", next_attempt_at=None, updated_at=utcnow())
    )


def endpoint_document(endpoint: WebhookEndpoint, *, secret: bool = False) -> dict[str, Any]:
    """The endpoint as the API shows it; ``secret`` only right after creation or a roll."""
    document: dict[str, Any] = {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "organisation_id": endpoint.organisation_id,
        "url": endpoint.url,
        "description": endpoint.description,
        "enabled_events": list(endpoint.enabled_events),
        "status": endpoint.status,
        "api_version": endpoint.api_version,
        "metadata": dict(endpoint.extra),
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
    }
    if secret:
        document["secret"] = endpoint.secret
    return document
