"""Revenue: engagements become ledger postings, pending until the account's delay has passed.

Each engagement is a charge on behalf of its content's owner (a Stripe Connect
destination charge): the advertiser pays ``cost``, the platform keeps its
application fee ``cost − owner_share`` and the owner's account gets
``owner_share``. One ``payment`` ledger transaction per engagement
(``source_id`` = the engagement's id), whose ``(type, source_id)`` uniqueness
makes accrual idempotent however many workers run it::

    advertiser:<org>      −cost
    platform:fees         +cost − owner_share
    account:<owner>       +owner_share   (pending until available_on)

Choices:

* ``available_on`` is midnight UTC of the engagement's UTC day plus the
  account's ``delay_days`` (Stripe's balance transactions become available at
  00:00 UTC of a day). With ``delay_days`` 0 revenue is available at once.
* An owner whose account has ``hold_in_platform`` is credited on
  ``held:<owner>`` instead, on the same schedule; :func:`transfer_held` moves
  available held money to the account on demand (a ``transfer``). Content whose
  owner has no connected account credits ``platform:unallocated``. Both
  transactions have no ``account_id``: the account's balance did not change.
* The account's *current* settings apply when an engagement is accrued, so a
  changed ``delay_days`` or ``hold_in_platform`` affects revenue not yet accrued.
* Currencies are not converted: revenue lands in the campaign's currency, and
  an account may hold several.
* ``balance.available`` events: when revenue is credited already available
  (delay 0, or a late accrual), :func:`accrue_engagements` emits one per
  account and currency in the same transaction; revenue that was pending is
  announced by :func:`release_available` once its day comes, one event per
  account, currency and ``available_on`` day. That event's id is derived from
  those three, so the primary key makes it exactly-once under any number of
  concurrent ticks. Revenue posted pending but committed after its day's event
  (a race of a fraction of a second at midnight) is in the balance but not in
  an event: events notify, the ledger is the truth.
* Finding work reads only the waiting engagements, however many were accrued
  before: an engagement's ``accrued_at`` is set in the transaction that posts
  its payment, and the partial index ``engagements_to_accrue`` on
  ``(created_at, id) WHERE accrued_at IS NULL AND accrual_error IS NULL`` holds
  just the others, in accrual order. (Not a cursor over ids or times: on
  PostgreSQL rows commit out of order, and a cursor would pass over late ones.)
* Bad data (a :class:`~acr.payouts.ledger.LedgerError`, such as a malformed
  currency) does not stop the batch: the engagement gets ``accrual_error``, is
  logged once and leaves the waiting set; clearing ``accrual_error`` (after
  repairing the row) puts it back. :func:`unaccruable_engagements` lists them.
* Concurrency: :func:`accrue_engagements` claims engagements with ``FOR UPDATE
  SKIP LOCKED`` on PostgreSQL, so concurrent workers split the work (a row
  another worker has accrued meanwhile fails the re-checked ``accrued_at IS
  NULL``); an engagement whose payment is in the ledger already (posted before
  it was marked) is marked without a second posting. A batch's postings are
  flushed together, without a savepoint each: the ``(type, source_id)`` unique
  constraint stays the backstop, and should it refuse one the batch rolls back
  whole. On SQLite ``BEGIN IMMEDIATE`` serialises the workers.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from acr.db.models import (
    Account,
    Engagement,
    Event,
    LedgerEntry,
    LedgerTransaction,
    iso_utc,
    new_id,
    utcnow,
)
from acr.db.session import write_session
from acr.events import emit
from acr.payouts.accounts import PayoutInputError, check_currency
from acr.payouts.balance import account_balance, balance_document
from acr.payouts.ledger import (
    PLATFORM_FEES,
    PLATFORM_UNALLOCATED,
    LedgerError,
    Leg,
    Posting,
    account_book,
    advertiser_book,
    book_balance,
    held_book,
    lock_account,
    post,
    post_all,
    posting,
)

log = logging.getLogger("acr.payouts.revenue")

PAYMENT = "payment"
TRANSFER = "transfer"
RELEASE_LOOKBACK = timedelta(days=7)
"""How far back :func:`release_available` looks for days it has not announced yet."""


class UnknownAccountError(LookupError):
    """No such connected account."""


class InsufficientFundsError(Exception):
    """The book holds less available money than asked for."""


def available_on_for(engaged_at: datetime, delay_days: int) -> datetime:
    """Midnight UTC of the engagement's UTC day plus ``delay_days``."""
    day = engaged_at.astimezone(UTC).date() + timedelta(days=delay_days)
    return datetime.combine(day, time(), tzinfo=UTC)


