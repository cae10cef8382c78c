"""The Stripe rail: payouts through Stripe Connect, with stripe-python's :class:`StripeClient`.

A payout of a connected account is two calls to Stripe:

1. a *transfer* of the amount from the platform's balance to the connected
   account (``POST /v1/transfers``, ``destination=acct_…``,
   ``transfer_group=<payout id>``, idempotency key ``transfer-<payout id>``);
2. a *payout* on the connected account to its bank account or card
   (``POST /v1/payouts`` with the ``Stripe-Account`` header, ``metadata[acr_payout]``
   = our payout id, idempotency key ``payout-<payout id>``).

Both keys derive from our payout id, so the outbox may submit the same payout
again after a crash or a timeout and Stripe replays its first answers instead of
paying twice. Stripe keeps idempotency keys for 24 hours: a payout left
unsubmitted for longer must be checked by hand before it is submitted again.

What happens next (paid, failed, canceled) Stripe tells us by webhook
(:mod:`acr.payouts.stripe_webhooks`); :meth:`StripeRail.poll` only reports the
payouts Stripe refused outright (below).

Errors
------
Stripe's errors fall in two kinds:

* *retryable* — the network failed or timed out, Stripe answered 5xx, 409 or 429,
  or our key was refused (401/403: a configuration problem of ours, not of the
  payout): :class:`~acr.payouts.rails.base.RailError`; nothing is known to have
  been sent, and resubmitting the same payout is safe.
* *refused* — Stripe declined the request itself (400/402/404: an unknown or
  closed destination, an unsupported method, insufficient balance…):
  :class:`StripeRefusedError`, a ``RailError`` whose ``update`` is the failed
  :class:`~acr.payouts.rails.base.RailUpdate`, with Stripe's error code as
  ``failure_code`` (``resource_missing``, ``balance_insufficient``…). The same
  update is also reported by the next :meth:`StripeRail.poll` until acknowledged,
  so an outbox that only knows ``RailError`` still fails the payout (and reverses
  its ledger postings) through ``poll_rail``; were that report lost in a crash,
  the payout is still in the outbox, is submitted again, and Stripe replays the
  same refusal. A transfer already made for a refused payout is reversed, so
  that the platform's Stripe balance agrees with our ledger, where a failed
  payout's amount returns to the account's balance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import stripe
from stripe.params import AccountUpdateParamsSettingsPayoutsSchedule

from acr.payouts.rails.base import RailError, RailPayout, RailUpdate

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from acr.settings import Settings

log = logging.getLogger("acr.payouts.stripe")

METADATA_KEY = "acr_payout"
"""The payout's ``metadata`` key holding our payout id; webhooks find our payout by it."""

Interval = Literal["daily", "weekly", "monthly", "manual"]


@dataclass(frozen=True)
class StripePayoutRef:
    """Where a payout of ours is at Stripe: its ``po_…`` id on a connected account."""

    payout: str
    account: str


Locator = Callable[[str], StripePayoutRef | None]
"""Our payout id to its place at Stripe (None: never created there)."""


class StripeRefusedError(RailError):
    """Stripe refused the payout; apply ``update`` (a failed :class:`RailUpdate`).

    Submitting it again is safe but gets the same refusal (Stripe replays it for
    24 hours under the same idempotency keys).

    Attributes
    ----------
    update : RailUpdate
        ``status="failed"``, ``failure_code`` Stripe's error code (``resource_missing``,
        ``balance_insufficient``, ``payouts_not_allowed``…), ``failure_message`` its message.
    http_status : int or None
        Stripe's HTTP status (400, 402, 404).
    """

    def __init__(self, update: RailUpdate, http_status: int | None) -> None:
        super().__init__(f"Stripe refused payout {update.payout_id}: {update.failure_message}")
        self.update = update
        self.http_status = http_status

    @property
    def failure_code(self) -> str | None:
        return self.update.failure_code


def _retryable(error: stripe.StripeError) -> bool:
    if isinstance(
        error,
        stripe.APIConnectionError
        | stripe.APIError
        | stripe.RateLimitError
        | stripe.AuthenticationError
        | stripe.PermissionError,
    ):
        return True
    # A concurrent request with the same idempotency key (409), or any 5xx Stripe sent
    # with an unusual error type: the outcome is unknown, so the same request is retried.
    return error.http_status is not None and (error.http_status >= 500 or error.http_status == 409)


def _failure_code(error: stripe.StripeError) -> str:
    return error.code or (error.error.type if error.error and error.error.type else "") or "refused"


