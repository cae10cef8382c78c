"""The persistent webhook queue: events fanned out to endpoints, sent, retried, logged.

Two steps, each safe to run in several processes at once:

* **Fan-out** reads new events and queues one :class:`~acr.db.models.WebhookDelivery`
  per subscribed endpoint. It holds the single cursor row locked while it works
  (``FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so fan-outs take
  turns; ``(endpoint_id, event_id)`` is unique besides. The cursor is the newest
  ``created_at`` fanned out, but events are stamped before their transaction
  commits, so events up to :data:`FANOUT_GRACE` older than it are looked at
  again, skipping those marked done in :class:`~acr.db.models.WebhookFanout`
  (marks older than that are pruned).
* **Send** claims due deliveries by moving ``attempts`` from *n - 1* to *n* in a
  conditional ``UPDATE`` (with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so that
  workers spread out) and pushing ``next_attempt_at`` a lease ahead; only the
  worker whose update matched sends attempt *n*. The POST happens outside any
  transaction. If the worker dies mid-send the lease runs out and the attempt is
  made again: delivery is at least once. A 2xx answer is success; anything else
  (another status, no answer, a timeout) is retried with exponential backoff
  until :attr:`RetryPolicy.max_attempts`, after which the delivery has failed.
  Every attempt is logged as a :class:`~acr.db.models.WebhookAttempt`.

Each request is ``POST <url>`` with ``Content-Type: application/json``, the event
as :func:`~acr.webhooks.catalogue.event_document` gives it, and the headers
``Acr-Signature: t=…,v1=…`` (:mod:`acr.webhooks.signing`), ``Acr-Event-Id``,
``Acr-Delivery-Id`` and ``Acr-Delivery-Attempt``. Redirects are not followed.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from acr import __version__
from acr.db.models import (
    Event,
    WebhookAttempt,
    WebhookCursor,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookFanout,
    utcnow,
)
from acr.db.session import write_session
from acr.webhooks.catalogue import event_document, subscribed
from acr.webhooks.endpoints import signing_secrets
from acr.webhooks.signing import SIGNATURE_HEADER, sign

log = logging.getLogger("acr.webhooks")

CURSOR = "events"
FANOUT_GRACE = timedelta(seconds=60)
"""Longest an event's transaction may take from stamping ``created_at`` to commit."""
FANOUT_BATCH = 500
EXCERPT_BYTES = 1000
"""How much of an endpoint's answer the delivery log keeps."""


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a delivery again, and when to give up.

    The defaults retry after about 1, 2, 4 … minutes, at most 12 hours apart, for
    16 attempts: about three days, as Stripe does.
    """

    max_attempts: int = 16
    base_s: float = 60.0
    cap_s: float = 12 * 3600.0
    jitter: float = 0.2
    """Each delay is shortened by up to this fraction at random, so retries spread out."""
    timeout_s: float = 10.0
    """Per attempt: connecting, sending and the answer."""

    def delay(self, attempt: int, rng: random.Random) -> timedelta:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.cap_s, self.base_s * 2.0 ** min(attempt - 1, 40))
        return timedelta(seconds=base * (1.0 - self.jitter * rng.random()))

    @property
    def lease(self) -> timedelta:
        """How long a claimed attempt is left to its worker before another may make it."""
        return timedelta(seconds=2 * self.timeout_s + 30)


# -- fan-out -------------------------------------------------------------------------------


def _live_endpoints(session: Session) -> Sequence[WebhookEndpoint]:
    return session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.status == "enabled", WebhookEndpoint.deleted_at.is_(None)
        )
    ).all()


def _pending_events(session: Session, floor: datetime, limit: int) -> Sequence[Event]:
    done = exists().where(WebhookFanout.event_id == Event.id)
    return session.scalars(
        select(Event)
        .where(Event.created_at >= floor, ~done)
        .order_by(Event.created_at, Event.id)
        .limit(limit)
    ).all()


def _wants(endpoint: WebhookEndpoint, event: Event) -> bool:
    if endpoint.organisation_id is not None and endpoint.organisation_id != event.organisation_id:
        return False
    # An endpoint gets the events that happen after it exists, as Stripe's do.
    return event.created_at >= endpoint.created_at and subscribed(
        endpoint.enabled_events, event.type
    )


def fan_out(
    sessions: sessionmaker[Session], now: datetime | None = None, batch: int = FANOUT_BATCH
) -> int:
    """Queue deliveries for the events not yet fanned out; return how many events were read."""
    now = now or utcnow()
    with sessions() as session:
        # A cheap look without the write lock first: most ticks find nothing to do.
        endpoints = _live_endpoints(session)
        if not endpoints:
            return 0
        cursor = session.get(WebhookCursor, CURSOR)
        oldest = min(endpoint.created_at for endpoint in endpoints)
        floor = oldest if cursor is None else max(oldest, cursor.position - FANOUT_GRACE)
        if not _pending_events(session, floor, 1):
            return 0
    try:
        with write_session(sessions) as session:
            cursor = session.scalars(
                select(WebhookCursor).where(WebhookCursor.name == CURSOR).with_for_update()
            ).first()
            endpoints = _live_endpoints(session)
            if not endpoints:
                return 0
            oldest = min(endpoint.created_at for endpoint in endpoints)
            if cursor is None:
                cursor = WebhookCursor(name=CURSOR, position=oldest)
                session.add(cursor)
                session.flush()
            floor = max(oldest, cursor.position - FANOUT_GRACE)
            events = _pending_events(session, floor, batch)
            for event in events:
                for endpoint in endpoints:
                    if _wants(endpoint, event):
                        session.add(
                            WebhookDelivery(
                                endpoint_id=endpoint.id,
                                event_id=event.id,
                                event_type=event.type,
                                status="pending",
                                attempts=0,
                                next_attempt_at=now,
                            )
                        )
                session.add(WebhookFanout(event_id=event.id, event_created_at=event.created_at))
            if events:
                cursor.position = max(cursor.position, events[-1].created_at)
            session.execute(
                delete(WebhookFanout).where(
                    WebhookFanout.event_created_at < cursor.position - FANOUT_GRACE
                )
            )
            session.commit()
            return len(events)
    except IntegrityError:
        # Another process created the cursor row (or queued the same event) first: its
        # work stands, and the next tick goes on from it.
        log.info("webhook fan-out raced another process; retrying next tick")
        return 0


# -- sending -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One attempt this worker owns: what to send, and where."""

    delivery_id: str
    event_id: str
    number: int
    url: str
    secrets: list[str]
    body: bytes


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    excerpt: str | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def claim_due(
    sessions: sessionmaker[Session], now: datetime, limit: int, lease: timedelta
) -> list[Claim]:
    """Take up to ``limit`` due deliveries for this worker (see the module notes)."""
    claims: list[Claim] = []
    with sessions() as session:
        # A look without the write lock first: most ticks find nothing due.
        due = select(WebhookDelivery.id).where(
            WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now
        )
        if session.scalar(due.limit(1)) is None:
            return claims
    with write_session(sessions) as session:
        rows = session.execute(
            select(WebhookDelivery, WebhookEndpoint, Event)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .join(Event, Event.id == WebhookDelivery.event_id)
            .where(
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
                # A disabled endpoint's retries wait until it is enabled again.
                WebhookEndpoint.status == "enabled",
                WebhookEndpoint.deleted_at.is_(None),
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(limit)
            .with_for_update(of=WebhookDelivery, skip_locked=True)
        ).all()
        for delivery, endpoint, event in rows:
            number = delivery.attempts + 1
            taken = session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery.id,
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.attempts == delivery.attempts,
                )
                .values(attempts=number, next_attempt_at=now + lease, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                continue
            body = json.dumps(
                event_document(event, endpoint.api_version), separators=(",", ":")
            ).encode()
            claims.append(
                Claim(
                    delivery_id=delivery.id,
                    event_id=event.id,
                    number=number,
                    url=endpoint.url,
                    secrets=signing_secrets(endpoint, now),
                    body=body,
                )
            )
        session.commit()
    return claims


def post(client: httpx.Client, claim: Claim, timeout_s: float) -> Outcome:
    """POST one signed attempt; never raises for what the endpoint does."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"acr-webhooks/{__version__}",
        # Signed at the moment of sending (wall clock), so receivers' tolerance applies.
        SIGNATURE_HEADER: sign(claim.body, claim.secrets),
        "Acr-Event-Id": claim.event_id,
        "Acr-Delivery-Id": claim.delivery_id,
        "Acr-Delivery-Attempt": str(claim.number),
    }
    started = time.monotonic()
    try:
        with client.stream(
            "POST",
            claim.url,
            content=claim.body,
            headers=headers,
            timeout=timeout_s,
            follow_redirects=False,
        ) as response:
            excerpt = b""
            for chunk in response.iter_bytes():
                excerpt += chunk
                if len(excerpt) >= EXCERPT_BYTES:
                    break
            status: int | None = response.status_code
            error = None if 200 <= response.status_code < 300 else f"HTTP {status}"
            text = excerpt[:EXCERPT_BYTES].decode("utf-8", "replace")
    except httpx.HTTPError as failure:
        status, text = None, None
        error = f"{type(failure).__name__}: {failure}"[:500]
    duration_ms = int((time.monotonic() - started) * 1000)
    return Outcome(status, error, text, duration_ms)


def record(
    sessions: sessionmaker[Session],
    claim: Claim,
    outcome: Outcome,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random,
) -> str:
    """Log the attempt and move the delivery on; return its status afterwards."""
    values: dict[str, Any] = {
        "last_status_code": outcome.status_code,
        "last_error": outcome.error,
        "updated_at": utcnow(),
    }
    if outcome.succeeded:
        values.update(status="succeeded", delivered_at=now, next_attempt_at=None)
    elif claim.number >= policy.max_attempts:
        values.update(status="failed", next_attempt_at=None)
    else:
        values.update(status="pending", next_attempt_at=now + policy.delay(claim.number, rng))
    with write_session(sessions) as session:
        session.add(
            WebhookAttempt(
                delivery_id=claim.delivery_id,
                number=claim.number,
                attempted_at=now,
                status_code=outcome.status_code,
                error=outcome.error,
                response_excerpt=outcome.excerpt,
                duration_ms=outcome.duration_ms,
            )
        )
        # Only while this worker still owns the attempt: a lease that ran out, a deleted
        # endpoint or a manual retry moved the delivery on without it.
        moved = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == claim.delivery_id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.attempts == claim.number,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        session.commit()
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return "superseded"
    return str(values["status"])


def retry_delivery(session: Session, delivery: WebhookDelivery, now: datetime) -> None:
    """Queue one more attempt now (after a failure, or to send a delivered event again)."""
    delivery.status = "pending"
    delivery.next_attempt_at = now


# -- the worker ----------------------------------------------------------------------------


class WebhookWorker:
    """Fan events out and send what is due, a tick at a time (for a :class:`PeriodicTask`).

    Parameters
    ----------
    sessions : sessionmaker
        The service's database.
    client : httpx.Client, optional
        What sends the requests (tests point it anywhere); one is made, and closed
        by :meth:`close`, if not given.
    policy : RetryPolicy, optional
        Backoff, attempts and timeout.
    concurrency : int
        Attempts sent at once (and claimed per tick), so one slow endpoint does not
        hold up the others.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        client: httpx.Client | None = None,
        policy: RetryPolicy | None = None,
        concurrency: int = 8,
        rng: random.Random | None = None,
    ) -> None:
        self._sessions = sessions
        self._owns_client = client is None
        self._client = client or httpx.Client(follow_redirects=False)
        self.policy = policy or RetryPolicy()
        self._concurrency = max(1, concurrency)
        self._rng = rng or random.Random()
        self._pool: ThreadPoolExecutor | None = None

    def tick(self, now: datetime | None = None) -> bool:
        """Fan out, then send one round of due attempts; True if more work is waiting."""
        now = now or utcnow()
        read = fan_out(self._sessions, now)
        sent = self.send_due(now)
        return read >= FANOUT_BATCH or sent >= self._concurrency

    def send_due(self, now: datetime | None = None) -> int:
        """Claim and send up to ``concurrency`` due attempts; return how many were made."""
        now = now or utcnow()
        claims = claim_due(self._sessions, now, self._concurrency, self.policy.lease)
        if not claims:
            return 0
        if len(claims) == 1:
            self._attempt(claims[0], now)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._concurrency, "webhook-send")
            list(self._pool.map(lambda claim: self._attempt(claim, now), claims))
        return len(claims)

    def _attempt(self, claim: Claim, now: datetime) -> None:
        outcome = post(self._client, claim, self.policy.timeout_s)
        status = record(self._sessions, claim, outcome, now, self.policy, self._rng)
        log.info(
            "webhook %s attempt %d to %s: %s (%s)",
            claim.delivery_id,
            claim.number,
            claim.url,
            outcome.status_code or outcome.error,
            status,
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._owns_client:
            self._client.close()