def _legs(
    engagement: Engagement, account: Account | None
) -> tuple[list[Leg], str | None, datetime]:
    """The posting's legs, the account whose balance it changes (if any), its available_on."""
    share, cost = engagement.owner_share, engagement.cost
    if account is None:
        credit, account_id = PLATFORM_UNALLOCATED, None
        available_on = engagement.created_at
    else:
        available_on = available_on_for(engagement.created_at, account.payout_delay_days)
        if account.hold_in_platform:
            credit, account_id = held_book(account.id), None
        else:
            credit, account_id = account_book(account.id), account.id
    legs = [
        Leg(advertiser_book(engagement.organisation_id), -cost),
        Leg(PLATFORM_FEES, cost - share),
        Leg(credit, share),
    ]
    return legs, account_id, available_on


def _announce(
    session: Session,
    account: Account,
    currency: str,
    amount: int,
    available_on: datetime,
    now: datetime,
    event_id: str | None = None,
) -> Event:
    """A ``balance.available`` event: the account's balance now, and what became available."""
    balance = balance_document(account_balance(session, account, now), account_id=account.id)
    event = Event(
        id=event_id or new_id("evt"),
        type="balance.available",
        organisation_id=account.organisation_id,
        account_id=account.id,
        data={
            "object": balance,
            "released": {
                "amount": amount,
                "currency": currency,
                "available_on": iso_utc(available_on),
            },
        },
        created_at=now,
    )
    session.add(event)
    return event


ACCRUAL_BATCH = 50
"""Engagements posted per write transaction. Small, because on SQLite the
transaction holds the database's one write lock, which every served match
waits for: 500 at a time held it for a few hundred milliseconds, the p99 of
the load benchmark's matches; the next batch follows at once while work waits."""

ACCRUAL_ERROR_LENGTH = 500
"""Longest ``Engagement.accrual_error`` (its column's length)."""


WAITING = (Engagement.accrued_at.is_(None), Engagement.accrual_error.is_(None))
"""Engagements waiting for accrual: exactly the predicate of the partial index
``engagements_to_accrue`` (``created_at, id``), so that the planners use it."""


def waiting_engagements(now: datetime, batch: int) -> Select[Engagement]:
    """The next ``batch`` engagements to accrue (created up to ``now``), oldest first."""
    return (
        select(Engagement)
        .where(*WAITING, Engagement.created_at <= now)
        .order_by(Engagement.created_at, Engagement.id)
        .limit(batch)
    )


