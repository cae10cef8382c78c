"""Inbound Stripe webhooks: verified events about payouts, applied to ours.

Stripe signs each delivery (``Stripe-Signature: t=…,v1=…``, HMAC-SHA256 of
``"<t>.<body>"`` under the endpoint's ``whsec_…`` secret); :func:`verify` checks it
with ``stripe.Webhook.construct_event``, which also refuses a timestamp older
than five minutes (a replayed capture).

Events about a payout the Stripe rail created carry our payout id in
``data.object.metadata.acr_payout`` and become a
:class:`~acr.payouts.rails.base.RailUpdate`:

=====================  =============================================================
``payout.paid``        ``paid``
``payout.failed``      ``failed``, with the payout's ``failure_code`` and ``failure_message``
``payout.canceled``    ``canceled``
``payout.updated``     the payout's ``status`` (``in_transit``, ``paid``, ``failed``,
                       ``canceled``); ``pending`` changes nothing
=====================  =============================================================

Everything else (other types, payouts made outside this service) is ignored.

Stripe delivers at least once and may redeliver for days, so an applied event's
id is recorded (an :class:`~acr.db.models.IdempotencyRecord` of principal
:data:`PRINCIPAL`) in the same transaction as its effect: a redelivery finds the
record and changes nothing, and a delivery whose effect failed left no record
and is applied when Stripe retries it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import stripe
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from acr.db.models import IdempotencyRecord
from acr.payouts.payouts import apply_update
from acr.payouts.rails.base import RailStatus, RailUpdate
from acr.payouts.rails.stripe_rail import METADATA_KEY

PRINCIPAL = "stripe:webhook"
"""``IdempotencyRecord.principal`` of applied Stripe events (``key`` is the event id)."""
PATH = "/v1/stripe/webhooks"

Outcome = Literal["applied", "unchanged", "duplicate", "ignored"]
"""``applied`` changed our payout; ``unchanged``: it already was so (or further on);
``duplicate``: this event was handled before; ``ignored``: not about a payout of ours."""
Apply = Callable[[Session, RailUpdate], object]
"""Applies a rail's update to our payout (:func:`acr.payouts.payouts.apply_update`);
returns False when that changed nothing."""

_FIXED_STATUS: dict[str, RailStatus] = {
    "payout.paid": "paid",
    "payout.failed": "failed",
    "payout.canceled": "canceled",
}
_OBJECT_STATUS: dict[str, RailStatus] = {
    "in_transit": "in_transit",
    "paid": "paid",
    "failed": "failed",
    "canceled": "canceled",
}


class WebhookSignatureError(Exception):
    """The delivery is not from Stripe (bad or missing signature, stale timestamp, not JSON)."""


def verify(payload: bytes, signature: str | None, secret: str) -> stripe.Event:
    """The event in ``payload`` if ``signature`` proves Stripe sent it.

    Raises
    ------
    WebhookSignatureError
        Anything that is not a fresh, correctly signed Stripe event.
    """
    if not signature:
        raise WebhookSignatureError("no Stripe-Signature header")
    try:
        event: stripe.Event = stripe.Webhook.construct_event(payload, signature, secret)
    except stripe.SignatureVerificationError as error:
        raise WebhookSignatureError(str(error)) from None
    except ValueError as error:  # the signature held but the body is not an event
        raise WebhookSignatureError(f"not a Stripe event: {error}") from None
    return event


def to_update(event: stripe.Event) -> RailUpdate | None:
    """Our payout's change in ``event``; None if it says nothing about one of ours."""
    # Stripe objects are not dicts (stripe-python 13+): read the event's plain data.
    data = event.data.object
    obj: dict[str, Any] = data.to_dict() if isinstance(data, stripe.StripeObject) else dict(data)
    if obj.get("object") != "payout":
        return None
    metadata = obj.get("metadata") or {}
    payout_id = metadata.get(METADATA_KEY)
    if not payout_id:
        return None
    status = _FIXED_STATUS.get(event.type)
    if status is None and event.type == "payout.updated":
        status = _OBJECT_STATUS.get(str(obj.get("status")))
    if status is None:
        return None
    failed = status == "failed"
    return RailUpdate(
        payout_id=str(payout_id),
        status=status,
        at=datetime.fromtimestamp(event.created, UTC),
        failure_code=str(obj.get("failure_code") or "could_not_process") if failed else None,
        failure_message=(obj.get("failure_message") or None) if failed else None,
    )


def handle(
    session: Session, event: stripe.Event, payload: bytes, apply: Apply | None = None
) -> Outcome:
    """Apply ``event`` once, in the caller's transaction (the caller commits).

    Parameters
    ----------
    session : Session
        Commit it after this returns; roll it back if this raises (Stripe redelivers).
    event : stripe.Event
        A verified event (:func:`verify`).
    payload : bytes
        Its body as delivered, fingerprinted in the record of the event.
    apply : callable, optional
        :func:`acr.payouts.payouts.apply_update` unless given.
    """
    update = to_update(event)
    if update is None:
        return "ignored"
    record = IdempotencyRecord(
        principal=PRINCIPAL,
        key=event.id,
        method="POST",
        path=PATH,
        request_hash=hashlib.sha256(payload).hexdigest(),
        status_code=200,
        response_body={"event": event.id, "type": event.type, "payout": update.payout_id},
    )
    try:
        # A savepoint: a redelivery (also one racing this, on PostgreSQL) collides
        # on (principal, key) without undoing the caller's transaction.
        with session.begin_nested():
            session.add(record)
    except IntegrityError:
        return "duplicate"
    changed = (apply or apply_update)(session, update)
    return "unchanged" if changed is False else "applied"
