"""The built-in simulated bank rail: payouts move through their lifecycle on a clock you control.

Nothing leaves the machine. A submitted payout becomes a
:class:`~acr.db.models.SimulatedTransfer` row (so the rail's state survives
restarts and is shared by every process on the database) whose whole course is
decided at submission from the destination's test behaviour
(:func:`behaviour_for`, stored in ``ExternalAccount.rail_data`` when the bank
account or card is added):

* it arrives at the payout's ``arrival_date``: ``paid``, or ``failed`` with the
  behaviour's ``failure_code``;
* a behaviour with ``fail_after_paid_s`` fails that long after it was paid
  (a returned payout: Stripe's "a paid payout may still fail").

:meth:`SimulatedRail.poll` takes the time as an argument (the tests' clock) and
reports the steps reached by then that the payouts module has not yet
acknowledged (:meth:`SimulatedRail.acknowledge`); a step applied but not
acknowledged (a crash in between) is reported again, which is harmless because
:func:`acr.payouts.payouts.apply_update` is idempotent.

Test numbers (Stripe's where Stripe has one):

==================  ======================================================
bank account        behaviour
==================  ======================================================
``000123456789``    paid (any number not listed here is paid too)
``000111111116``    no_account
``000111111113``    account_closed
``000222222227``    insufficient_funds
``000333333335``    debit_not_authorized
``000444444440``    invalid_currency
``000555555559``    paid, then fails with could_not_process a day later
``000666666664``    account_frozen
``000777777772``    bank_account_restricted
``000888888880``    bank_ownership_changed
``000999999998``    could_not_process
``000000000010``    incorrect_account_holder_name
``000000000028``    incorrect_account_holder_address
``000000000036``    incorrect_account_holder_tax_id
``000000000044``    invalid_account_number
==================  ======================================================

==================  ======================================================
debit card          behaviour
==================  ======================================================
``4000056655665556``  instant-eligible debit card, paid
``4000000000000002``  instant-eligible debit card, declined
``4000000000000077``  debit card, standard only (not instant-eligible), paid
``4242424242424242``  unsupported_card (a credit card: payouts fail)
==================  ======================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from acr.db.models import SimulatedTransfer, utcnow
from acr.db.session import write_session
from acr.payouts.rails.base import RailError, RailPayout, RailStatus, RailUpdate

log = logging.getLogger("acr.payouts.simulated")

NAME = "simulated"

FAILURE_MESSAGES: dict[str, str] = {
    "account_closed": "The bank account has been closed.",
    "account_frozen": "The bank account has been frozen.",
    "bank_account_restricted": (
        "The bank account has restrictions on either the type, or the number, of payouts "
        "allowed. This normally indicates that the bank account is a savings or other "
        "non-checking account."
    ),
    "bank_ownership_changed": (
        "The destination bank account is no longer valid because its branch has changed ownership."
    ),
    "could_not_process": "The bank could not process this payout.",
    "debit_not_authorized": "Debit transactions are not approved on the bank account.",
    "declined": "The bank has declined this transfer. Please contact the bank before retrying.",
    "insufficient_funds": "The platform's account has insufficient funds to cover the payout.",
    "invalid_account_number": (
        "The routing number seems correct, but the account number is invalid."
    ),
    "incorrect_account_holder_name": (
        "Your bank notified us that the bank account holder name on file is incorrect."
    ),
    "incorrect_account_holder_address": (
        "Your bank notified us that the bank account holder address on file is incorrect."
    ),
    "incorrect_account_holder_tax_id": (
        "Your bank notified us that the bank account holder tax ID on file is incorrect."
    ),
    "invalid_currency": (
        "The bank was unable to process this payout because of its currency. This is probably "
        "because the bank account cannot accept payments in that currency."
    ),
    "no_account": (
        "The bank account details on file are probably incorrect. No bank account could be "
        "located with those details."
    ),
    "unsupported_card": "The bank no longer supports payouts to this card.",
}
"""Stripe's payout failure codes and their explanations."""

FAIL_LATER_S = 86_400
"""How long after it was paid a returned payout fails (``000555555559``)."""

