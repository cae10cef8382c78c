"""Payouts under concurrency and crashes, on SQLite and PostgreSQL.

* Manual payouts racing for one balance never overdraw it.
* Two schedulers at once make one automatic payout.
* A process killed after creating a payout, before calling the rail, loses
  nothing: the outbox submits it later, once; submitting again never pays twice.
* Revenue accrual in several workers while engagements keep arriving, some
  committed after later ones were accrued, posts each engagement exactly once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, insert, select

from acr.auth import ensure_organisation
from acr.db.models import (
    Campaign,
    Content,
    Engagement,
    LedgerTransaction,
    Payout,
    SimulatedTransfer,
)
from acr.db.session import make_engine, session_factory
from acr.payouts import ledger
from acr.payouts.payouts import (
    PayoutError,
    PayoutRequest,
    PayoutTerms,
    create_manual,
    poll_rail,
    run_automatic,
    submit_outbox,
)
from acr.payouts.rails.base import RailPayout
from acr.payouts.rails.simulated import SimulatedRail
from acr.payouts.revenue import accrue_engagements
from api.services import Services
from tests.conftest import ROOT
from tests.payout_helpers import (
    T0,
    add_external,
    available,
    book_total,
    events,
    fund,
    make_account,
    verify,
)

TERMS = PayoutTerms()


def _race(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads released together; results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as error:  # collected: the test looks at each outcome
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_racing_manual_payouts_never_overdraw(services: Services) -> None:
    sessions = services.sessions
    account = make_account(sessions)
    add_external(sessions, account)
    fund(sessions, account, 3_500)  # room for exactly 3 payouts of 1000

    results = _race(
        8,
        lambda i: create_manual(
            sessions, PayoutRequest(account, 1_000, "usd"), terms=TERMS, now=T0
        ),
    )
    made = [r for r in results if isinstance(r, Payout)]
    refused = [r for r in results if isinstance(r, PayoutError)]
    assert len(made) == 3, results
    assert len(refused) == 5 and {r.code for r in refused} == {"insufficient_funds"}
    assert available(sessions, account) == 500
    assert book_total(sessions, ledger.RAIL_IN_TRANSIT) == 3_000
    assert verify(sessions) == []


def test_two_schedulers_at_once_make_one_payout(services: Services) -> None:
    sessions = services.sessions
    accounts = [make_account(sessions, interval="daily") for _ in range(3)]
    for account in accounts:
        add_external(sessions, account)
        fund(sessions, account, 2_000)
    results = _race(2, lambda i: run_automatic(sessions, T0, terms=TERMS))
    assert not any(isinstance(r, Exception) for r in results), results
    created = [p for r in results for p in r.created]
    assert len(created) == 3
    with sessions() as session:
        rows = session.scalars(select(Payout)).all()
    assert sorted(p.account_id for p in rows) == sorted(accounts)
    assert all(available(sessions, account) == 0 for account in accounts)
    assert verify(sessions) == []


def test_racing_outbox_submitters_submit_once(services: Services) -> None:
    sessions = services.sessions
    account = make_account(sessions)
    add_external(sessions, account)
    fund(sessions, account, 5_000)
    payouts = [
        create_manual(sessions, PayoutRequest(account, 1_000, "usd"), terms=TERMS, now=T0).id
        for _ in range(4)
    ]
    results = _race(3, lambda i: submit_outbox(sessions, SimulatedRail(sessions), T0))
    assert not any(isinstance(r, Exception) for r in results), results
    assert sorted(p for r in results for p in r.submitted) == sorted(payouts)
    assert len(events(sessions, "payout.updated")) == 4
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(SimulatedTransfer)) == 4


_CRASH = """
import os, signal, sys
from datetime import datetime
from acr.db.session import make_engine, session_factory
from acr.payouts.payouts import PayoutTerms, PayoutRequest, create_manual
sessions = session_factory(make_engine(sys.argv[1]))
payout = create_manual(
    sessions, PayoutRequest(sys.argv[2], 2500, "usd"), terms=PayoutTerms(),
    now=datetime.fromisoformat(sys.argv[3]),
)
print(payout.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # before the rail is called
"""


def test_a_crash_before_the_rail_is_called_loses_nothing_and_pays_once(
    services: Services,
) -> None:
    sessions = services.sessions
    account = make_account(sessions)
    add_external(sessions, account)
    fund(sessions, account, 10_000)
    url = services.settings.database_url
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASH, url, account, T0.isoformat()],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert crashed.returncode == -9, crashed.stderr
    payout_id = crashed.stdout.strip()
    with sessions() as session:
        payout = session.get(Payout, payout_id)
        assert payout is not None
        assert (payout.status, payout.rail_state) == ("pending", "to_submit")
    assert available(sessions, account) == 7_500

    # A new process: its own engine and rail instance.
    engine = make_engine(url)
    try:
        fresh = session_factory(engine)
        rail = SimulatedRail(fresh)
        # The rail may even have received it before the crash: submitting again is harmless.
        request = RailPayout(
            payout_id, account, 2_500, "usd", "standard", payout.destination, "bank_account"
        )
        reference = rail.submit(request)
        assert submit_outbox(fresh, rail, T0).submitted == [payout_id]
        assert submit_outbox(fresh, rail, T0).submitted == []
        assert rail.submit(request) == reference
        with fresh() as session:
            assert session.scalar(select(func.count()).select_from(SimulatedTransfer)) == 1
            row = session.get(Payout, payout_id)
            assert row is not None
            assert (row.status, row.rail_state, row.rail_ref) == (
                "in_transit",
                "submitted",
                reference,
            )
        arrival = T0 + timedelta(days=2)
        assert poll_rail(fresh, rail, arrival).applied == 1
        assert poll_rail(fresh, SimulatedRail(fresh), arrival).updates == 0
    finally:
        engine.dispose()
    assert book_total(sessions, ledger.RAIL_PAID) == 2_500
    assert available(sessions, account, now=T0 + timedelta(days=3)) == 7_500
    assert verify(sessions) == []


def test_accrual_workers_beside_arriving_engagements_post_each_once(services: Services) -> None:
    """Engagements are written while 4 workers accrue; each written later is stamped
    *earlier* than the last, as a transaction that commits late would be: no cursor skips it."""
    sessions = services.sessions
    account = make_account(sessions)
    with sessions() as session:
        org = ensure_organisation(session, "acme").id
        content = Content(title="Show", kind="audio", status="ready", owner_account_id=account)
        campaign = Campaign(
            organisation_id=org,
            name="c",
            advertiser="Acme",
            status="running",
            cost_per_engagement=100,
            revenue_share_bps=3000,
        )
        session.add_all([content, campaign])
        session.commit()
        content_id, campaign_id = content.id, campaign.id
    rounds, per_round = 30, 5
    writing = threading.Event()
    writing.set()

    def write() -> None:
        try:
            for r in range(rounds):
                rows = [
                    {
                        "id": f"eng_{r:03d}_{i}",
                        "campaign_id": campaign_id,
                        "organisation_id": org,
                        "content_id": content_id,
                        "viewer_hash": f"v{r}.{i}",
                        "offset_s": 1.0,
                        "confidence": 0.9,
                        "cost": 100,
                        "currency": "usd",
                        "owner_account_id": account,
                        "owner_share": 30,
                        "created_at": T0 - timedelta(seconds=r, milliseconds=i),
                    }
                    for i in range(per_round)
                ]
                with sessions() as session:
                    session.execute(insert(Engagement), rows)
                    session.commit()
        finally:
            writing.clear()

    def accrue(i: int) -> int:
        if i == 0:
            write()
            return 0
        passes = 0
        while True:
            still_writing = writing.is_set()
            more = accrue_engagements(sessions, T0, batch=4)
            passes += 1
            if not more and not still_writing:
                return passes

    results = _race(5, accrue)
    assert not any(isinstance(r, Exception) for r in results), results
    with sessions() as session:
        sources = session.scalars(
            select(LedgerTransaction.source_id).where(LedgerTransaction.type == "payment")
        ).all()
        waiting = session.scalar(
            select(func.count())
            .select_from(Engagement)
            .where(Engagement.accrued_at.is_(None) | Engagement.accrual_error.is_not(None))
        )
    assert len(sources) == len(set(sources)) == rounds * per_round
    assert waiting == 0
    assert book_total(sessions, ledger.account_book(account)) == rounds * per_round * 30
    assert verify(sessions) == []
