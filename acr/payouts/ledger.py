"""The double-entry ledger: the only place money moves, and the only source of balances.

Every movement is one :class:`~acr.db.models.LedgerTransaction` whose entries
(legs) sum to zero per currency; a balance is the sum of the entries on one
*book*, never a stored counter. Books:

``account:<acct>``
    A connected account's balance (Stripe's ``balance``). An entry there is
    *pending* until its ``available_on``, then *available*.
``held:<acct>``
    Revenue of an account that accumulates in the platform's balance, moved to
    ``account:<acct>`` by a transfer on demand.
``advertiser:<org>``
    What advertisers owe for engagements (debited as engagements are served).
``platform:fees``
    The platform's application fees and instant-payout fees.
``platform:unallocated``
    Revenue of content whose owner has no connected account yet.
``rail:in_transit``, ``rail:paid``
    Money on its way to, and arrived at, banks and cards.

Amounts are integers in the currency's minor unit; currencies are lower-case
ISO 4217 codes, as Stripe writes them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, insert, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from acr.db.models import Account, LedgerEntry, LedgerTransaction, new_id, utcnow

CURRENCY = re.compile(r"^[a-z]{3}$")

PLATFORM_FEES = "platform:fees"
PLATFORM_UNALLOCATED = "platform:unallocated"
RAIL_IN_TRANSIT = "rail:in_transit"
RAIL_PAID = "rail:paid"


def account_book(account_id: str) -> str:
    return f"account:{account_id}"


def held_book(account_id: str) -> str:
    return f"held:{account_id}"


def advertiser_book(organisation_id: str) -> str:
    return f"advertiser:{organisation_id}"


class LedgerError(ValueError):
    """A posting that would break the ledger's rules (unbalanced, bad currency or amount)."""


class DuplicatePostingError(Exception):
    """This movement (type and source) is already in the ledger."""


@dataclass(frozen=True)
class Leg:
    """One side of a posting: ``amount`` (signed, minor units) on ``book``.

    ``available_on`` defaults to the transaction's; a leg on an account's book
    is pending until then.
    """

    book: str
    amount: int
    available_on: datetime | None = None


@dataclass(frozen=True)
class Posting:
    """One checked, balanced movement of money, not yet recorded (see :func:`posting`)."""

    id: str
    type: str
    source_id: str
    account_id: str | None
    currency: str
    amount: int
    fee: int
    net: int
    available_on: datetime
    description: str
    created_at: datetime
    legs: tuple[Leg, ...]

    def transaction_row(self) -> dict[str, Any]:
        """The ``ledger_transactions`` row."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        del row["legs"]
        return row

    def entry_rows(self) -> list[dict[str, Any]]:
        """The ``ledger_entries`` rows, one per leg that moves money."""
        return [
            {
                "transaction_id": self.id,
                "book": leg.book,
                "currency": self.currency,
                "amount": leg.amount,
                "available_on": leg.available_on or self.available_on,
            }
            for leg in self.legs
            if leg.amount != 0
        ]


def posting(
    *,
    type: str,
    source_id: str,
    currency: str,
    legs: Sequence[Leg],
    account_id: str | None = None,
    amount: int = 0,
    fee: int = 0,
    net: int = 0,
    available_on: datetime | None = None,
    description: str = "",
    now: datetime | None = None,
) -> Posting:
    """Check and build one balanced movement of money.

    Parameters
    ----------
    type, source_id : str
        What it is and what caused it; the pair is unique in the ledger.
    currency : str
        Lower-case ISO 4217 code.
    legs : sequence of Leg
        At least two, summing to zero.
    account_id, amount, fee, net : optional
        The connected account's view of it (its balance transaction), if any.
    available_on : datetime, optional
        When account legs become available; now by default.

    Raises
    ------
    LedgerError
        Unbalanced legs, fewer than two, non-integer amounts, a bad currency.
    """
    if not CURRENCY.match(currency):
        raise LedgerError(f"currency {currency!r} is not a lower-case ISO 4217 code")
    if len(legs) < 2:
        raise LedgerError("a posting needs at least two legs")
    if any(not isinstance(leg.amount, int) or isinstance(leg.amount, bool) for leg in legs):
        raise LedgerError("amounts are whole numbers of minor units")
    if sum(leg.amount for leg in legs) != 0:
        raise LedgerError(f"legs of {type} {source_id} do not balance")
    now = now or utcnow()
    return Posting(
        id=new_id("txn"),
        type=type,
        source_id=source_id,
        account_id=account_id,
        currency=currency,
        amount=amount,
        fee=fee,
        net=net,
        available_on=available_on or now,
        description=description,
        created_at=now,
        legs=tuple(legs),
    )


def post(session: Session, movement: Posting) -> LedgerTransaction:
    """Record one posting in the caller's transaction; its ledger transaction.

    Raises
    ------
    DuplicatePostingError
        Its ``(type, source_id)`` is already posted; the caller's transaction is intact.
    """
    transaction = LedgerTransaction(**movement.transaction_row())
    transaction.entries = [LedgerEntry(**row) for row in movement.entry_rows()]
    try:
        # A savepoint: a duplicate must not roll back the caller's other work.
        with session.begin_nested():
            session.add(transaction)
            session.flush()
    except IntegrityError:
        raise DuplicatePostingError(
            f"{movement.type} for {movement.source_id} is already posted"
        ) from None
    return transaction


def post_all(session: Session, movements: Sequence[Posting]) -> None:
    """Record many postings in the caller's transaction: one insert per table.

    No savepoint each: the caller has made sure none of them is posted already.
    Should the ``(type, source_id)`` constraint refuse one anyway, the statement
    fails and the caller's transaction must be rolled back whole.
    """
    if not movements:
        return
    session.execute(insert(LedgerTransaction), [m.transaction_row() for m in movements])
    session.execute(insert(LedgerEntry), [row for m in movements for row in m.entry_rows()])


@dataclass(frozen=True)
class Balance:
    """A book's money in one currency: available now, and pending (available later)."""

    currency: str
    available: int
    pending: int


