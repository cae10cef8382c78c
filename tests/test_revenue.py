"""Revenue accrual: engagements become payments, pending until the delay, held or unallocated.

Runs on SQLite and PostgreSQL (via the ``services`` fixture); times are passed
explicitly, so that ``available_on`` days are tested exactly. The concurrency
test runs accruals from several threads at once (real concurrency on PostgreSQL).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select

from acr.auth import ensure_organisation
from acr.campaigns.serving import Moment, serve
from acr.db.models import (
    Account,
    Campaign,
    Content,
    Engagement,
    Event,
    LedgerEntry,
    LedgerTransaction,
    Trigger,
)
from acr.db.session import write_session
from acr.payouts.balance import account_balance, account_problems
from acr.payouts.ledger import (
    PLATFORM_UNALLOCATED,
    account_book,
    book_balance,
    held_book,
    verify,
)
from acr.payouts.revenue import (
    InsufficientFundsError,
    accrue_engagements,
    available_on_for,
    release_available,
    tick,
    transfer_held,
)

if TYPE_CHECKING:
    from api.services import Services

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday
MIDNIGHT = datetime(2026, 11, 23, tzinfo=UTC)


class World:
    """An advertiser with a campaign (cost 100, owner share 30 %) on one owner's content."""

    def __init__(self, services: Services, *, owner: str | None = "acct", **account: Any) -> None:
        self.sessions = services.sessions
        with self.sessions() as session:
            self.org = ensure_organisation(session, "acme").id
            self.account: str | None = None
            if owner is not None:
                row = Account(country="US", default_currency="usd", **account)
                session.add(row)
                session.flush()
                self.account = row.id
            content = Content(title="Show", kind="audio", status="ready")
            content.owner_account_id = self.account
            campaign = Campaign(
                organisation_id=self.org,
                name="c",
                advertiser="Acme",
                status="running",
                cost_per_engagement=100,
                revenue_share_bps=3000,
            )
            session.add_all([content, campaign])
            session.flush()
            campaign.triggers = [Trigger(content_id=content.id)]
            session.commit()
            self.content, self.campaign = content.id, campaign.id

    def serve(self, at: datetime = NOW, viewer: str = "v") -> str:
        moment = Moment(self.content, 10.0, 0.9, viewer, None, "US", "ios")
        with write_session(self.sessions) as session:
            served = serve(session, moment, limit=1, now=at)
            session.commit()
        return served[0].engagement_id

    def engagements(self, count: int, at: datetime = NOW) -> None:
        """Engagement rows written directly (faster than serving, same shape)."""
        with self.sessions() as session:
            for i in range(count):
                session.add(
                    Engagement(
                        campaign_id=self.campaign,
                        organisation_id=self.org,
                        content_id=self.content,
                        viewer_hash=f"v{i}",
                        offset_s=1.0,
                        confidence=0.9,
                        cost=100,
                        currency="usd",
                        owner_account_id=self.account,
                        owner_share=30,
                        created_at=at + timedelta(milliseconds=i),
                    )
                )
            session.commit()


def _balance(services: Services, account_id: str, at: datetime) -> tuple[int, int]:
    with services.sessions() as session:
        account = session.get(Account, account_id)
        assert account is not None
        found = account_balance(session, account, at)
    return found.available[0].amount, found.pending[0].amount


def _events(services: Services, type: str) -> list[Event]:
    with services.sessions() as session:
        return list(session.scalars(select(Event).where(Event.type == type)))


def test_available_on_is_midnight_utc_after_the_delay() -> None:
    assert available_on_for(NOW, 2) == datetime(2026, 11, 25, tzinfo=UTC)
    late = datetime(2026, 11, 23, 23, 59, tzinfo=UTC)
    assert available_on_for(late, 0) == MIDNIGHT
    assert available_on_for(datetime(2026, 11, 24, 0, 30, tzinfo=UTC), 1) == datetime(
        2026, 11, 25, tzinfo=UTC
    )