class StripeRail:
    """Payouts through Stripe Connect (see the module's description).

    Parameters
    ----------
    api_key : str
        The platform's secret key (``sk_…``).
    api_base : str, optional
        Another API address, e.g. a local test server; Stripe's own by default.
    locate : callable, optional
        Finds a submitted payout at Stripe by our payout id (for :meth:`cancel` after
        a restart); :func:`database_locator` reads it from our database. Payouts
        submitted by this object are remembered anyway.
    timeout : float
        Seconds to wait for Stripe per request; a timeout is a retryable :class:`RailError`.
    max_network_retries : int
        stripe-python's own retries (same idempotency key) before giving up; the
        outbox retries later anyway.
    transfer : bool
        Transfer each payout's amount to the connected account before paying it out
        (the platform holds the funds); False when connected accounts are funded otherwise.
    """

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        *,
        locate: Locator | None = None,
        timeout: float = 30.0,
        max_network_retries: int = 0,
        transfer: bool = True,
    ) -> None:
        if not api_key:
            raise ValueError("the Stripe rail needs an API key (STRIPE_API_KEY)")
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=stripe.RequestsClient(timeout=timeout),
        )
        self._locate = locate
        self._transfer = transfer
        self._submitted: dict[str, StripePayoutRef] = {}
        self._refusals: dict[str, RailUpdate] = {}

    # -- the Rail protocol ------------------------------------------------------------------

    def submit(self, payout: RailPayout) -> str:
        """Transfer, then pay out; return Stripe's payout id (``po_…``).

        Raises
        ------
        RailError
            Retry later with the same payout (see the module's description).
        StripeRefusedError
            Stripe refused it; apply the error's ``update``.
        """
        account = payout.stripe_account_id
        if not account:
            refused = self._refused(
                payout.payout_id, "no_stripe_account", "the account has no Stripe account", None
            )
            self._refusals[payout.payout_id] = refused.update
            raise refused
        transfer_id: str | None = None
        try:
            if self._transfer:
                transfer = self._client.v1.transfers.create(
                    {
                        "amount": payout.amount,
                        "currency": payout.currency,
                        "destination": account,
                        "transfer_group": payout.payout_id,
                        "metadata": {METADATA_KEY: payout.payout_id},
                    },
                    {"idempotency_key": f"transfer-{payout.payout_id}"},
                )
                transfer_id = transfer.id
            created = self._client.v1.payouts.create(
                {
                    "amount": payout.amount,
                    "currency": payout.currency,
                    "method": payout.method,
                    "destination": stripe_destination(payout),
                    "metadata": {METADATA_KEY: payout.payout_id},
                },
                {"stripe_account": account, "idempotency_key": f"payout-{payout.payout_id}"},
            )
        except stripe.StripeError as error:
            if _retryable(error):
                raise RailError(f"Stripe: {error.user_message or error}") from error
            if transfer_id is not None:
                try:
                    self._reverse(transfer_id, payout.payout_id)
                except RailError as reversal_error:
                    # The refusal stands; the failed payout's reclaim step retries this.
                    log.warning("%s", reversal_error)
            refused = self._refused(
                payout.payout_id,
                _failure_code(error),
                error.user_message or str(error),
                error.http_status,
            )
            self._refusals[payout.payout_id] = refused.update
            raise refused from error
        self._refusals.pop(payout.payout_id, None)
        self._submitted[payout.payout_id] = StripePayoutRef(created.id, account)
        return created.id

    def cancel(self, payout_id: str) -> bool:
        """Cancel the payout at Stripe (only a ``pending`` one can be); False if too late.

        A payout Stripe never saw is trivially stopped (True). A canceled payout's
        transfer is reversed, as for a refused one.
        """
        ref = self._find(payout_id)
        if ref is None:
            return True
        try:
            canceled = self._client.v1.payouts.cancel(
                ref.payout,
                options={
                    "stripe_account": ref.account,
                    "idempotency_key": f"payout-cancel-{payout_id}",
                },
            )
        except stripe.StripeError as error:
            if _retryable(error):
                raise RailError(f"Stripe: {error.user_message or error}") from error
            log.info("Stripe would not cancel payout %s: %s", payout_id, error.user_message)
            return False
        if canceled.status != "canceled":
            return False
        if self._transfer:
            try:
                self.reverse_transfer(payout_id, ref.account)
            except RailError as error:
                # The payout is canceled all the same; the funds wait in the connected
                # account until the transfer is reversed by hand (or by a repeated cancel).
                log.error("payout %s canceled, its transfer not reversed: %s", payout_id, error)
        return True

    def poll(self, now: datetime) -> list[RailUpdate]:
        """The refusals not yet acknowledged; Stripe pushes all else by webhook."""
        return list(self._refusals.values())

    def acknowledge(self, update: RailUpdate) -> None:
        """``update`` (from :meth:`poll`) is applied: stop reporting it."""
        if self._refusals.get(update.payout_id) == update:
            del self._refusals[update.payout_id]

    # -- beyond the protocol ----------------------------------------------------------------

    def retrieve(self, payout_id: str) -> stripe.Payout | None:
        """Stripe's payout object of our payout (None if never submitted)."""
        ref = self._find(payout_id)
        if ref is None:
            return None
        try:
            return self._client.v1.payouts.retrieve(
                ref.payout, options={"stripe_account": ref.account}
            )
        except stripe.StripeError as error:
            raise RailError(f"Stripe: {error.user_message or error}") from error

    def _find(self, payout_id: str) -> StripePayoutRef | None:
        """Where Stripe holds our payout: remembered, or looked up after a restart."""
        return self._submitted.get(payout_id) or (self._locate(payout_id) if self._locate else None)

    def reverse_transfer(self, payout_id: str, account: str) -> None:
        """Take back the transfer made for a payout that failed or was canceled.

        Called for refusals and cancellations here, and by :meth:`reclaim` for a
        payout that failed after it was sent.
        """
        try:
            transfers = self._client.v1.transfers.list(
                {"transfer_group": payout_id, "destination": account, "limit": 1}
            )
        except stripe.StripeError as error:
            raise RailError(f"Stripe: {error.user_message or error}") from error
        for transfer in transfers.data:
            self._reverse(transfer.id, payout_id)

    def update_schedule(
        self,
        account: str,
        interval: Interval,
        delay_days: int | None = None,
        weekly_anchor: str | None = None,
        monthly_anchor: int | None = None,
    ) -> stripe.Account:
        """Set a connected account's automatic payout schedule at Stripe.

        Parameters
        ----------
        account : str
            The connected account (``acct_…``).
        interval : {"daily", "weekly", "monthly", "manual"}
        delay_days : int, optional
            Days before a charge's funds are paid out (daily interval only).
        weekly_anchor : str, optional
            ``monday``..``sunday``, for a weekly interval.
        monthly_anchor : int, optional
            1..31, for a monthly interval.

        Raises
        ------
        RailError
            Stripe could not be reached (retry), or refused the schedule.
        """
        schedule: AccountUpdateParamsSettingsPayoutsSchedule = {"interval": interval}
        if delay_days is not None:
            schedule["delay_days"] = delay_days
        if weekly_anchor is not None:
            schedule["weekly_anchor"] = weekly_anchor
        if monthly_anchor is not None:
            schedule["monthly_anchor"] = monthly_anchor
        try:
            return self._client.v1.accounts.update(
                account,
                {"settings": {"payouts": {"schedule": schedule}}},
            )
        except stripe.StripeError as error:
            raise RailError(f"Stripe: {error.user_message or error}") from error

    # -- helpers -----------------------------------------------------------------------------

    def reclaim(self, payout_id: str, stripe_account_id: str | None) -> None:
        """Reverse the payout's transfer: the bank returned the money to the connected
        account's Stripe balance, and our ledger has credited the account already."""
        if not self._transfer:
            return
        account = stripe_account_id or (ref.account if (ref := self._find(payout_id)) else None)
        if account is None:
            raise RailError(f"payout {payout_id}: no Stripe account to reclaim from")
        self.reverse_transfer(payout_id, account)

    def _reverse(self, transfer_id: str, payout_id: str) -> None:
        try:
            self._client.v1.transfers.reversals.create(
                transfer_id,
                {"metadata": {METADATA_KEY: payout_id}},
                # One key per payout: a retry, or a second reason to reverse, replays the first.
                {"idempotency_key": f"transfer-reversal-{payout_id}"},
            )
        except stripe.StripeError as error:
            raise RailError(
                f"could not reverse transfer {transfer_id} of payout {payout_id}: {error}"
            ) from error

    @staticmethod
    def _refused(
        payout_id: str, code: str, message: str, http_status: int | None
    ) -> StripeRefusedError:
        update = RailUpdate(
            payout_id=payout_id,
            status="failed",
            at=datetime.now(UTC),
            failure_code=code,
            failure_message=message[:500],
        )
        return StripeRefusedError(update, http_status)


