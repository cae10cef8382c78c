"""``POST /v1/stripe/webhooks``: Stripe reports what became of our payouts.

No API key: Stripe's signature over the body is the authentication. Stripe
retries any answer but a 2xx, so events this service does not act on are
acknowledged with 200 too (outcome ``ignored``), and a redelivered event is
acknowledged without being applied again (outcome ``duplicate``).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from acr.db.session import write_session
from acr.payouts import stripe_webhooks
from api.deps import ServicesDep
from api.problems import Problem, responses
from api.services import Services

router = APIRouter(prefix="/v1/stripe", tags=["payouts"])
log = logging.getLogger("acr.api.stripe")


class WebhookReceipt(BaseModel):
    received: bool = True
    event: str
    outcome: stripe_webhooks.Outcome


def _handle(services: Services, payload: bytes, signature: str | None) -> WebhookReceipt:
    secret = services.settings.stripe_webhook_secret
    if not secret:
        # Without a secret nothing can be verified: the endpoint does not exist here.
        raise Problem(404, "not_found", "Stripe webhooks are not configured on this service")
    try:
        event = stripe_webhooks.verify(payload, signature, secret)
    except stripe_webhooks.WebhookSignatureError as error:
        raise Problem(400, "invalid_signature", str(error)) from None
    # The write lock up front (SQLite): applying reads the payout, then writes it.
    with write_session(services.sessions) as session:
        outcome = stripe_webhooks.handle(session, event, payload)
        session.commit()
    log.info("stripe event %s (%s): %s", event.id, event.type, outcome)
    return WebhookReceipt(event=event.id, outcome=outcome)


@router.post(
    "/webhooks",
    summary="Receive a Stripe event (signed with the endpoint's secret)",
    responses=responses(400, 404),
    openapi_extra={"security": []},
)
async def receive(
    request: Request,
    services: ServicesDep,
    stripe_signature: Annotated[str | None, Header()] = None,
) -> WebhookReceipt:
    # The raw bytes, not parsed JSON: the signature is over the body exactly as sent.
    payload = await request.body()
    return await run_in_threadpool(_handle, services, payload, stripe_signature)
