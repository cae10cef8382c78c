"""Helpers of the payout tests: accounts, bank accounts and cards, and money, made directly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from acr.db.models import Account, Event, ExternalAccount, LedgerTransaction, new_id
from acr.payouts import ledger
from acr.payouts.ledger import Leg
from acr.payouts.rails.simulated import behaviour_for

PAST = datetime(2020, 1, 1, tzinfo=UTC)
"""When test money became available: before any clock a test uses."""
T0 = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)
"""A Monday noon: the controlled clock of the service-level tests."""
SUCCESS = "000123456789"
DEBIT = "4000056655665556"


def make_account(
    sessions: sessionmaker[Session],
    *,
    organisation_id: str | None = None,
    interval: str = "manual",
    weekly_anchor: str | None = None,
    monthly_anchor: int | None = None,
    currency: str = "usd",
) -> str:
    with sessions() as session:
        account = Account(
            id=new_id("acct"),
            organisation_id=organisation_id,
            business_name="Owner",
            country="US",
            default_currency=currency,
            payout_interval=interval,
            payout_weekly_anchor=weekly_anchor,
            payout_monthly_anchor=monthly_anchor,
        )
        session.add(account)
        session.commit()
        return account.id


def add_external(
    sessions: sessionmaker[Session],
    account_id: str,
    number: str = SUCCESS,
    *,
    currency: str = "usd",
    default: bool = True,
) -> str:
    """A bank account (or, for a 16-digit number, a debit card) with the rail's behaviour."""
    card = len(number) == 16
    behaviour = behaviour_for(number)
    methods = ["standard", "instant"] if card and behaviour["instant_eligible"] else ["standard"]
    with sessions() as session:
        external = ExternalAccount(
            id=new_id("card" if card else "ba"),
            account_id=account_id,
            object="card" if card else "bank_account",
            last4=number[-4:],
            fingerprint=new_id("fp"),
            country="US",
            currency=currency,
            default_for_currency=default,
            status="new",
            available_payout_methods=methods,
            rail_data=behaviour,
        )
        session.add(external)
        session.commit()
        return external.id


def fund(
    sessions: sessionmaker[Session],
    account_id: str,
    amount: int,
    *,
    currency: str = "usd",
    available_on: datetime = PAST,
) -> str:
    """Credit the account's balance as a payment would (the advertiser's book pays)."""
    with sessions() as session:
        transaction = ledger.post(
            session,
            ledger.posting(
                type="payment",
                source_id=new_id("eng"),
                currency=currency,
                legs=[
                    Leg(ledger.account_book(account_id), amount),
                    Leg("advertiser:test", -amount),
                ],
                account_id=account_id,
                amount=amount,
                net=amount,
                available_on=available_on,
                now=available_on,
            ),
        )
        session.commit()
        return transaction.id


def available(
    sessions: sessionmaker[Session], account_id: str, currency: str = "usd", now: datetime = T0
) -> int:
    with sessions() as session:
        return ledger.book_balance(
            session, ledger.account_book(account_id), currency, now
        ).available


def book_total(sessions: sessionmaker[Session], book: str, currency: str = "usd") -> int:
    with sessions() as session:
        balance = ledger.book_balance(session, book, currency, datetime(9999, 1, 1, tzinfo=UTC))
        return balance.available + balance.pending


def ledger_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(LedgerTransaction)) or 0)


def verify(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return ledger.verify(session)


def events(sessions: sessionmaker[Session], type: str) -> list[dict[str, Any]]:
    with sessions() as session:
        return [
            event.data
            for event in session.scalars(
                select(Event).where(Event.type == type).order_by(Event.created_at)
            )
        ]


def set_status(sessions: sessionmaker[Session], external_id: str, status: str) -> None:
    """Update an external account as its owner fixing it would (status and event)."""
    from acr.payouts.external_accounts import set_external_account_status

    with sessions() as session:
        external = session.get(ExternalAccount, external_id)
        assert external is not None
        account = session.get(Account, external.account_id)
        assert account is not None
        set_external_account_status(session, account, external, status)  # type: ignore[arg-type]
        session.commit()
