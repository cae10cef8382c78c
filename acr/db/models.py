"""The service database: who may do what, the content library, campaigns and what they served.

SQLAlchemy 2 declarative models, portable between SQLite (embedded default) and
PostgreSQL (production). Identifiers are prefixed random strings (``cmp_…``,
``cnt_…``), as Stripe's are, so that an id says what it names. Times are stored
in UTC; money in integer minor units with an ISO 4217 currency.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar, overload

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def new_id(prefix: str) -> str:
    """A fresh identifier such as ``cmp_3kq9…`` (96 random bits)."""
    return f"{prefix}_{secrets.token_urlsafe(12).replace('-', 'a').replace('_', 'b')}"


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def iso_utc(value: datetime) -> str: ...
@overload
def iso_utc(value: None) -> None: ...
def iso_utc(value: datetime | None) -> str | None:
    """A time as the API writes it: ISO 8601 in UTC (None stays None)."""
    return None if value is None else value.astimezone(UTC).isoformat()


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC; SQLite gives it back aware too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: give a time zone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
    }


class Organisation(Base):
    """An advertiser: campaign managers' keys are scoped to one."""

    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("org"))
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class App(Base):
    """A viewer app (or device platform) that submits samples."""

    __tablename__ = "apps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("app"))
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A credential; the secret is shown once and only its SHA-256 is kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("key"))
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(32))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    organisation_id: Mapped[str | None] = mapped_column(ForeignKey("organisations.id"))
    app_id: Mapped[str | None] = mapped_column(ForeignKey("apps.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Content(Base):
    """A reference recording in the library; its fingerprints live in the index under ``id``."""

    __tablename__ = "content"
    __table_args__ = (
        # One live copy of a file: the same bytes uploaded twice name the same content.
        Index(
            "content_live_sha256",
            "sha256",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("content_org_created", "organisation_id", "created_at"),
        Index("content_created", "created_at", "id"),
        # The indexing worker's two queues, kept small by partial indexes.
        Index(
            "content_to_index",
            "created_at",
            sqlite_where=text("status = 'processing' AND deleted_at IS NULL"),
            postgresql_where=text("status = 'processing' AND deleted_at IS NULL"),
        ),
        Index(
            "content_to_unindex",
            "deleted_at",
            sqlite_where=text("deleted_at IS NOT NULL AND unindexed_at IS NULL"),
            postgresql_where=text("deleted_at IS NOT NULL AND unindexed_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("cnt"))
    organisation_id: Mapped[str | None] = mapped_column(ForeignKey("organisations.id"))
    """Who registered it (none for the platform's own catalogue)."""
    title: Mapped[str] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(16))
    owner_account_id: Mapped[str | None] = mapped_column(String(64))
    """The connected account paid its revenue share."""
    external_ids: Mapped[dict[str, Any]] = mapped_column(default=dict)
    extra: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    status: Mapped[str] = mapped_column(String(16), default="processing")
    failure_reason: Mapped[str | None] = mapped_column(Text, default=None)
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    media_path: Mapped[str | None] = mapped_column(Text)
    original_filename: Mapped[str | None] = mapped_column(String(500))
    duration_s: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    indexed_at: Mapped[datetime | None] = mapped_column(default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)
    index_attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Times the indexing worker began on it: a file that kills the worker fails after a few."""
    unindexed_at: Mapped[datetime | None] = mapped_column(default=None)
    """When, after deletion, the worker took it out of the index (or found it was not in it)."""


class Campaign(Base):
    """What an advertiser shows viewers while given content plays."""

    __tablename__ = "campaigns"
    __table_args__ = (Index("campaigns_org_status", "organisation_id", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("cmp"))
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    name: Mapped[str] = mapped_column(String(200))
    advertiser: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    start_at: Mapped[datetime | None] = mapped_column(default=None)
    end_at: Mapped[datetime | None] = mapped_column(default=None)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    dayparts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    """Weekly windows in ``timezone``: ``{"days": [0..6], "start": "HH:MM", "end": "HH:MM"}``."""
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    targeting: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """``countries``, ``platforms``, ``app_ids``: lists; empty or absent means any."""
    priority: Mapped[int] = mapped_column(Integer, default=0)
    cost_per_engagement: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    budget_total: Mapped[int | None] = mapped_column(BigInteger, default=None)
    budget_daily: Mapped[int | None] = mapped_column(BigInteger, default=None)
    frequency_cap: Mapped[int | None] = mapped_column(Integer, default=None)
    frequency_period_s: Mapped[int | None] = mapped_column(Integer, default=None)
    revenue_share_bps: Mapped[int] = mapped_column(Integer, default=0)
    """The content owner's share of each engagement's cost, in basis points."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    triggers: Mapped[list[Trigger]] = relationship(
        back_populates="campaign", cascade="all, delete-orphan", order_by="Trigger.created_at"
    )


class Trigger(Base):
    """A moment that serves a campaign: a content, and optionally an offset window in it."""

    __tablename__ = "triggers"
    __table_args__ = (Index("triggers_content", "content_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("trg"))
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    content_id: Mapped[str] = mapped_column(ForeignKey("content.id"))
    start_s: Mapped[float | None] = mapped_column(Float, default=None)
    end_s: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    campaign: Mapped[Campaign] = relationship(back_populates="triggers")


class Engagement(Base):
    """One campaign served to one viewer after a match: the advertiser pays, the owner earns."""

    __tablename__ = "engagements"
    __table_args__ = (
        Index("engagements_campaign_time", "campaign_id", "created_at"),
        Index("engagements_campaign_viewer_time", "campaign_id", "viewer_hash", "created_at"),
        Index("engagements_org_time", "organisation_id", "created_at"),
        # Only the engagements waiting for revenue accrual, in the order they are accrued:
        # finding the next batch reads the batch, however many were accrued before.
        Index(
            "engagements_to_accrue",
            "created_at",
            "id",
            sqlite_where=text("accrued_at IS NULL AND accrual_error IS NULL"),
            postgresql_where=text("accrued_at IS NULL AND accrual_error IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("eng"))
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"))
    trigger_id: Mapped[str | None] = mapped_column(String(32))
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    content_id: Mapped[str] = mapped_column(ForeignKey("content.id"))
    app_id: Mapped[str | None] = mapped_column(String(32))
    viewer_hash: Mapped[str] = mapped_column(String(64))
    country: Mapped[str | None] = mapped_column(String(2))
    platform: Mapped[str | None] = mapped_column(String(32))
    offset_s: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float)
    cost: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    owner_account_id: Mapped[str | None] = mapped_column(String(64))
    owner_share: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    accrued_at: Mapped[datetime | None] = mapped_column(default=None)
    """When its ``payment`` was posted to the ledger (same transaction); NULL while waiting."""
    accrual_error: Mapped[str | None] = mapped_column(String(500), default=None)
    """Why it cannot be accrued (bad data): it then waits no more, until this is cleared."""


class IdempotencyRecord(Base):
    """The first response to a request sent with an ``Idempotency-Key``, replayed on retries."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("principal", "key", name="idempotency_principal_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(32))
    """The API key that sent it: keys are per client, so two clients never collide."""
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(500))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    """None while the first request is still being handled."""
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Event(Base):
    """A state change, in Stripe's event shape; payouts and webhooks consume them."""

    __tablename__ = "events"
    __table_args__ = (
        Index("events_org_created", "organisation_id", "created_at"),
        Index("events_type_created", "type", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("evt"))
    type: Mapped[str] = mapped_column(String(64))
    organisation_id: Mapped[str | None] = mapped_column(String(32))
    account_id: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- money: connected accounts, their bank accounts and cards, the ledger, payouts ---------------


class Account(Base):
    """A connected account (Stripe Connect's word): a content owner who is paid.

    Payout schedule as Stripe's ``settings.payouts.schedule``: ``interval``
    daily (rolling) | weekly | monthly | manual, ``delay_days`` before revenue is
    available, ``weekly_anchor`` (monday..sunday), ``monthly_anchor`` (1..31; a
    month without that day pays on its last day).
    """

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("acct"))
    organisation_id: Mapped[str | None] = mapped_column(ForeignKey("organisations.id"))
    """The organisation whose keys manage the account (none: the platform's)."""
    business_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    country: Mapped[str] = mapped_column(String(2))
    default_currency: Mapped[str] = mapped_column(String(3))
    payouts_enabled: Mapped[bool] = mapped_column(default=True)
    payout_interval: Mapped[str] = mapped_column(String(8), default="daily")
    payout_delay_days: Mapped[int] = mapped_column(Integer, default=2)
    payout_weekly_anchor: Mapped[str | None] = mapped_column(String(9), default=None)
    payout_monthly_anchor: Mapped[int | None] = mapped_column(Integer, default=None)
    hold_in_platform: Mapped[bool] = mapped_column(default=False)
    """Revenue accumulates in the platform's balance until transferred on demand."""
    stripe_account_id: Mapped[str | None] = mapped_column(String(64), default=None)
    """The Stripe Connect account this one is paid through, on the Stripe rail."""
    extra: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ExternalAccount(Base):
    """A bank account or debit card payouts go to; only a token's last4 and fingerprint are kept."""

    __tablename__ = "external_accounts"
    __table_args__ = (Index("external_accounts_account", "account_id", "currency"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """``ba_…`` for a bank account, ``card_…`` for a debit card."""
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    object: Mapped[str] = mapped_column(String(16))
    """``bank_account`` or ``card``."""
    last4: Mapped[str] = mapped_column(String(4))
    fingerprint: Mapped[str] = mapped_column(String(64))
    """Keyed hash of the full number: the same account is recognisable, the number is not kept."""
    bank_name: Mapped[str | None] = mapped_column(String(100), default=None)
    brand: Mapped[str | None] = mapped_column(String(32), default=None)
    account_holder_name: Mapped[str | None] = mapped_column(String(200), default=None)
    country: Mapped[str] = mapped_column(String(2))
    currency: Mapped[str] = mapped_column(String(3))
    default_for_currency: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16), default="new")
    """new | verified | errored | disabled; errored and disabled ones block payouts."""
    available_payout_methods: Mapped[list[str]] = mapped_column(JSON, default=list)
    """``["standard"]``, or ``["standard", "instant"]`` for an eligible debit card."""
    rail_data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What the payout rail needs to reach it (the simulated bank's behaviour, Stripe's id)."""
    extra: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class LedgerTransaction(Base):
    """One movement of money: its entries sum to zero per currency (double entry).

    When it touches a connected account's balance it is also that account's
    *balance transaction* (Stripe's word): ``amount``, ``fee`` and ``net`` as the
    account sees them, available from ``available_on``. ``(type, source_id)`` is
    unique, so posting the same movement twice (a retried job) is refused.
    """

    __tablename__ = "ledger_transactions"
    __table_args__ = (
        UniqueConstraint("type", "source_id", name="ledger_transactions_type_source"),
        Index("ledger_transactions_account_created", "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("txn"))
    type: Mapped[str] = mapped_column(String(32))
    """payment | payout | payout_cancel | payout_failure | payout_fee | transfer | adjustment."""
    source_id: Mapped[str] = mapped_column(String(64))
    """What caused it: an engagement, a payout, a transfer."""
    account_id: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger, default=0)
    fee: Mapped[int] = mapped_column(BigInteger, default=0)
    net: Mapped[int] = mapped_column(BigInteger, default=0)
    available_on: Mapped[datetime] = mapped_column(default=utcnow)
    description: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    entries: Mapped[list[LedgerEntry]] = relationship(
        back_populates="transaction", cascade="all, delete-orphan"
    )


class LedgerEntry(Base):
    """One leg of a ledger transaction: a signed amount on one book."""

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ledger_entries_book", "book", "currency", "available_on"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(ForeignKey("ledger_transactions.id"))
    book: Mapped[str] = mapped_column(String(100))
    """``account:<acct>`` (a balance), ``held:<acct>``, ``platform:fees``,
    ``advertiser:<org>``, ``rail:in_transit``, ``rail:paid``, ``platform:unallocated``."""
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)
    available_on: Mapped[datetime] = mapped_column(default=utcnow)

    transaction: Mapped[LedgerTransaction] = relationship(back_populates="entries")


class Payout(Base):
    """Money sent from a connected account's balance to its bank account or card."""

    __tablename__ = "payouts"
    __table_args__ = (
        Index("payouts_account_created", "account_id", "created_at"),
        Index("payouts_status", "status"),
        # One automatic payout per account, currency and scheduled day, however many
        # schedulers run at once.
        UniqueConstraint("account_id", "currency", "automatic_for", name="payouts_automatic_once"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("po"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    destination: Mapped[str] = mapped_column(ForeignKey("external_accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    fee: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    method: Mapped[str] = mapped_column(String(8), default="standard")
    automatic: Mapped[bool] = mapped_column(default=False)
    automatic_for: Mapped[str | None] = mapped_column(String(10), default=None)
    """The scheduled day (ISO date) an automatic payout is for; None for manual ones."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    arrival_date: Mapped[datetime] = mapped_column()
    failure_code: Mapped[str | None] = mapped_column(String(64), default=None)
    failure_message: Mapped[str | None] = mapped_column(String(500), default=None)
    balance_transaction_id: Mapped[str | None] = mapped_column(String(32), default=None)
    failure_balance_transaction_id: Mapped[str | None] = mapped_column(String(32), default=None)
    rail: Mapped[str] = mapped_column(String(16), default="simulated")
    rail_state: Mapped[str] = mapped_column(String(16), default="to_submit")
    """Outbox: ``to_submit`` until the rail has accepted it (``submitted``), then ``done``."""
    rail_ref: Mapped[str | None] = mapped_column(String(64), default=None)
    description: Mapped[str | None] = mapped_column(String(500), default=None)
    extra: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SimulatedTransfer(Base):
    """A payout as the built-in simulated bank rail sees it (its own state, kept across restarts).

    Its whole course is decided when it is submitted, from the destination's
    test behaviour: ``outcome`` at ``arrival_at`` (``paid`` or a failure code),
    and optionally a later failure of a paid transfer (``fail_later_code`` at
    ``fail_later_at``). ``acknowledged`` counts the steps the payouts module has
    applied, so a step is reported again until it has been.
    """

    __tablename__ = "simulated_transfers"

    payout_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """Submission is idempotent by payout: this key makes a second submit find the first."""
    reference: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[str] = mapped_column(String(64))
    destination_id: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    method: Mapped[str] = mapped_column(String(8))
    submitted_at: Mapped[datetime] = mapped_column()
    arrival_at: Mapped[datetime] = mapped_column()
    outcome: Mapped[str] = mapped_column(String(64), default="paid")
    fail_later_code: Mapped[str | None] = mapped_column(String(64), default=None)
    fail_later_at: Mapped[datetime | None] = mapped_column(default=None)
    canceled_at: Mapped[datetime | None] = mapped_column(default=None)
    acknowledged: Mapped[int] = mapped_column(Integer, default=0)
    finished: Mapped[bool] = mapped_column(default=False)
    """Every step reported and acknowledged: polls no longer look at it."""


# -- webhooks: endpoints that receive events, and the persistent queue of deliveries -------------


class WebhookEndpoint(Base):
    """A URL that receives the events it subscribes to, signed with its secret.

    ``organisation_id`` None (an admin's endpoint) receives every organisation's
    events; otherwise only that organisation's. The secret must be kept to sign
    deliveries, so it is stored (it is shown to the API only once, at creation).
    """

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("webhook_endpoints_org_created", "organisation_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("we"))
    organisation_id: Mapped[str | None] = mapped_column(ForeignKey("organisations.id"))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(500), default=None)
    enabled_events: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Event types, ``group.*`` prefixes, or ``*`` for all."""
    status: Mapped[str] = mapped_column(String(16), default="enabled")
    """enabled | disabled: a disabled endpoint gets no new deliveries and its retries pause."""
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100), default=None)
    """After a secret roll, also signed with until ``previous_secret_expires_at``."""
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    api_version: Mapped[str] = mapped_column(String(32))
    extra: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookDelivery(Base):
    """One event owed to one endpoint: a row of the persistent send queue.

    ``(endpoint_id, event_id)`` is unique, so an event is queued once per endpoint
    however many processes fan out. ``attempts`` doubles as the claim's version: a
    worker owns attempt *n* only if it moved ``attempts`` from *n - 1* to *n*.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="webhook_deliveries_once"),
        Index("webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
        Index(
            "webhook_deliveries_due",
            "next_attempt_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("whd"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"))
    event_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """pending (queued, or being sent) | succeeded | failed (gave up) | canceled."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    """When a pending delivery is due; while an attempt is in flight, when its lease ends."""
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    attempt_log: Mapped[list[WebhookAttempt]] = relationship(
        back_populates="delivery", order_by="WebhookAttempt.number"
    )


class WebhookAttempt(Base):
    """One POST of a delivery: the delivery log."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "number", name="webhook_attempts_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"))
    number: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    """The endpoint's HTTP status; None when no answer came (refused, timed out)."""
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    response_excerpt: Mapped[str | None] = mapped_column(String(1000), default=None)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)

    delivery: Mapped[WebhookDelivery] = relationship(back_populates="attempt_log")


class WebhookCursor(Base):
    """How far the fan-out has read the event stream (one row, locked while fanning out)."""

    __tablename__ = "webhook_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[datetime] = mapped_column()
    """Newest ``created_at`` fanned out; events up to a grace period older are re-checked."""


class WebhookFanout(Base):
    """An event already fanned out (kept only while inside the cursor's grace period)."""

    __tablename__ = "webhook_fanouts"
    __table_args__ = (Index("webhook_fanouts_created", "event_created_at"),)

    event_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_created_at: Mapped[datetime] = mapped_column()
