"""Revenue accrual: engagements become payments, pending until the delay, held or unallocated.

Runs on SQLite and PostgreSQL (via the ``services`` fixture); times are passed
explicitly, so that ``available_on`` days are tested exactly. The concurrency
test runs accruals from several threads at once (real concurrency on PostgreSQL).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, insert, select, update

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
    Leg,
    account_book,
    advertiser_book,
    book_balance,
    held_book,
    post,
    posting,
    verify,
)
from acr.payouts.revenue import (
    WAITING,
    InsufficientFundsError,
    accrue_engagements,
    available_on_for,
    release_available,
    tick,
    transfer_held,
    unaccruable_engagements,
    waiting_engagements,
)
from api.payouts_cli import verify_database

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

    def engagements(self, count: int, at: datetime = NOW, **columns: Any) -> list[str]:
        """Engagement rows written directly (faster than serving, same shape); their ids."""
        rows = [
            {
                "id": f"eng_{at.timestamp():.0f}_{i:06d}",
                "campaign_id": self.campaign,
                "organisation_id": self.org,
                "content_id": self.content,
                "viewer_hash": f"v{i}",
                "offset_s": 1.0,
                "confidence": 0.9,
                "cost": 100,
                "currency": "usd",
                "owner_account_id": self.account,
                "owner_share": 30,
                "created_at": at + timedelta(milliseconds=i),
                **columns,
            }
            for i in range(count)
        ]
        with self.sessions() as session:
            session.execute(insert(Engagement), rows)
            session.commit()
        return [row["id"] for row in rows]


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


def _marks(services: Services) -> dict[str, tuple[datetime | None, str | None]]:
    with services.sessions() as session:
        rows = session.execute(
            select(Engagement.id, Engagement.accrued_at, Engagement.accrual_error)
        ).all()
    return {engagement_id: (accrued_at, error) for engagement_id, accrued_at, error in rows}


def test_accrued_engagements_are_marked_and_wait_no_more(services: Services) -> None:
    world = World(services)
    ids = world.engagements(3)
    assert set(_marks(services).values()) == {(None, None)}
    at = NOW + timedelta(seconds=1)
    assert accrue_engagements(services.sessions, at) is False
    assert _marks(services) == dict.fromkeys(ids, (at, None))
    with services.sessions() as session:
        assert session.scalars(waiting_engagements(at + timedelta(days=1), 10)).all() == []


def test_an_engagement_already_in_the_ledger_is_marked_not_posted_again(
    services: Services,
) -> None:
    """As when another worker won the race, or the payment predates ``accrued_at``."""
    world = World(services)
    first, second = world.engagements(2)
    with services.sessions() as session:
        post(
            session,
            posting(
                type="payment",
                source_id=first,
                currency="usd",
                legs=[Leg(advertiser_book(world.org), -100), Leg(PLATFORM_UNALLOCATED, 100)],
                amount=100,
                now=NOW,
            ),
        )
        session.commit()
    at = NOW + timedelta(seconds=1)
    assert accrue_engagements(services.sessions, at) is False
    assert _marks(services) == {first: (at, None), second: (at, None)}
    with services.sessions() as session:
        sources = session.scalars(select(LedgerTransaction.source_id)).all()
        assert sorted(sources) == sorted([first, second])
        assert verify(session) == []


def test_an_engagement_with_bad_data_is_set_aside_not_retried_every_tick(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(services)
    [bad] = world.engagements(1, currency="US$")
    good = world.engagements(3, at=NOW + timedelta(seconds=1))
    at = NOW + timedelta(seconds=5)
    with caplog.at_level(logging.ERROR, logger="acr.payouts.revenue"):
        assert accrue_engagements(services.sessions, at) is False
    assert [r.getMessage() for r in caplog.records] == [
        f"engagement {bad} cannot be accrued: currency 'US$' is not a lower-case ISO 4217 code"
    ]
    marks = _marks(services)
    assert marks[bad][0] is None and "ISO 4217" in (marks[bad][1] or "")
    assert all(marks[g] == (at, None) for g in good)
    with services.sessions() as session:
        assert unaccruable_engagements(session) == [(bad, marks[bad][1])]
        assert session.scalars(waiting_engagements(at, 10)).all() == []
    problems, _ = verify_database(services.settings.database_url)  # `acr payouts verify`
    assert problems == [f"engagement {bad} is not accrued: {marks[bad][1]}"]

    # Later ticks do not look at it again (nothing logged, nothing posted)…
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="acr.payouts.revenue"):
        for _ in range(3):
            assert tick(services.sessions, at + timedelta(minutes=1)) is False
    assert caplog.records == []
    # …until someone repairs the data and clears the error.
    with services.sessions() as session:
        session.execute(
            update(Engagement)
            .where(Engagement.id == bad)
            .values(currency="usd", accrual_error=None)
        )
        session.commit()
    assert accrue_engagements(services.sessions, at + timedelta(minutes=2)) is False
    assert _marks(services)[bad] == (at + timedelta(minutes=2), None)
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(LedgerTransaction)) == 4
        assert unaccruable_engagements(session) == []
    assert verify_database(services.settings.database_url)[0] == []


def _plan(services: Services, statement: Any) -> str:
    """The database's query plan of ``statement``, as one string."""
    engine = services.sessions.kw["bind"]
    sql = str(statement.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
            return "\n".join(str(row[-1]) for row in rows)
        return "\n".join(str(row[0]) for row in connection.exec_driver_sql(f"EXPLAIN {sql}"))


def test_finding_engagements_to_accrue_reads_only_the_waiting_ones(services: Services) -> None:
    """Both of accrual's queries use the partial index, never a scan of all engagements."""
    world = World(services)
    world.engagements(5000, at=NOW - timedelta(days=30), accrued_at=NOW - timedelta(days=29))
    world.engagements(5)
    engine = services.sessions.kw["bind"]
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")
    at = NOW + timedelta(seconds=1)
    batch = waiting_engagements(at, 50)
    if engine.dialect.name == "postgresql":
        batch = batch.with_for_update(skip_locked=True)
    look = select(Engagement.id).where(*WAITING, Engagement.created_at <= at).limit(1)
    for statement in (batch, look):
        plan = _plan(services, statement)
        assert "engagements_to_accrue" in plan, plan
        if engine.dialect.name == "sqlite":
            assert "SCAN engagements" not in plan and "TEMP B-TREE" not in plan, plan
        else:
            assert "Seq Scan" not in plan and "Sort" not in plan, plan
    if engine.dialect.name == "postgresql":
        # With a sequential scan ruled out, still this index (not another one, filtered).
        with services.sessions() as session:
            session.connection().exec_driver_sql("SET LOCAL enable_seqscan = off")
            sql = str(batch.compile(engine, compile_kwargs={"literal_binds": True}))
            rows = session.connection().exec_driver_sql(f"EXPLAIN {sql}")
            plan = "\n".join(str(row[0]) for row in rows)
        assert "Index Scan using engagements_to_accrue" in plan, plan
    assert accrue_engagements(services.sessions, at) is False
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(LedgerTransaction)) == 5
