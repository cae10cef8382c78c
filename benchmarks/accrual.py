"""Revenue accrual: the time of one batch with no history and with 20,000 accrued engagements.

``python -m benchmarks.accrual [sqlite] [postgresql]`` — SQLite in a temporary
directory, PostgreSQL in a throw-away database on 127.0.0.1:5432 (trust auth).
Each engagement a served match records is posted to the ledger by
:func:`acr.payouts.revenue.accrue_engagements`, in batches whose transaction
holds SQLite's one write lock; this shows that a batch's cost does not grow
with the engagements already accrued, and what a batch costs. Prints medians
of 15 rounds; also times the query that finds the waiting engagements against
the anti-join (``NOT EXISTS`` a payment) that it replaced.
"""

from __future__ import annotations

import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, create_engine, exists, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from acr.auth import ensure_organisation
from acr.db.models import Account, Campaign, Content, Engagement, LedgerTransaction, Trigger
from acr.db.session import make_engine, migrate, session_factory
from acr.payouts.revenue import ACCRUAL_BATCH, PAYMENT, accrue_engagements, waiting_engagements

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
HISTORY = 20_000
ROUNDS = 15

_World = tuple[str, str, str, str]


def _world(sessions: sessionmaker[Session]) -> _World:
    """An organisation, an owner's account, a content and a running campaign on it."""
    with sessions() as session:
        organisation = ensure_organisation(session, "acme").id
        account = Account(country="US", default_currency="usd")
        session.add(account)
        session.flush()
        content = Content(title="Show", kind="audio", status="ready")
        content.owner_account_id = account.id
        campaign = Campaign(
            organisation_id=organisation,
            name="Accrual benchmark",
            advertiser="Acme",
            status="running",
            cost_per_engagement=100,
            revenue_share_bps=3000,
        )
        session.add_all([content, campaign])
        session.flush()
        campaign.triggers = [Trigger(content_id=content.id)]
        session.commit()
        return organisation, account.id, content.id, campaign.id


def _engage(
    sessions: sessionmaker[Session], world: _World, count: int, start: datetime, first: int
) -> None:
    organisation, account, content, campaign = world
    rows = [
        {
            "id": f"eng_{first + i:012d}",
            "campaign_id": campaign,
            "organisation_id": organisation,
            "content_id": content,
            "viewer_hash": f"viewer-{first + i}",
            "offset_s": 1.0,
            "confidence": 0.9,
            "cost": 100,
            "currency": "usd",
            "owner_account_id": account,
            "owner_share": 30,
            "created_at": start + timedelta(milliseconds=i),
        }
        for i in range(count)
    ]
    with sessions() as session:
        session.execute(insert(Engagement), rows)
        session.commit()


def _batches(
    sessions: sessionmaker[Session], world: _World, first: int, start: datetime
) -> tuple[float, float]:
    """Median ms of accruing one full batch, and of a tick that finds nothing."""
    batch_ms, idle_ms = [], []
    for round_ in range(ROUNDS):
        at = start + timedelta(seconds=round_)
        _engage(sessions, world, ACCRUAL_BATCH, at, first + round_ * ACCRUAL_BATCH)
        now = at + timedelta(minutes=1)
        started = time.perf_counter()
        accrue_engagements(sessions, now)
        batch_ms.append((time.perf_counter() - started) * 1e3)
        started = time.perf_counter()
        if accrue_engagements(sessions, now):
            raise AssertionError("a second tick found work")
        idle_ms.append((time.perf_counter() - started) * 1e3)
    return statistics.median(batch_ms), statistics.median(idle_ms)


def _finding(sessions: sessionmaker[Session], world: _World) -> dict[str, float]:
    """Median ms of the query for the next batch: the partial index, and the old anti-join."""
    _engage(sessions, world, ACCRUAL_BATCH, T0 + timedelta(days=3), 900_000)
    now = T0 + timedelta(days=4)
    posted = exists().where(
        LedgerTransaction.type == PAYMENT, LedgerTransaction.source_id == Engagement.id
    )
    queries = {
        "partial index": waiting_engagements(now, ACCRUAL_BATCH),
        "NOT EXISTS (replaced)": select(Engagement)
        .where(~posted, Engagement.created_at <= now)
        .order_by(Engagement.created_at, Engagement.id)
        .limit(ACCRUAL_BATCH),
    }
    medians = {}
    for name, query in queries.items():
        times = []
        for _ in range(21):
            with sessions() as session:
                started = time.perf_counter()
                if len(session.scalars(query).all()) != ACCRUAL_BATCH:
                    raise AssertionError(f"{name} did not find the batch")
                times.append((time.perf_counter() - started) * 1e3)
        medians[name] = statistics.median(times)
    return medians


def run(kind: str) -> str:
    """Measure on one database kind; one line of results per measurement."""
    admin: Engine | None = None
    if kind == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp(prefix='acr-accrual-')}/acr.db"
    else:
        name = f"acr_accrual_{secrets.token_hex(4)}"
        admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate(url)
        engine = make_engine(url)
        sessions = session_factory(engine)
        world = _world(sessions)
        fresh = _batches(sessions, world, 0, T0)
        for chunk in range(HISTORY // 5000):
            _engage(
                sessions, world, 5000, T0 + timedelta(hours=1, minutes=chunk), 10_000 + chunk * 5000
            )
        while accrue_engagements(sessions, T0 + timedelta(days=1), batch=2000):
            pass
        if kind == "postgresql":
            with engine.begin() as connection:
                connection.execute(text("ANALYZE"))
        aged = _batches(sessions, world, 100_000, T0 + timedelta(days=2))
        finding = _finding(sessions, world)
        engine.dispose()
    finally:
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    return (
        f"{kind}: batch of {ACCRUAL_BATCH} {fresh[0]:.1f} ms with none accrued, "
        f"{aged[0]:.1f} ms with {HISTORY:,} accrued; idle tick {fresh[1]:.2f} -> {aged[1]:.2f} ms; "
        "finding the batch: " + ", ".join(f"{k} {v:.2f} ms" for k, v in finding.items())
    )


def main(argv: list[str]) -> int:
    for kind in argv or ["sqlite", "postgresql"]:
        if kind not in ("sqlite", "postgresql"):
            print(f"unknown database kind {kind!r}: sqlite or postgresql", file=sys.stderr)
            return 2
        print(run(kind), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