def accrue_engagements(
    sessions: sessionmaker[Session], now: datetime | None = None, batch: int = ACCRUAL_BATCH
) -> bool:
    """Post the next ``batch`` engagements not yet in the ledger (created up to ``now``).

    Each posted engagement gets ``accrued_at`` in the transaction that posts its
    payment; one whose payment is already in the ledger (another worker's, or
    posted before ``accrued_at`` existed) is marked too. One that cannot be
    posted (a :class:`LedgerError`: bad data) gets ``accrual_error`` and is
    logged once: it is not looked at again until someone clears the error.

    Returns
    -------
    bool
        Whether a full batch was found, so that more may be waiting.
    """
    now = now or utcnow()
    with sessions() as session:
        # A look without the write lock first: most ticks find nothing to accrue, and
        # on SQLite a write transaction per tick would stall every other writer.
        waiting = select(Engagement.id).where(*WAITING, Engagement.created_at <= now).limit(1)
        if session.scalar(waiting) is None:
            return False
    with write_session(sessions) as session:
        engagements = session.scalars(
            waiting_engagements(now, batch).with_for_update(skip_locked=True)
        ).all()
        if not engagements:
            return False
        owners = {e.owner_account_id for e in engagements if e.owner_account_id}
        accounts = {a.id: a for a in session.scalars(select(Account).where(Account.id.in_(owners)))}
        # Posted already: before accrued_at existed, or by a worker whose mark was lost.
        posted = set(
            session.scalars(
                select(LedgerTransaction.source_id).where(
                    LedgerTransaction.type == PAYMENT,
                    LedgerTransaction.source_id.in_([e.id for e in engagements]),
                )
            )
        )
        released: dict[tuple[str, str], int] = defaultdict(int)
        accrued: list[str] = []
        refused: dict[str, str] = {}
        payments: list[Posting] = []
        for engagement in engagements:
            if engagement.id in posted:
                accrued.append(engagement.id)
                continue
            account = accounts.get(engagement.owner_account_id or "")
            legs, account_id, available_on = _legs(engagement, account)
            try:
                payment = posting(
                    type=PAYMENT,
                    source_id=engagement.id,
                    currency=engagement.currency,
                    legs=legs,
                    account_id=account_id,
                    amount=engagement.cost,
                    fee=engagement.cost - engagement.owner_share,
                    net=engagement.owner_share,
                    available_on=available_on,
                    description=f"engagement of campaign {engagement.campaign_id}",
                    now=now,
                )
            except LedgerError as error:
                # Bad data must not stop the others, nor be looked at again every tick.
                log.error("engagement %s cannot be accrued: %s", engagement.id, error)
                refused[engagement.id] = str(error)[:ACCRUAL_ERROR_LENGTH]
                continue
            payments.append(payment)
            accrued.append(engagement.id)
            if account_id is not None and available_on <= now and engagement.owner_share:
                released[(account_id, engagement.currency)] += engagement.owner_share
        # The rows claimed are this worker's alone (the write lock on SQLite, SKIP
        # LOCKED on PostgreSQL) and those posted already were set aside above.
        post_all(session, payments)
        unsynchronised = {"synchronize_session": False}
        if accrued:
            session.execute(
                update(Engagement).where(Engagement.id.in_(accrued)).values(accrued_at=now),
                execution_options=unsynchronised,
            )
        for engagement_id, reason in refused.items():
            session.execute(
                update(Engagement)
                .where(Engagement.id == engagement_id)
                .values(accrual_error=reason),
                execution_options=unsynchronised,
            )
        for (account_id, currency), amount in sorted(released.items()):
            _announce(session, accounts[account_id], currency, amount, now, now)
        session.commit()
        return len(engagements) == batch


def unaccruable_engagements(session: Session) -> list[tuple[str, str]]:
    """``(engagement id, reason)`` of the engagements accrual refused (bad data)."""
    rows = session.execute(
        select(Engagement.id, Engagement.accrual_error)
        .where(Engagement.accrual_error.is_not(None))
        .order_by(Engagement.created_at, Engagement.id)
    ).all()
    return [(engagement_id, str(reason)) for engagement_id, reason in rows]


def release_event_id(account_id: str, currency: str, available_on: datetime) -> str:
    """The id of the ``balance.available`` event of one account, currency and day."""
    key = f"balance.available\x00{account_id}\x00{currency}\x00{available_on.isoformat()}"
    return "evt_" + hashlib.sha256(key.encode()).hexdigest()[:28]


