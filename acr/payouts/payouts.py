"""Payouts: money from a connected account's balance to its bank account or debit card.

Lifecycle (Stripe's): ``pending`` → ``in_transit`` → ``paid`` | ``failed`` |
``canceled``; a paid payout may still fail later (the bank returns it).

* **Creation** (:func:`create_payout`) checks everything under the account's
  row lock (:func:`~acr.payouts.ledger.lock_account`) in the caller's write
  transaction, then records the payout and its ledger postings together:
  ``payout`` (``account:<acct>`` −amount, ``rail:in_transit`` +amount) and,
  for an instant payout, ``payout_fee`` (``account:<acct>`` −fee,
  ``platform:fees`` +fee; the payout's ``fee`` field says it too). The payout
  starts in the outbox (``rail_state`` ``to_submit``); nothing talks to a rail
  inside that transaction.
* **Submission** (:func:`submit_outbox`) hands outbox payouts to their rail,
  which is idempotent by payout id, and only then marks them ``submitted`` and
  ``in_transit``: a process killed in between submits again, and the rail
  recognises the payout, so nothing is lost or paid twice.
* **Rail updates** (:func:`apply_update`) move the payout on, idempotently:
  ``paid`` posts ``payout_paid`` (``rail:in_transit`` → ``rail:paid``);
  ``failed`` posts ``payout_failure`` (the amount, and an instant fee, back to
  the balance, available at once), marks the destination ``errored`` and emits
  ``account.external_account.updated``; ``canceled`` posts ``payout_cancel``.
* **Blocking**: no payout is created (manual: refused; automatic: skipped)
  while ``payouts_enabled`` is false, or the destination or the account's
  default external account for the currency is ``errored`` or ``disabled``.
  Updating the external account (a new status) lifts the block.
* **Events**: ``payout.created``; ``payout.updated`` when it goes in transit;
  ``payout.paid``, ``payout.failed``, ``payout.canceled`` on those outcomes.
  Each carries the payout as ``data.object`` and, for changes,
  ``data.previous_attributes``.

Automatic payouts (:func:`run_automatic`) pay each due account's whole
available balance per currency, once per scheduled UTC day: the unique
constraint ``payouts_automatic_once`` and the account lock make two schedulers
running at once create one payout.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from acr.db.models import (
    Account,
    ExternalAccount,
    LedgerTransaction,
    Payout,
    iso_utc,
    new_id,
    utcnow,
)
from acr.db.session import write_session
from acr.events import emit
from acr.payouts import ledger
from acr.payouts.balance import instant_available_amount
from acr.payouts.external_accounts import set_external_account_status
from acr.payouts.ledger import Leg
from acr.payouts.rails.base import Rail, RailError, RailPayout, RailUpdate
from acr.payouts.rails.simulated import FAILURE_MESSAGES
from acr.payouts.schedule import PayoutSchedule, arrival_date, is_due
from acr.settings import Settings

log = logging.getLogger("acr.payouts")

MAX_AMOUNT = 10**15
"""Largest payout accepted, in minor units (fits a BIGINT with room for sums)."""
METHODS = ("standard", "instant")
BLOCKING = frozenset({"errored", "disabled"})
"""External account statuses that stop payouts until the account is updated."""
PAYOUT_TYPES = ("payout", "payout_fee", "payout_paid", "payout_failure", "payout_cancel")
"""Ledger transaction types a payout posts (their ``source_id`` is the payout's id)."""
_CURRENCY = re.compile(r"^[a-z]{3}$")

_STATUS_OF_CODE = {
    "no_such_account": 404,
    "invalid_amount": 422,
    "invalid_currency": 422,
    "invalid_method": 422,
    "no_such_destination": 422,
    "no_external_account": 422,
    "currency_mismatch": 422,
    "instant_ineligible": 422,
    "payouts_blocked": 409,
    "external_account_disabled": 409,
    "insufficient_funds": 409,
    "payout_not_cancelable": 409,
}


class PayoutError(Exception):
    """A payout that cannot be made or changed; nothing was written.

    ``code`` is stable (the API's problem ``code``), ``status`` the HTTP status it
    maps to, ``param`` the request field at fault, if one is.
    """

    def __init__(self, code: str, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.status = _STATUS_OF_CODE.get(code, 400)


class DuplicateAutomaticPayoutError(Exception):
    """An automatic payout for this account, currency and day exists already."""


@dataclass(frozen=True)
class PayoutRequest:
    """What a payout is asked for (a manual one, or one the scheduler makes)."""

    account_id: str
    amount: int
    currency: str
    destination: str | None = None
    """An external account of the account; None: its default for the currency."""
    method: str = "standard"
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PayoutTerms:
    """How payouts are made: the instant fee (``bps`` of the amount, at least ``minimum``,
    in minor units) and the rail new payouts go through."""

    bps: int = 0
    minimum: int = 0
    rail: str = "simulated"

    def fee(self, amount: int) -> int:
        return max(self.minimum, math.ceil(amount * self.bps / 10_000))


def payout_terms(settings: Settings) -> PayoutTerms:
    """The instant fee and the rail configured in :class:`~acr.settings.Settings`."""
    return PayoutTerms(
        settings.instant_payout_fee_bps, settings.instant_payout_fee_min, settings.payout_rail
    )


# -- documents -------------------------------------------------------------------------------


def destination_type(destination_id: str) -> str:
    """``card`` or ``bank_account``, from the external account's id prefix."""
    return "card" if destination_id.startswith("card_") else "bank_account"


def payout_document(payout: Payout) -> dict[str, Any]:
    """The payout in Stripe's shape, JSON-ready: the API's body and the events' object."""
    return {
        "id": payout.id,
        "object": "payout",
        "account": payout.account_id,
        "amount": payout.amount,
        "arrival_date": iso_utc(payout.arrival_date),
        "automatic": payout.automatic,
        "balance_transaction": payout.balance_transaction_id,
        "created": iso_utc(payout.created_at),
        "currency": payout.currency,
        "description": payout.description,
        "destination": payout.destination,
        "failure_balance_transaction": payout.failure_balance_transaction_id,
        "failure_code": payout.failure_code,
        "failure_message": payout.failure_message,
        "fee": payout.fee,
        "metadata": dict(payout.extra or {}),
        "method": payout.method,
        "status": payout.status,
        "type": destination_type(payout.destination),
    }


def _emit(session: Session, type: str, payout: Payout, previous: dict[str, Any] | None) -> None:
    session.flush()
    account = session.get(Account, payout.account_id)
    data: dict[str, Any] = {"object": payout_document(payout)}
    if previous is not None:
        data["previous_attributes"] = previous
    emit(
        session,
        type,
        data,
        organisation_id=account.organisation_id if account else None,
        account_id=payout.account_id,
    )


# -- creation --------------------------------------------------------------------------------


def _default_destination(
    session: Session, account_id: str, currency: str
) -> ExternalAccount | None:
    return session.scalars(
        select(ExternalAccount)
        .where(
            ExternalAccount.account_id == account_id,
            ExternalAccount.currency == currency,
            ExternalAccount.default_for_currency.is_(True),
            ExternalAccount.deleted_at.is_(None),
        )
        .order_by(ExternalAccount.created_at, ExternalAccount.id)
    ).first()


def _check_amount(amount: object) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise PayoutError("invalid_amount", "amount is a whole number", param="amount")
    if isinstance(amount, float):
        # 10.5 cents cannot be paid; 10.0 is a float only by accident of JSON, still refused.
        raise PayoutError(
            "invalid_amount",
            f"amount is a whole number of the currency's minor unit, not {amount!r}",
            param="amount",
        )
    if amount <= 0:
        raise PayoutError(
            "invalid_amount", f"amount must be positive, not {amount}", param="amount"
        )
    if amount > MAX_AMOUNT:
        raise PayoutError("invalid_amount", f"amount is at most {MAX_AMOUNT}", param="amount")
    return amount


def create_payout(
    session: Session,
    request: PayoutRequest,
    *,
    terms: PayoutTerms,
    now: datetime | None = None,
    automatic_for: str | None = None,
) -> Payout:
    """Make a payout in the caller's (write) transaction; the caller commits.

    Every check comes before the first write, so a refused payout leaves the
    session as it was.

    Raises
    ------
    PayoutError
        The amount, currency, destination or method is wrong, payouts are
        blocked, or the balance cannot cover the amount (and instant fee).
    DuplicateAutomaticPayoutError
        ``automatic_for`` is given and that day's automatic payout exists.
    """
    now = now or utcnow()
    amount = _check_amount(request.amount)
    currency = request.currency.lower() if isinstance(request.currency, str) else ""
    if not _CURRENCY.match(currency):
        raise PayoutError(
            "invalid_currency", f"{request.currency!r} is not an ISO 4217 code", param="currency"
        )
    if request.method not in METHODS:
        raise PayoutError(
            "invalid_method", f"method is standard or instant, not {request.method!r}"
        )
    account = ledger.lock_account(session, request.account_id)
    if account is None:
        raise PayoutError("no_such_account", f"no account {request.account_id!r}", param="account")
    if not account.payouts_enabled:
        raise PayoutError("payouts_blocked", f"payouts are disabled for account {account.id}")
    default = _default_destination(session, account.id, currency)
    if request.destination is None:
        destination = default
        if destination is None:
            raise PayoutError(
                "no_external_account",
                f"account {account.id} has no default external account for {currency}",
                param="destination",
            )
    else:
        destination = session.get(ExternalAccount, request.destination)
        if (
            destination is None
            or destination.account_id != account.id
            or destination.deleted_at is not None
        ):
            raise PayoutError(
                "no_such_destination",
                f"account {account.id} has no external account {request.destination!r}",
                param="destination",
            )
    if destination.currency != currency:
        raise PayoutError(
            "currency_mismatch",
            f"external account {destination.id} takes {destination.currency}, not {currency}",
            param="currency",
        )
    if destination.status in BLOCKING:
        raise PayoutError(
            "external_account_disabled",
            f"external account {destination.id} is {destination.status}: update it first",
            param="destination",
        )
    if default is not None and default.status in BLOCKING:
        raise PayoutError(
            "payouts_blocked",
            f"the default {currency} external account {default.id} is {default.status}: "
            "update it first",
        )
    methods = list(destination.available_payout_methods or ["standard"])
    if request.method not in methods:
        raise PayoutError(
            "instant_ineligible" if request.method == "instant" else "invalid_method",
            f"external account {destination.id} does not take {request.method} payouts",
            param="method",
        )
    fee = terms.fee(amount) if request.method == "instant" else 0
    if request.method == "instant":
        # Stripe's instant_available: pending revenue counts, the platform advances it.
        spendable = instant_available_amount(session, account.id, currency, now)
        what = "instant_available"
    else:
        book = ledger.account_book(account.id)
        spendable = ledger.book_balance(session, book, currency, now).available
        what = "available"
    if amount + fee > spendable:
        needed = f"{amount} + fee {fee}" if fee else f"{amount}"
        raise PayoutError(
            "insufficient_funds",
            f"the {what} {currency} balance is {spendable}; the payout needs {needed}",
            param="amount",
        )
    if automatic_for is not None and _automatic_exists(
        session, account.id, currency, automatic_for
    ):
        raise DuplicateAutomaticPayoutError(f"{account.id} {currency} {automatic_for}")

    payout = Payout(
        id=new_id("po"),
        account_id=account.id,
        destination=destination.id,
        amount=amount,
        fee=fee,
        currency=currency,
        method=request.method,
        automatic=automatic_for is not None,
        automatic_for=automatic_for,
        status="pending",
        arrival_date=arrival_date(request.method, now),
        rail=terms.rail,
        rail_state="to_submit",
        description=request.description,
        extra=dict(request.metadata),
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(payout)
            session.flush()
    except IntegrityError:
        # Only the automatic-once constraint can clash: another scheduler got there first.
        raise DuplicateAutomaticPayoutError(f"{account.id} {currency} {automatic_for}") from None
    book = ledger.account_book(account.id)
    transaction = ledger.post(
        session,
        ledger.posting(
            type="payout",
            source_id=payout.id,
            currency=currency,
            legs=[Leg(book, -amount), Leg(ledger.RAIL_IN_TRANSIT, amount)],
            account_id=account.id,
            amount=-amount,
            net=-amount,
            description=request.description or f"payout {payout.id}",
            now=now,
        ),
    )
    payout.balance_transaction_id = transaction.id
    if fee:
        ledger.post(
            session,
            ledger.posting(
                type="payout_fee",
                source_id=payout.id,
                currency=currency,
                legs=[Leg(book, -fee), Leg(ledger.PLATFORM_FEES, fee)],
                account_id=account.id,
                amount=-fee,
                net=-fee,
                description=f"instant payout fee for {payout.id}",
                now=now,
            ),
        )
    _emit(session, "payout.created", payout, None)
    return payout


def _automatic_exists(session: Session, account_id: str, currency: str, day: str) -> bool:
    found = session.scalars(
        select(Payout.id).where(
            Payout.account_id == account_id,
            Payout.currency == currency,
            Payout.automatic_for == day,
        )
    ).first()
    return found is not None


def create_manual(
    sessions: sessionmaker[Session],
    request: PayoutRequest,
    *,
    terms: PayoutTerms,
    now: datetime | None = None,
) -> Payout:
    """Make a manual (standard or instant) payout in its own transaction."""
    with write_session(sessions) as session:
        payout = create_payout(session, request, terms=terms, now=now)
        session.commit()
        return payout


def create_instant(
    sessions: sessionmaker[Session],
    request: PayoutRequest,
    *,
    terms: PayoutTerms,
    now: datetime | None = None,
) -> Payout:
    """Make an instant payout (``method`` is forced to ``instant``)."""
    instant = PayoutRequest(
        account_id=request.account_id,
        amount=request.amount,
        currency=request.currency,
        destination=request.destination,
        method="instant",
        description=request.description,
        metadata=request.metadata,
    )
    return create_manual(sessions, instant, terms=terms, now=now)


# -- reversals -------------------------------------------------------------------------------


def _lock_payout(session: Session, payout_id: str) -> Payout | None:
    return session.scalars(select(Payout).where(Payout.id == payout_id).with_for_update()).first()


def _reverse(
    session: Session, payout: Payout, *, type: str, from_book: str, now: datetime
) -> LedgerTransaction:
    """Return the payout's amount, and its fee, to the account's balance (available now)."""
    legs = [Leg(ledger.account_book(payout.account_id), payout.amount + payout.fee)]
    legs.append(Leg(from_book, -payout.amount))
    if payout.fee:
        legs.append(Leg(ledger.PLATFORM_FEES, -payout.fee))
    return ledger.post(
        session,
        ledger.posting(
            type=type,
            source_id=payout.id,
            currency=payout.currency,
            legs=legs,
            account_id=payout.account_id,
            # Stripe's sign convention: a refunded fee is a negative fee, net = amount - fee.
            amount=payout.amount,
            fee=-payout.fee,
            net=payout.amount + payout.fee,
            description=f"{type.replace('_', ' ')} of {payout.id}",
            now=now,
        ),
    )


def cancel_payout(session: Session, payout_id: str, *, now: datetime | None = None) -> Payout:
    """Cancel a pending manual payout in the caller's transaction; the caller commits.

    Only a payout the outbox has not handed to its rail yet can be canceled.

    Raises
    ------
    PayoutError
        ``payout_not_cancelable``: it is automatic or no longer pending.
    LookupError
        No such payout.
    """
    now = now or utcnow()
    payout = _lock_payout(session, payout_id)
    if payout is None:
        raise LookupError(payout_id)
    if payout.automatic:
        raise PayoutError("payout_not_cancelable", "automatic payouts cannot be canceled")
    if payout.status != "pending" or payout.rail_state != "to_submit":
        raise PayoutError(
            "payout_not_cancelable",
            f"payout {payout.id} is {payout.status}; only pending payouts can be canceled",
        )
    _reverse(session, payout, type="payout_cancel", from_book=ledger.RAIL_IN_TRANSIT, now=now)
    payout.status = "canceled"
    payout.rail_state = "done"
    payout.updated_at = now
    _emit(session, "payout.canceled", payout, {"status": "pending"})
    return payout


def cancel(
    sessions: sessionmaker[Session], payout_id: str, *, now: datetime | None = None
) -> Payout:
    """Cancel a pending manual payout in its own transaction (see :func:`cancel_payout`)."""
    with write_session(sessions) as session:
        payout = cancel_payout(session, payout_id, now=now)
        session.commit()
        return payout


def _block_destination(session: Session, payout: Payout, code: str, now: datetime) -> None:
    external = session.scalars(
        select(ExternalAccount).where(ExternalAccount.id == payout.destination).with_for_update()
    ).first()
    account = session.get(Account, payout.account_id)
    if external is None or account is None or external.status in BLOCKING:
        return
    set_external_account_status(
        session, account, external, "errored", reason=f"payout {payout.id} failed: {code}", now=now
    )


# -- rail updates ----------------------------------------------------------------------------


def apply_update(session: Session, update: RailUpdate) -> bool:
    """Apply what a rail reports, in the caller's transaction; False if nothing changed.

    Idempotent: a report already applied, or one that would move a payout
    backwards (``paid`` after ``failed``), changes nothing.
    """
    payout = _lock_payout(session, update.payout_id)
    if payout is None:
        log.warning("rail update for unknown payout %s", update.payout_id)
        return False
    previous = payout.status
    status = update.status
    now = update.at
    if status == previous or previous in ("failed", "canceled"):
        return False
    if status == "in_transit":
        if previous != "pending":
            return False
        payout.status = "in_transit"
        payout.updated_at = now
        _emit(session, "payout.updated", payout, {"status": previous})
        return True
    if status == "paid":
        if previous not in ("pending", "in_transit"):
            return False
        ledger.post(
            session,
            ledger.posting(
                type="payout_paid",
                source_id=payout.id,
                currency=payout.currency,
                legs=[
                    Leg(ledger.RAIL_IN_TRANSIT, -payout.amount),
                    Leg(ledger.RAIL_PAID, payout.amount),
                ],
                description=f"payout {payout.id} arrived",
                now=now,
            ),
        )
        payout.status = "paid"
        payout.rail_state = "done"
        payout.updated_at = now
        _emit(session, "payout.paid", payout, {"status": previous})
        return True
    if status == "failed":
        source = ledger.RAIL_PAID if previous == "paid" else ledger.RAIL_IN_TRANSIT
        reversal = _reverse(session, payout, type="payout_failure", from_book=source, now=now)
        code = update.failure_code or "could_not_process"
        payout.status = "failed"
        # The money the bank returned sits with the rail until reclaimed (reclaim_returned).
        payout.rail_state = "to_reclaim"
        payout.failure_code = code
        payout.failure_message = update.failure_message or FAILURE_MESSAGES.get(code, code)
        payout.failure_balance_transaction_id = reversal.id
        payout.updated_at = now
        _block_destination(session, payout, code, now)
        _emit(session, "payout.failed", payout, {"status": previous})
        return True
    if status == "canceled":
        if previous not in ("pending", "in_transit"):
            return False
        _reverse(session, payout, type="payout_cancel", from_book=ledger.RAIL_IN_TRANSIT, now=now)
        payout.status = "canceled"
        payout.rail_state = "done"
        payout.updated_at = now
        _emit(session, "payout.canceled", payout, {"status": previous})
        return True
    return False


# -- the scheduler's steps -------------------------------------------------------------------


@dataclass
class AutomaticResult:
    """What :func:`run_automatic` did: payouts made, and (account, currency, why) skipped."""

    created: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)


def run_automatic(
    sessions: sessionmaker[Session],
    now: datetime | None = None,
    *,
    terms: PayoutTerms | None = None,
) -> AutomaticResult:
    """Pay every account due today (UTC) its available balance, once per currency and day.

    Each account is handled in its own transaction under its row lock, so a
    second scheduler running at once finds the first's payout and skips.
    """
    now = now or utcnow()
    terms = terms or PayoutTerms()
    day = now.astimezone(UTC).date()
    result = AutomaticResult()
    with sessions() as session:
        accounts = session.execute(
            select(
                Account.id,
                Account.payout_interval,
                Account.payout_weekly_anchor,
                Account.payout_monthly_anchor,
            )
            .where(Account.payout_interval != "manual")
            .order_by(Account.id)
        ).all()
    for account_id, interval, weekly, monthly in accounts:
        try:
            schedule = PayoutSchedule(interval, weekly, monthly)
        except ValueError as error:
            log.warning("account %s: %s", account_id, error)
            result.skipped.append((account_id, "", "invalid_schedule"))
            continue
        if not is_due(schedule, day):
            continue
        _pay_account(sessions, account_id, now, day.isoformat(), terms, result)
    return result


def _pay_account(
    sessions: sessionmaker[Session],
    account_id: str,
    now: datetime,
    day: str,
    terms: PayoutTerms,
    result: AutomaticResult,
) -> None:
    with write_session(sessions) as session:
        if ledger.lock_account(session, account_id) is None:
            return
        book = ledger.account_book(account_id)
        for balance in ledger.book_balances(session, book, now):
            if balance.available <= 0:
                continue
            request = PayoutRequest(account_id, balance.available, balance.currency)
            try:
                payout = create_payout(session, request, terms=terms, now=now, automatic_for=day)
            except DuplicateAutomaticPayoutError:
                continue
            except PayoutError as error:
                result.skipped.append((account_id, balance.currency, error.code))
                continue
            result.created.append(payout.id)
        session.commit()


@dataclass
class SubmitResult:
    """Payouts the rail accepted, refused for good (now failed), or could not take yet."""

    submitted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def submit_outbox(
    sessions: sessionmaker[Session], rail: Rail, now: datetime | None = None, *, limit: int = 500
) -> SubmitResult:
    """Hand the rail's outbox payouts to it; mark each ``in_transit`` once the rail has it.

    The rail is called outside any database transaction (it may be slow, or a
    network away); its idempotency by payout id makes a repeat after a crash,
    or by a second process, harmless.
    """
    now = now or utcnow()
    result = SubmitResult()
    with sessions() as session:
        waiting = session.scalars(
            select(Payout.id)
            .where(
                Payout.rail_state == "to_submit",
                Payout.status == "pending",
                Payout.rail == rail.name,
            )
            .order_by(Payout.created_at, Payout.id)
            .limit(limit)
        ).all()
    for payout_id in waiting:
        with sessions() as session:
            payout = session.get(Payout, payout_id)
            if payout is None or payout.rail_state != "to_submit" or payout.status != "pending":
                continue
            destination = session.get(ExternalAccount, payout.destination)
            account = session.get(Account, payout.account_id)
            if destination is None or account is None:
                log.error("payout %s: its destination or account is gone", payout_id)
                result.errors.append(payout_id)
                continue
            request = RailPayout(
                payout_id=payout.id,
                account_id=payout.account_id,
                amount=payout.amount,
                currency=payout.currency,
                method="instant" if payout.method == "instant" else "standard",
                destination_id=destination.id,
                destination_object="card" if destination.object == "card" else "bank_account",
                destination_rail_data=dict(destination.rail_data or {}),
                stripe_account_id=account.stripe_account_id,
                arrival_date=payout.arrival_date,
            )
        try:
            reference = rail.submit(request)
        except RailError as error:
            log.warning("payout %s: rail %s refused it for now: %s", payout_id, rail.name, error)
            result.errors.append(payout_id)
            continue
        except Exception as error:
            # A rail that refuses a payout for good (Stripe's StripeRefusedError) says how
            # it failed as a RailUpdate: the payout fails, and its money comes back.
            refused = getattr(error, "update", None)
            if not isinstance(refused, RailUpdate):
                raise
            with write_session(sessions) as session:
                apply_update(session, refused)
                session.commit()
            result.refused.append(payout_id)
            continue
        undo = False
        with write_session(sessions) as session:
            payout = _lock_payout(session, payout_id)
            if payout is not None and payout.rail_state == "to_submit":
                if payout.status == "pending":
                    payout.rail_state = "submitted"
                    payout.rail_ref = reference
                    payout.status = "in_transit"
                    payout.updated_at = now
                    _emit(session, "payout.updated", payout, {"status": "pending"})
                    result.submitted.append(payout_id)
                else:
                    # Canceled while the rail was being called: take it back from the rail.
                    undo = True
            session.commit()
        if undo and not rail.cancel(payout_id):
            log.error(
                "payout %s was canceled but rail %s had already sent it", payout_id, rail.name
            )
    return result


def reclaim_returned(sessions: sessionmaker[Session], rail: Rail) -> list[str]:
    """Have the rail give back what failed payouts returned to it; return the payouts done.

    An outbox like submission: a failed payout waits in ``to_reclaim`` until the
    rail confirms (idempotently), so a crash or an unreachable rail only delays it.
    """
    with sessions() as session:
        waiting = session.execute(
            select(Payout.id, Account.stripe_account_id)
            .join(Account, Account.id == Payout.account_id)
            .where(Payout.rail == rail.name, Payout.rail_state == "to_reclaim")
            .order_by(Payout.updated_at, Payout.id)
        ).all()
    done: list[str] = []
    for payout_id, stripe_account_id in waiting:
        try:
            rail.reclaim(payout_id, stripe_account_id)
        except RailError as error:
            log.warning(
                "payout %s: rail %s could not reclaim it yet: %s", payout_id, rail.name, error
            )
            continue
        with write_session(sessions) as session:
            payout = _lock_payout(session, payout_id)
            if payout is not None and payout.rail_state == "to_reclaim":
                payout.rail_state = "done"
                done.append(payout_id)
            session.commit()
    return done


@dataclass
class PollResult:
    updates: int = 0
    applied: int = 0


def poll_rail(
    sessions: sessionmaker[Session], rail: Rail, now: datetime | None = None
) -> PollResult:
    """Apply the rail's reported changes, each in its own transaction, then acknowledge it."""
    now = now or utcnow()
    result = PollResult()
    for update in rail.poll(now):
        result.updates += 1
        with write_session(sessions) as session:
            if apply_update(session, update):
                result.applied += 1
            session.commit()
        acknowledge = getattr(rail, "acknowledge", None)
        if acknowledge is not None:
            acknowledge(update)
    return result


# -- reconciliation --------------------------------------------------------------------------


def _transaction_document(transaction: LedgerTransaction) -> dict[str, Any]:
    return {
        "id": transaction.id,
        "object": "balance_transaction",
        "type": transaction.type,
        "source": transaction.source_id,
        "amount": transaction.amount,
        "fee": transaction.fee,
        "net": transaction.net,
        "currency": transaction.currency,
        "available_on": iso_utc(transaction.available_on),
        "created": iso_utc(transaction.created_at),
        "description": transaction.description,
    }


def reconciliation(session: Session, payout: Payout) -> dict[str, Any]:
    """The payout's own balance transactions and, for an automatic one, what it settled.

    An automatic payout pays out the whole available balance, so it settles
    the account's other balance transactions in its currency that became
    available after the previous automatic payout was made (paid or still
    going) and by the time it was made. ``payout_paid`` has no account and is
    listed with the payout's own transactions.
    """
    own = sorted(
        session.scalars(
            select(LedgerTransaction).where(
                LedgerTransaction.source_id == payout.id,
                LedgerTransaction.type.in_(PAYOUT_TYPES),
            )
        ).all(),
        # Posted in one instant, a payout and its fee still read in lifecycle order.
        key=lambda t: (t.created_at, PAYOUT_TYPES.index(t.type), t.id),
    )
    settled: list[LedgerTransaction] = []
    if payout.automatic:
        previous = session.scalars(
            select(Payout.created_at)
            .where(
                Payout.account_id == payout.account_id,
                Payout.currency == payout.currency,
                Payout.automatic.is_(True),
                Payout.created_at < payout.created_at,
                Payout.status.not_in(("failed", "canceled")),
            )
            .order_by(Payout.created_at.desc())
        ).first()
        query = select(LedgerTransaction).where(
            LedgerTransaction.account_id == payout.account_id,
            LedgerTransaction.currency == payout.currency,
            LedgerTransaction.type.not_in(PAYOUT_TYPES),
            LedgerTransaction.available_on <= payout.created_at,
        )
        if previous is not None:
            query = query.where(LedgerTransaction.available_on > previous)
        settled = list(
            session.scalars(
                query.order_by(LedgerTransaction.available_on, LedgerTransaction.id)
            ).all()
        )
    net_own = sum(t.net for t in own if t.account_id == payout.account_id)
    return {
        "object": "payout_reconciliation",
        "payout": payout.id,
        "account": payout.account_id,
        "currency": payout.currency,
        "status": payout.status,
        "amount": payout.amount,
        "fee": payout.fee,
        "balance_transactions": [_transaction_document(t) for t in own],
        "settled_transactions": [_transaction_document(t) for t in settled],
        "totals": {
            "payout_net": net_own,
            "settled_net": sum(t.net for t in settled),
        },
    }
