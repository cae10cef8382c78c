"""A connected account's balance and balance transactions, as Stripe shows them.

Everything here is read from the ledger (:mod:`acr.payouts.ledger`); nothing
is stored.

* ``available``: the account's entries whose ``available_on`` has passed;
  ``pending``: the others. Both per currency, as Stripe's ``balance``.
* ``instant_available``: what an instant payout could send now — ``available +
  pending`` (floored at zero), in each currency in which the account has a
  usable (not errored or disabled) debit card eligible for instant payouts, and
  nothing in the others. Pending money counts, as on Stripe, because an instant
  payout is advanced by the platform; the payout's debit is then set against
  the pending revenue when it becomes available.
* A balance transaction's ``status`` is ``available`` once its ``available_on``
  has passed, ``pending`` before.
* Times are ISO 8601 strings in UTC, as the rest of the payouts API writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from acr.db.models import Account, ExternalAccount, LedgerEntry, LedgerTransaction, iso_utc
from acr.payouts.external_accounts import BLOCKING
from acr.payouts.ledger import account_book, book_balances, held_book


@dataclass(frozen=True)
class Money:
    amount: int
    currency: str


@dataclass(frozen=True)
class AccountBalance:
    """Stripe's ``balance`` of one connected account."""

    available: list[Money]
    pending: list[Money]
    instant_available: list[Money]
    held: list[Money]
    """Revenue held in the platform's balance for it (``hold_in_platform``), transferable."""


def instant_currencies(session: Session, account_id: str) -> set[str]:
    """Currencies in which the account has a usable instant-eligible external account."""
    rows = session.scalars(
        select(ExternalAccount).where(
            ExternalAccount.account_id == account_id,
            ExternalAccount.deleted_at.is_(None),
            ExternalAccount.status.not_in(BLOCKING),
        )
    )
    return {row.currency for row in rows if "instant" in (row.available_payout_methods or [])}


def account_balance(session: Session, account: Account, now: datetime) -> AccountBalance:
    """The account's balance at ``now``; every currency it ever held is listed, and its default."""
    balances = {b.currency: b for b in book_balances(session, account_book(account.id), now)}
    currencies = sorted(set(balances) | {account.default_currency})
    instant = instant_currencies(session, account.id)
    available: list[Money] = []
    pending: list[Money] = []
    instant_available: list[Money] = []
    for currency in currencies:
        found = balances.get(currency)
        a, p = (found.available, found.pending) if found else (0, 0)
        available.append(Money(a, currency))
        pending.append(Money(p, currency))
        instant_available.append(Money(max(0, a + p) if currency in instant else 0, currency))
    held = [
        Money(b.available + b.pending, b.currency)
        for b in book_balances(session, held_book(account.id), now)
    ]
    return AccountBalance(available, pending, instant_available, held)


def instant_available_amount(
    session: Session, account_id: str, currency: str, now: datetime
) -> int:
    """What an instant payout in ``currency`` could send now (see the module notes)."""
    if currency not in instant_currencies(session, account_id):
        return 0
    for balance in book_balances(session, account_book(account_id), now):
        if balance.currency == currency:
            return max(0, balance.available + balance.pending)
    return 0


def balance_document(balance: AccountBalance, *, account_id: str) -> dict[str, Any]:
    """Stripe's ``balance`` object (plus ``held``, ours)."""

    def items(money: list[Money]) -> list[dict[str, Any]]:
        return [{"amount": m.amount, "currency": m.currency} for m in money]

    return {
        "object": "balance",
        "account": account_id,
        "livemode": False,
        "available": items(balance.available),
        "pending": items(balance.pending),
        "instant_available": items(balance.instant_available),
        "held": items(balance.held),
    }


def balance_transaction_document(transaction: LedgerTransaction, now: datetime) -> dict[str, Any]:
    """Stripe's ``balance_transaction`` object for a ledger transaction."""
    return {
        "id": transaction.id,
        "object": "balance_transaction",
        "account": transaction.account_id,
        "amount": transaction.amount,
        "fee": transaction.fee,
        "net": transaction.net,
        "currency": transaction.currency,
        "type": transaction.type,
        "status": "available" if transaction.available_on <= now else "pending",
        "available_on": iso_utc(transaction.available_on),
        "created": iso_utc(transaction.created_at),
        "source": transaction.source_id,
        "description": transaction.description or None,
    }


def account_problems(session: Session) -> list[str]:
    """Per-account checks beyond :func:`acr.payouts.ledger.verify`.

    - every ``account:`` and ``held:`` book, and every balance transaction,
      names an existing connected account;
    - each account's balance (the sum of its book's entries) equals the sum of
      its balance transactions' ``net``, per currency: nothing lands on an
      account's book without showing in its balance transactions.
    """
    problems: list[str] = []
    known = set(session.scalars(select(Account.id)))
    books = session.scalars(
        select(LedgerEntry.book)
        .where(or_(LedgerEntry.book.like("account:%"), LedgerEntry.book.like("held:%")))
        .distinct()
    )
    for book in books:
        if book.split(":", 1)[1] not in known:
            problems.append(f"book {book} names no connected account")
    unknown = session.scalars(
        select(LedgerTransaction.account_id)
        .where(LedgerTransaction.account_id.is_not(None))
        .distinct()
    )
    for account_id in unknown:
        if account_id not in known:
            problems.append(f"balance transactions name account {account_id}, which does not exist")
    booked = {
        (book.split(":", 1)[1], currency): int(total)
        for book, currency, total in session.execute(
            select(LedgerEntry.book, LedgerEntry.currency, func.sum(LedgerEntry.amount))
            .where(LedgerEntry.book.like("account:%"))
            .group_by(LedgerEntry.book, LedgerEntry.currency)
        )
    }
    nets = {
        (str(account_id), currency): int(total)
        for account_id, currency, total in session.execute(
            select(
                LedgerTransaction.account_id,
                LedgerTransaction.currency,
                func.sum(LedgerTransaction.net),
            )
            .where(LedgerTransaction.account_id.is_not(None))
            .group_by(LedgerTransaction.account_id, LedgerTransaction.currency)
        )
    }
    for key in sorted(set(booked) | set(nets)):
        if booked.get(key, 0) != nets.get(key, 0):
            account_id, currency = key
            problems.append(
                f"account {account_id} holds {booked.get(key, 0)} {currency} in its book but its "
                f"balance transactions net {nets.get(key, 0)}"
            )
    return problems
