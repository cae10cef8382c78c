"""One pass of the payouts machinery: accrue revenue, pay who is due, submit, follow the rails.

:func:`run_once` is what ``acr payouts run`` (cron) and the ``payouts``
background task of ``acr serve`` (:func:`payouts_task`) call. Every step is
safe to run in several processes at once: automatic payouts are made once per
account, currency and day; the outbox submits idempotently; rail updates apply
idempotently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from acr.db.models import utcnow
from acr.db.session import make_engine, session_factory
from acr.payouts import revenue
from acr.payouts.payouts import (
    payout_terms,
    poll_rail,
    reclaim_returned,
    run_automatic,
    submit_outbox,
)
from acr.payouts.rails.base import Rail
from acr.payouts.rails.simulated import SimulatedRail
from acr.payouts.rails.stripe_rail import stripe_rail_from
from acr.periodic import PeriodicTask
from acr.settings import Settings

log = logging.getLogger("acr.payouts.scheduler")


class HasSessions(Protocol):
    """What :func:`run_once` needs of the service's :class:`~api.services.Services`."""

    settings: Settings
    sessions: sessionmaker[Session]


@dataclass
class RunSummary:
    """What one pass did."""

    at: datetime
    accrued: bool = False
    """The revenue accrual found a full batch: more engagements may be waiting."""
    created: list[str] = field(default_factory=list)
    """Automatic payouts made."""
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    """(account, currency, reason) of automatic payouts not made: blocked, no destination…"""
    submitted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    submit_errors: list[str] = field(default_factory=list)
    """Payouts a rail could not take this time (retried next pass)."""
    updates: int = 0
    applied: int = 0
    reclaimed: list[str] = field(default_factory=list)
    """Failed payouts whose returned money the rail gave back to the platform."""

    @property
    def busy(self) -> bool:
        """Something moved: the next pass may find more to do at once."""
        return self.accrued or bool(self.created or self.submitted or self.refused or self.applied)

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["at"] = self.at.isoformat()
        document["skipped"] = [list(item) for item in self.skipped]
        return document


def rails_for(settings: Settings, sessions: sessionmaker[Session]) -> list[Rail]:
    """The rails a pass serves: the built-in simulated bank, and Stripe when configured.

    The simulated rail stays on with Stripe so that payouts made before the
    switch still finish.
    """
    rails: list[Rail] = [SimulatedRail(sessions)]
    if settings.payout_rail == "stripe":
        rails.append(stripe_rail_from(settings, sessions))
    return rails


def run_pass(
    sessions: sessionmaker[Session],
    settings: Settings,
    now: datetime | None = None,
    *,
    rails: Sequence[Rail] | None = None,
    accrue: bool = True,
) -> RunSummary:
    """Accrue, make due automatic payouts, submit the outbox, apply the rails' updates."""
    now = now or utcnow()
    summary = RunSummary(at=now)
    if accrue:
        summary.accrued = revenue.tick(sessions, now)
    automatic = run_automatic(sessions, now, terms=payout_terms(settings))
    summary.created, summary.skipped = automatic.created, automatic.skipped
    for rail in rails if rails is not None else rails_for(settings, sessions):
        submitted = submit_outbox(sessions, rail, now)
        summary.submitted += submitted.submitted
        summary.refused += submitted.refused
        summary.submit_errors += submitted.errors
        polled = poll_rail(sessions, rail, now)
        summary.updates += polled.updates
        summary.applied += polled.applied
        summary.reclaimed += reclaim_returned(sessions, rail)
    return summary


def run_once(
    target: Settings | HasSessions,
    now: datetime | None = None,
    *,
    rails: Sequence[Rail] | None = None,
) -> RunSummary:
    """One pass, on the service's sessions or on a database opened from ``Settings``.

    Parameters
    ----------
    target : Settings or Services
        With ``Settings``, an engine is made for the pass and disposed after it.
    now : datetime, optional
        The clock (tests move it); the current time by default.
    rails : sequence of Rail, optional
        The built-in simulated rail by default.
    """
    if isinstance(target, Settings):
        engine = make_engine(target.database_url)
        try:
            return run_pass(session_factory(engine), target, now, rails=rails)
        finally:
            engine.dispose()
    return run_pass(target.sessions, target.settings, now, rails=rails)


def payouts_task(
    services: HasSessions,
    *,
    interval_s: float | None = None,
    rails: Sequence[Rail] | None = None,
) -> PeriodicTask:
    """The ``payouts`` background task of ``acr serve`` (not started: call ``.start()``).

    It runs :func:`run_once` every ``interval_s`` (the settings'
    ``scheduler_interval_s`` by default), again at once while passes find work.
    """
    chosen = list(rails) if rails is not None else rails_for(services.settings, services.sessions)

    def tick() -> bool:
        summary = run_pass(services.sessions, services.settings, rails=chosen)
        if summary.busy or summary.submit_errors or summary.skipped:
            log.info("payouts pass: %s", summary.as_dict())
        return summary.busy

    return PeriodicTask(
        "payouts",
        tick,
        interval_s if interval_s is not None else services.settings.scheduler_interval_s,
    )