_BANK_FAILURES = {
    "000111111116": "no_account",
    "000111111113": "account_closed",
    "000222222227": "insufficient_funds",
    "000333333335": "debit_not_authorized",
    "000444444440": "invalid_currency",
    "000666666664": "account_frozen",
    "000777777772": "bank_account_restricted",
    "000888888880": "bank_ownership_changed",
    "000999999998": "could_not_process",
    "000000000010": "incorrect_account_holder_name",
    "000000000028": "incorrect_account_holder_address",
    "000000000036": "incorrect_account_holder_tax_id",
    "000000000044": "invalid_account_number",
}
_PAID_THEN_FAILS = {"000555555559": "could_not_process"}
_CARDS: dict[str, tuple[bool, str | None]] = {
    # number: (instant-eligible, failure code)
    "4000056655665556": (True, None),
    "4000000000000002": (True, "declined"),
    "4000000000000077": (False, None),
    "4242424242424242": (False, "unsupported_card"),
}
TEST_BANK_ACCOUNTS: dict[str, str | None] = {
    "000123456789": None,
    **_BANK_FAILURES,
}
"""Bank account test numbers and the failure code each gives (None: paid)."""
TEST_CARDS = dict(_CARDS)
"""Card test numbers: (instant-eligible, failure code or None)."""


def behaviour_for(number: str) -> dict[str, Any]:
    """How the simulated bank treats payouts to this account or card number.

    The result is stored as the external account's ``rail_data`` and read back
    by :meth:`SimulatedRail.submit`. Keys:

    ``rail``
        ``"simulated"``.
    ``failure_code``
        The code a payout fails with on arrival, or None (it is paid).
    ``fail_after_paid_s`` and ``fail_after_paid_code``
        A paid payout that fails that many seconds later with that code (or None).
    ``instant_eligible``
        For cards: whether instant payouts may go to it (``available_payout_methods``
        gets ``"instant"``). Every 16-digit number not listed is an eligible debit card.

    Parameters
    ----------
    number : str
        The full bank account or card number (spaces and dashes ignored).
    """
    digits = "".join(ch for ch in number if ch.isalnum())
    behaviour: dict[str, Any] = {
        "rail": NAME,
        "failure_code": None,
        "fail_after_paid_s": None,
        "fail_after_paid_code": None,
        "instant_eligible": False,
    }
    if digits in _CARDS:
        eligible, code = _CARDS[digits]
        behaviour.update(instant_eligible=eligible, failure_code=code)
    elif len(digits) == 16 and digits.isdigit():
        behaviour["instant_eligible"] = True
    elif digits in _BANK_FAILURES:
        behaviour["failure_code"] = _BANK_FAILURES[digits]
    elif digits in _PAID_THEN_FAILS:
        behaviour.update(
            fail_after_paid_s=FAIL_LATER_S, fail_after_paid_code=_PAID_THEN_FAILS[digits]
        )
    return behaviour


@dataclass(frozen=True)
class _Step:
    status: RailStatus
    at: datetime
    failure_code: str | None = None


def _steps(transfer: SimulatedTransfer) -> list[_Step]:
    """The transfer's course after submission, in order (its first state, in_transit, excluded)."""
    if transfer.canceled_at is not None:
        return [_Step("canceled", transfer.canceled_at)]
    if transfer.outcome != "paid":
        return [_Step("failed", transfer.arrival_at, transfer.outcome)]
    steps = [_Step("paid", transfer.arrival_at)]
    if transfer.fail_later_code is not None and transfer.fail_later_at is not None:
        steps.append(_Step("failed", transfer.fail_later_at, transfer.fail_later_code))
    return steps


def _update(payout_id: str, step: _Step) -> RailUpdate:
    return RailUpdate(
        payout_id=payout_id,
        status=step.status,
        at=step.at,
        failure_code=step.failure_code,
        failure_message=FAILURE_MESSAGES.get(step.failure_code) if step.failure_code else None,
    )


