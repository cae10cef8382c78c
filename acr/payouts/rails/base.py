"""The one interface every payout rail implements (the simulated bank, Stripe).

The payouts module owns the lifecycle and the ledger; a rail only moves money
and reports what happened to it. Submission is idempotent by payout id, so the
outbox may submit a payout again after a crash without paying twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

RailStatus = Literal["in_transit", "paid", "failed", "canceled"]


@dataclass(frozen=True)
class RailPayout:
    """What a rail is asked to send."""

    payout_id: str
    account_id: str
    amount: int
    currency: str
    method: Literal["standard", "instant"]
    destination_id: str
    destination_object: Literal["bank_account", "card"]
    destination_rail_data: dict[str, Any] = field(default_factory=dict)
    stripe_account_id: str | None = None
    arrival_date: datetime | None = None


@dataclass(frozen=True)
class RailUpdate:
    """A change the rail reports for a payout (``failure_code`` in Stripe's words)."""

    payout_id: str
    status: RailStatus
    at: datetime
    failure_code: str | None = None
    failure_message: str | None = None


class RailError(Exception):
    """The rail could not be reached or refused the request; the outbox retries later."""


class Rail(Protocol):
    """A way to send payouts."""

    name: str

    def submit(self, payout: RailPayout) -> str:
        """Send ``payout`` (again: idempotent by ``payout_id``); return the rail's reference.

        Raises
        ------
        RailError
            Nothing was sent, or it is unknown whether it was; retry with the same payout.
        """
        ...

    def cancel(self, payout_id: str) -> bool:
        """Stop a payout the rail has not sent yet; False if it is too late."""
        ...

    def reclaim(self, payout_id: str, stripe_account_id: str | None) -> None:
        """Bring back to the platform what a failed payout returned to the rail.

        A bank that returns a payout gives the money back where the rail keeps it
        (at Stripe, the connected account's balance); our ledger has already
        credited the account, so the rail must not keep a second copy. Idempotent.

        Raises
        ------
        RailError
            Not done yet; the next pass retries.
        """
        ...

    def poll(self, now: datetime) -> list[RailUpdate]:
        """Changes since the last poll (rails that push changes, like Stripe's webhooks,
        return none here and report through :func:`acr.payouts.payouts.apply_update`)."""
        ...