def stripe_destination(payout: RailPayout) -> str:
    """The bank account or card at Stripe: ``rail_data["stripe_id"]``, else our own id.

    External accounts created through Stripe keep Stripe's id as ours (``ba_…``,
    ``card_…``); others record Stripe's id in ``ExternalAccount.rail_data``.
    """
    stripe_id = payout.destination_rail_data.get("stripe_id")
    return str(stripe_id) if stripe_id else payout.destination_id


def database_locator(sessions: sessionmaker[Session]) -> Locator:
    """A :data:`Locator` reading ``Payout.rail_ref`` and ``Account.stripe_account_id``."""
    from sqlalchemy import select

    from acr.db.models import Account, Payout

    def locate(payout_id: str) -> StripePayoutRef | None:
        with sessions() as session:
            row = session.execute(
                select(Payout.rail_ref, Account.stripe_account_id)
                .join(Account, Account.id == Payout.account_id)
                .where(Payout.id == payout_id, Payout.rail == StripeRail.name)
            ).first()
        if row is None or not row[0] or not row[1]:
            return None
        return StripePayoutRef(payout=row[0], account=row[1])

    return locate


def stripe_rail_from(settings: Settings, sessions: sessionmaker[Session]) -> StripeRail:
    """The Stripe rail as configured (``STRIPE_API_KEY``, ``STRIPE_API_BASE``)."""
    return StripeRail(
        settings.stripe_api_key,
        settings.stripe_api_base or None,
        locate=database_locator(sessions),
        max_network_retries=2,
    )