class SimulatedRail:
    """A bank that is paid, or fails, on the schedule its test numbers say.

    Parameters
    ----------
    sessions : sessionmaker
        The service's database, where the rail keeps its transfers.
    standard_delay : timedelta
        Arrival after submission when a payout gives no ``arrival_date``.
    """

    name = NAME

    def __init__(
        self, sessions: sessionmaker[Session], standard_delay: timedelta = timedelta(days=2)
    ) -> None:
        self._sessions = sessions
        self._standard_delay = standard_delay

    def submit(self, payout: RailPayout) -> str:
        """Accept ``payout``; submitting the same payout again returns the first's reference."""
        data = payout.destination_rail_data or {}
        submitted_at = utcnow()
        arrival_at = payout.arrival_date or submitted_at + self._standard_delay
        code = data.get("failure_code")
        later_s = data.get("fail_after_paid_s")
        transfer = SimulatedTransfer(
            payout_id=payout.payout_id,
            reference=f"sim_{payout.payout_id}",
            account_id=payout.account_id,
            destination_id=payout.destination_id,
            amount=payout.amount,
            currency=payout.currency,
            method=payout.method,
            submitted_at=submitted_at,
            arrival_at=arrival_at,
            outcome=str(code) if code else "paid",
            fail_later_code=data.get("fail_after_paid_code") if later_s else None,
            fail_later_at=arrival_at + timedelta(seconds=float(later_s)) if later_s else None,
        )
        try:
            # Read then write: take SQLite's write lock up front (see write_session).
            with write_session(self._sessions) as session:
                existing = session.get(SimulatedTransfer, payout.payout_id)
                if existing is not None:
                    return existing.reference
                session.add(transfer)
                try:
                    session.commit()
                except IntegrityError:
                    # Submitted by another process at the same moment: that one stands.
                    session.rollback()
                    found = session.get(SimulatedTransfer, payout.payout_id)
                    if found is None:
                        raise
                    return found.reference
        except IntegrityError as error:
            raise RailError(f"could not record payout {payout.payout_id}: {error}") from error
        return transfer.reference

    def cancel(self, payout_id: str) -> bool:
        """Stop a transfer whose outcome has not been reported yet."""
        with write_session(self._sessions) as session:
            transfer = session.get(SimulatedTransfer, payout_id, with_for_update=True)
            if transfer is None:
                return True  # never sent: nothing to stop
            if transfer.canceled_at is not None:
                return True
            if transfer.acknowledged > 0 or transfer.finished:
                return False
            transfer.canceled_at = utcnow()
            session.commit()
            return True

    def reclaim(self, payout_id: str, stripe_account_id: str | None) -> None:
        """Nothing to bring back: the simulated bank keeps no balance of its own."""

    def poll(self, now: datetime) -> list[RailUpdate]:
        """The steps reached by ``now`` and not yet acknowledged, oldest first per payout."""
        updates: list[RailUpdate] = []
        with self._sessions() as session:
            transfers = session.scalars(
                select(SimulatedTransfer)
                .where(SimulatedTransfer.finished.is_(False))
                .order_by(SimulatedTransfer.arrival_at, SimulatedTransfer.payout_id)
            ).all()
            for transfer in transfers:
                for step in _steps(transfer)[transfer.acknowledged :]:
                    # A cancellation is reported at once, whatever the caller's clock says.
                    if step.at > now and step.status != "canceled":
                        break
                    updates.append(_update(transfer.payout_id, step))
        return updates

    def acknowledge(self, update: RailUpdate) -> None:
        """Record that ``update`` was applied, so that polls stop reporting it."""
        with write_session(self._sessions) as session:
            transfer = session.get(SimulatedTransfer, update.payout_id, with_for_update=True)
            if transfer is None:
                return
            steps = _steps(transfer)
            for index, step in enumerate(steps):
                if step.status == update.status:
                    transfer.acknowledged = max(transfer.acknowledged, index + 1)
                    break
            transfer.finished = transfer.acknowledged >= len(steps)
            session.commit()

    def transfer(self, payout_id: str) -> SimulatedTransfer | None:
        """The rail's record of a payout (for tests and support)."""
        with self._sessions() as session:
            return session.get(SimulatedTransfer, payout_id)
