"""The double-entry ledger: balanced postings, duplicates refused, invariants checked.

Runs on SQLite and PostgreSQL (via the ``services`` fixture), and ``acr payouts
verify`` in-process on the same database.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from acr.db.models import Account, Event, LedgerEntry, LedgerTransaction
from acr.payouts.balance import account_problems
from acr.payouts.ledger import (
    PLATFORM_FEES,
    DuplicatePostingError,
    LedgerError,
    Leg,
    account_book,
    advertiser_book,
    book_balance,
    book_balances,
    post,
    posting,
    verify,
)

if TYPE_CHECKING:
    from api.services import Services

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _account(services: Services) -> str:
    with services.sessions() as session:
        account = Account(country="US", default_currency="usd")
        session.add(account)
        session.commit()
        return account.id


def _payment(account_id: str, source: str, cost: int = 100, share: int = 30) -> dict[str, object]:
    return {
        "type": "payment",
        "source_id": source,
        "currency": "usd",
        "legs": [
            Leg(advertiser_book("org_x"), -cost),
            Leg(PLATFORM_FEES, cost - share),
            Leg(account_book(account_id), share),
        ],
        "account_id": account_id,
        "amount": cost,
        "fee": cost - share,
        "net": share,
        "available_on": NOW + timedelta(days=2),
        "now": NOW,
    }


def test_postings_balance_and_pending_becomes_available(services: Services) -> None:
    account_id = _account(services)
    with services.sessions() as session:
        post(session, posting(**_payment(account_id, "eng_1")))  # type: ignore[arg-type]
        session.commit()
        book = account_book(account_id)
        assert book_balance(session, book, "usd", NOW).pending == 30
        assert book_balance(session, book, "usd", NOW).available == 0
        later = book_balances(session, book, NOW + timedelta(days=2))
        assert [(b.currency, b.available, b.pending) for b in later] == [("usd", 30, 0)]
        assert book_balance(session, book, "eur", NOW).available == 0
        assert verify(session) == [] and account_problems(session) == []


def test_a_duplicate_is_refused_without_undoing_the_callers_work(services: Services) -> None:
    account_id = _account(services)
    with services.sessions() as session:
        post(session, posting(**_payment(account_id, "eng_1")))  # type: ignore[arg-type]
        session.commit()
    with services.sessions() as session:
        session.add(Event(type="other.work", data={}))
        with pytest.raises(DuplicatePostingError):
            post(session, posting(**_payment(account_id, "eng_1")))  # type: ignore[arg-type]
        session.commit()
        assert session.scalar(select(func.count()).select_from(LedgerTransaction)) == 1
        assert session.scalar(select(func.count()).where(Event.type == "other.work")) == 1


@pytest.mark.parametrize(
    ("legs", "currency", "message"),
    [
        ([Leg("a", -100), Leg("b", 99)], "usd", "do not balance"),
        ([Leg("a", 0)], "usd", "two legs"),
        ([Leg("a", -1), Leg("b", 1)], "USD", "lower-case"),
        ([Leg("a", -1.5), Leg("b", 1.5)], "usd", "whole numbers"),  # type: ignore[arg-type]
        ([Leg("a", True), Leg("b", -1)], "usd", "whole numbers"),
    ],
)
def test_bad_postings_write_nothing(
    services: Services, legs: list[Leg], currency: str, message: str
) -> None:
    with services.sessions() as session:
        with pytest.raises(LedgerError, match=message):
            post(session, posting(type="adjustment", source_id="x", currency=currency, legs=legs))
        session.commit()
        assert session.scalar(select(func.count()).select_from(LedgerEntry)) == 0


def _break_the_ledger(services: Services, account_id: str) -> None:
    """A stray entry: money appears on an account's book from nowhere."""
    with services.sessions() as session:
        transaction = session.scalars(select(LedgerTransaction)).first()
        assert transaction is not None
        session.add(
            LedgerEntry(
                transaction_id=transaction.id,
                book=account_book(account_id),
                currency="usd",
                amount=5,
                available_on=NOW,
            )
        )
        session.commit()


def test_verify_finds_a_broken_entry(services: Services) -> None:
    account_id = _account(services)
    with services.sessions() as session:
        post(session, posting(**_payment(account_id, "eng_1")))  # type: ignore[arg-type]
        session.commit()
    _break_the_ledger(services, account_id)
    with services.sessions() as session:
        problems = verify(session)
        assert any("does not balance" in p for p in problems)
        assert any("sum to +5" in p for p in problems)
        assert any("says net 30 but books 35" in p for p in problems)
        assert any("balance transactions net 30" in p for p in account_problems(session))


def test_account_problems_sees_books_of_unknown_accounts(services: Services) -> None:
    with services.sessions() as session:
        post(
            session,
            posting(
                type="adjustment",
                source_id="adj_1",
                currency="usd",
                legs=[Leg(PLATFORM_FEES, -7), Leg(account_book("acct_ghost"), 7)],
            ),
        )
        session.commit()
        problems = account_problems(session)
    assert any("book account:acct_ghost names no connected account" in p for p in problems)
    # The 7 landed on an account's book with no balance transaction to show for it.
    assert any("holds 7 usd in its book but its balance transactions net 0" in p for p in problems)


def test_acr_payouts_verify(
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from acr.cli import main

    monkeypatch.setenv("ACR_DATABASE_URL", services.settings.database_url)
    monkeypatch.setenv("ACR_DATA_DIR", str(services.settings.data_dir))
    account_id = _account(services)
    with services.sessions() as session:
        post(session, posting(**_payment(account_id, "eng_1")))  # type: ignore[arg-type]
        session.commit()
    assert main(["payouts", "verify", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True and result["transactions"] == 1 and result["entries"] == 3

    _break_the_ledger(services, account_id)
    assert main(["payouts", "verify"]) == 1
    captured = capsys.readouterr()
    assert "problem(s)" in captured.out
    assert "does not balance" in captured.err and "says net 30 but books 35" in captured.err