def release_available(
    sessions: sessionmaker[Session],
    now: datetime | None = None,
    lookback: timedelta = RELEASE_LOOKBACK,
) -> int:
    """Emit ``balance.available`` for pending revenue whose day has come; return how many.

    Idempotent: each account, currency and ``available_on`` day is announced once.
    """
    now = now or utcnow()
    with sessions() as session:
        rows = session.execute(
            select(
                LedgerTransaction.account_id,
                LedgerEntry.currency,
                LedgerEntry.available_on,
                LedgerEntry.amount,
            )
            .join(LedgerTransaction, LedgerEntry.transaction_id == LedgerTransaction.id)
            .where(
                LedgerTransaction.type == PAYMENT,
                LedgerTransaction.account_id.is_not(None),
                LedgerEntry.book == literal("account:") + LedgerTransaction.account_id,
                LedgerEntry.available_on <= now,
                LedgerEntry.available_on > now - lookback,
                # Those credited already available were announced as they were accrued.
                LedgerTransaction.created_at < LedgerEntry.available_on,
            )
        ).all()
        due: dict[tuple[str, str, datetime], int] = defaultdict(int)
        for account_id, currency, available_on, amount in rows:
            due[(str(account_id), currency, available_on)] += int(amount)
        ids = {key: release_event_id(*key) for key in due}
        done = set(session.scalars(select(Event.id).where(Event.id.in_(list(ids.values())))))
    todo = sorted(key for key, event_id in ids.items() if event_id not in done)
    emitted = 0
    for account_id, currency, available_on in todo:
        with sessions() as session:
            account = session.get(Account, account_id)
            if account is None:
                continue
            amount = due[(account_id, currency, available_on)]
            _announce(
                session,
                account,
                currency,
                amount,
                available_on,
                now,
                release_event_id(account_id, currency, available_on),
            )
            try:
                session.commit()
                emitted += 1
            except IntegrityError:
                session.rollback()  # another tick announced it first
    return emitted


def tick(
    sessions: sessionmaker[Session], now: datetime | None = None, batch: int = ACCRUAL_BATCH
) -> bool:
    """One periodic pass: accrue a batch, then announce what became available.

    Returns
    -------
    bool
        Whether more engagements may be waiting (call again soon).
    """
    now = now or utcnow()
    more = accrue_engagements(sessions, now, batch)
    release_available(sessions, now)
    return more


def transfer_document(transaction: LedgerTransaction) -> dict[str, Any]:
    """Stripe's ``transfer`` object for a transfer's ledger transaction."""
    return {
        "id": transaction.source_id,
        "object": "transfer",
        "amount": transaction.amount,
        "currency": transaction.currency,
        "destination": transaction.account_id,
        "balance_transaction": transaction.id,
        "created": iso_utc(transaction.created_at),
        "description": transaction.description or None,
        "reversed": False,
    }


def transfer_held(
    session: Session,
    account_id: str,
    amount: int,
    currency: str,
    *,
    transfer_id: str | None = None,
    description: str = "",
    now: datetime | None = None,
) -> LedgerTransaction:
    """Move ``amount`` of the account's available held revenue to its balance (a transfer).

    Locks the account for the rest of the caller's transaction, posts
    ``held:<acct> −amount``, ``account:<acct> +amount`` (available at once) and
    emits ``transfer.created`` and ``balance.available``. The caller commits.

    Raises
    ------
    PayoutInputError
        ``amount`` is not a positive whole number, or ``currency`` is not a code.
    UnknownAccountError
        No such account.
    InsufficientFundsError
        Less than ``amount`` of held revenue is available in ``currency``.
    """
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise PayoutInputError(("amount",), "amount is a positive whole number of minor units")
    currency = check_currency(currency)
    now = now or utcnow()
    account = lock_account(session, account_id)
    if account is None:
        raise UnknownAccountError(f"no connected account {account_id!r}")
    held = book_balance(session, held_book(account.id), currency, now)
    if amount > held.available:
        raise InsufficientFundsError(
            f"account {account.id} has {held.available} {currency} of held revenue available"
            f" ({held.pending} pending); cannot transfer {amount}"
        )
    transfer_id = transfer_id or new_id("tr")
    transaction = post(
        session,
        posting(
            type=TRANSFER,
            source_id=transfer_id,
            currency=currency,
            legs=[Leg(held_book(account.id), -amount), Leg(account_book(account.id), amount)],
            account_id=account.id,
            amount=amount,
            net=amount,
            available_on=now,
            description=description,
            now=now,
        ),
    )
    emit(
        session,
        "transfer.created",
        {"object": transfer_document(transaction)},
        organisation_id=account.organisation_id,
        account_id=account.id,
    )
    _announce(session, account, currency, amount, now, now)
    return transaction
