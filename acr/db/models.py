"""The service database: who may do what, the content library, campaigns and what they served.

SQLAlchemy 2 declarative models, portable between SQLite (embedded default) and
PostgreSQL (production). Identifiers are prefixed random strings (``cmp_…``,
``cnt_…``), as Stripe's are, so that an id says what it names. Times are stored
in UTC; money in integer minor units with an ISO 4217 currency.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar

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