def test_an_engagement_is_a_pending_payment_until_its_day(services: Services) -> None:
    world = World(services)
    engagement = world.serve()
    assert world.account is not None
    assert accrue_engagements(services.sessions, NOW) is False
    assert accrue_engagements(services.sessions, NOW) is False  # idempotent
    with services.sessions() as session:
        [payment] = session.scalars(select(LedgerTransaction)).all()
        assert (payment.type, payment.source_id, payment.account_id) == (
            "payment",
            engagement,
            world.account,
        )
        assert (payment.amount, payment.fee, payment.net, payment.currency) == (100, 70, 30, "usd")
        assert payment.available_on == datetime(2026, 11, 25, tzinfo=UTC)
        books = dict(
            session.execute(
                select(LedgerEntry.book, LedgerEntry.amount).where(
                    LedgerEntry.transaction_id == payment.id
                )
            ).all()
        )
        assert books == {
            f"advertiser:{world.org}": -100,
            "platform:fees": 70,
            account_book(world.account): 30,
        }
    assert _balance(services, world.account, NOW) == (0, 30)
    day = datetime(2026, 11, 25, tzinfo=UTC)
    assert _balance(services, world.account, day - timedelta(seconds=1)) == (0, 30)
    assert _balance(services, world.account, day) == (30, 0)

    # `balance.available` once the day comes, once only.
    assert release_available(services.sessions, NOW) == 0
    assert release_available(services.sessions, day + timedelta(hours=1)) == 1
    assert release_available(services.sessions, day + timedelta(hours=2)) == 0
    [event] = _events(services, "balance.available")
    assert event.account_id == world.account
    assert event.data["released"] == {
        "amount": 30,
        "currency": "usd",
        "available_on": day.isoformat(),
    }
    assert event.data["object"]["available"] == [{"amount": 30, "currency": "usd"}]
    with services.sessions() as session:
        assert verify(session) == [] and account_problems(session) == []


def test_without_delay_revenue_is_available_at_once(services: Services) -> None:
    world = World(services, payout_delay_days=0)
    assert world.account is not None
    world.serve()
    tick(services.sessions, NOW)
    assert _balance(services, world.account, NOW) == (30, 0)
    [event] = _events(services, "balance.available")
    assert event.data["released"]["amount"] == 30
    assert release_available(services.sessions, NOW + timedelta(days=1)) == 0


def test_engagements_after_now_wait(services: Services) -> None:
    world = World(services)
    world.serve(at=NOW + timedelta(hours=1))
    assert accrue_engagements(services.sessions, NOW) is False
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(LedgerTransaction)) == 0


def test_held_revenue_is_transferred_on_demand(services: Services) -> None:
    world = World(services, hold_in_platform=True, payout_delay_days=1)
    assert world.account is not None
    world.serve()
    world.serve(viewer="w")
    accrue_engagements(services.sessions, NOW)
    with services.sessions() as session:
        payments = session.scalars(select(LedgerTransaction)).all()
        assert {p.account_id for p in payments} == {None}
        held = book_balance(session, held_book(world.account), "usd", NOW)
        assert (held.available, held.pending) == (0, 60)
        with pytest.raises(InsufficientFundsError):
            transfer_held(session, world.account, 10, "usd", now=NOW)
        session.rollback()
    assert _balance(services, world.account, NOW + timedelta(days=1)) == (0, 0)

    later = NOW + timedelta(days=1)
    with services.sessions() as session:
        transfer = transfer_held(session, world.account, 45, "usd", now=later)
        session.commit()
        assert (transfer.type, transfer.account_id, transfer.net) == ("transfer", world.account, 45)
        with pytest.raises(InsufficientFundsError):
            transfer_held(session, world.account, 16, "usd", now=later)
        session.rollback()
        assert book_balance(session, held_book(world.account), "usd", later).available == 15
        assert verify(session) == [] and account_problems(session) == []
    assert _balance(services, world.account, later) == (45, 0)
    assert len(_events(services, "transfer.created")) == 1


def test_revenue_of_owners_without_an_account_is_unallocated(services: Services) -> None:
    world = World(services, owner=None)
    world.serve()
    accrue_engagements(services.sessions, NOW)
    with services.sessions() as session:
        [payment] = session.scalars(select(LedgerTransaction)).all()
        assert payment.account_id is None and payment.net == 30
        assert book_balance(session, PLATFORM_UNALLOCATED, "usd", NOW).available == 30
        assert verify(session) == []


def test_accrual_in_batches(services: Services) -> None:
    world = World(services)
    world.engagements(5)
    assert accrue_engagements(services.sessions, NOW + timedelta(seconds=1), batch=2) is True
    assert accrue_engagements(services.sessions, NOW + timedelta(seconds=1), batch=2) is True
    assert accrue_engagements(services.sessions, NOW + timedelta(seconds=1), batch=2) is False
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(LedgerTransaction)) == 5


def test_concurrent_accruals_post_each_engagement_once(services: Services) -> None:
    world = World(services)
    assert world.account is not None
    world.engagements(60)
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def worker() -> None:
        try:
            start.wait()
            while accrue_engagements(services.sessions, NOW + timedelta(seconds=1), batch=7):
                pass
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with services.sessions() as session:
        sources = session.scalars(select(LedgerTransaction.source_id)).all()
        assert len(sources) == len(set(sources)) == 60
        assert verify(session) == [] and account_problems(session) == []
    assert _balance(services, world.account, NOW) == (0, 60 * 30)