def book_balances(session: Session, book: str, now: datetime) -> list[Balance]:
    """The balance of ``book`` in each currency it holds, by currency."""
    is_available = LedgerEntry.available_on <= now
    rows = session.execute(
        select(
            LedgerEntry.currency,
            func.coalesce(func.sum(case((is_available, LedgerEntry.amount), else_=0)), 0),
            func.coalesce(func.sum(case((is_available, 0), else_=LedgerEntry.amount)), 0),
        )
        .where(LedgerEntry.book == book)
        .group_by(LedgerEntry.currency)
        .order_by(LedgerEntry.currency)
    ).all()
    return [
        Balance(currency, int(available), int(pending)) for currency, available, pending in rows
    ]


def book_balance(session: Session, book: str, currency: str, now: datetime) -> Balance:
    """The balance of ``book`` in ``currency`` (zero if it never held any)."""
    for balance in book_balances(session, book, now):
        if balance.currency == currency:
            return balance
    return Balance(currency, 0, 0)


def lock_account(session: Session, account_id: str) -> Account | None:
    """The account, row-locked for the rest of the transaction.

    Everything that spends an account's balance (payouts, transfers out) takes
    this lock first, so that two spenders cannot both see the same available
    money. On PostgreSQL it is ``SELECT … FOR UPDATE``; SQLite's write
    transactions (:func:`acr.db.session.write_session`) are serialised already.
    """
    return session.scalars(
        select(Account).where(Account.id == account_id).with_for_update()
    ).first()


def verify(session: Session) -> list[str]:
    """Check the ledger's invariants; return what is wrong (nothing, normally).

    - every transaction's entries sum to zero (debits equal credits);
    - all entries of each currency sum to zero;
    - every balance transaction's ``net`` equals its entries on its account's book.
    """
    problems: list[str] = []
    unbalanced = session.execute(
        select(LedgerEntry.transaction_id, LedgerEntry.currency, func.sum(LedgerEntry.amount))
        .group_by(LedgerEntry.transaction_id, LedgerEntry.currency)
        .having(func.sum(LedgerEntry.amount) != 0)
    ).all()
    problems += [f"transaction {t} does not balance in {c}: {int(s):+d}" for t, c, s in unbalanced]
    totals = session.execute(
        select(LedgerEntry.currency, func.sum(LedgerEntry.amount))
        .group_by(LedgerEntry.currency)
        .having(func.sum(LedgerEntry.amount) != 0)
    ).all()
    problems += [f"entries in {c} sum to {int(s):+d}, not zero" for c, s in totals]
    on_account = (
        select(
            LedgerTransaction.id,
            LedgerTransaction.net,
            func.coalesce(func.sum(LedgerEntry.amount), 0),
        )
        .join(
            LedgerEntry,
            (LedgerEntry.transaction_id == LedgerTransaction.id)
            & (LedgerEntry.book == literal("account:") + LedgerTransaction.account_id),
            isouter=True,
        )
        .where(LedgerTransaction.account_id.is_not(None))
        .group_by(LedgerTransaction.id, LedgerTransaction.net)
    )
    for transaction_id, net, booked in session.execute(on_account).all():
        if int(net) != int(booked):
            problems.append(
                f"balance transaction {transaction_id} says net {net} but books {booked}"
            )
    return problems
