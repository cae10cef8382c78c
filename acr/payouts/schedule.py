"""When automatic payouts happen and when payouts arrive: pure functions of dates.

A schedule is Stripe's ``settings.payouts.schedule``:

``daily``
    Every day (rolling: whatever became available is paid out).
``weekly``
    On ``weekly_anchor`` (``monday`` … ``sunday``).
``monthly``
    On ``monthly_anchor`` (1 … 31); a month without that day (a 31 in April, a
    29–31 in February) pays on its last day.
``manual``
    Never automatically.

Days are UTC calendar days: the scheduler runs in UTC, so "today" is the same
for every process. Arrival (``arrival_date``):

* standard payouts arrive :data:`STANDARD_BUSINESS_DAYS` business days
  (Monday–Friday; bank holidays are not modelled) after they are created, at the
  same time of day; one created on a weekend counts from the next Monday.
* instant payouts arrive :data:`INSTANT_DELAY` after they are created.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

Interval = Literal["daily", "weekly", "monthly", "manual"]
Method = Literal["standard", "instant"]

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
INTERVALS: tuple[Interval, ...] = ("daily", "weekly", "monthly", "manual")
STANDARD_BUSINESS_DAYS = 2
INSTANT_DELAY = timedelta(minutes=30)


@dataclass(frozen=True)
class PayoutSchedule:
    """An account's automatic payout schedule.

    Raises
    ------
    ValueError
        An unknown interval, or a weekly / monthly schedule without a valid anchor.
    """

    interval: str
    weekly_anchor: str | None = None
    monthly_anchor: int | None = None

    def __post_init__(self) -> None:
        if self.interval not in INTERVALS:
            raise ValueError(f"unknown payout interval {self.interval!r}")
        if self.interval == "weekly" and (self.weekly_anchor or "").lower() not in WEEKDAYS:
            raise ValueError(f"weekly payouts need a weekday anchor, not {self.weekly_anchor!r}")
        if self.interval == "monthly" and not (
            self.monthly_anchor is not None and 1 <= self.monthly_anchor <= 31
        ):
            raise ValueError(f"monthly payouts need an anchor 1..31, not {self.monthly_anchor!r}")


def is_due(schedule: PayoutSchedule, day: date) -> bool:
    """Whether an automatic payout is made on ``day`` (a UTC calendar day)."""
    if schedule.interval == "daily":
        return True
    if schedule.interval == "weekly":
        assert schedule.weekly_anchor is not None
        return day.weekday() == WEEKDAYS.index(schedule.weekly_anchor.lower())
    if schedule.interval == "monthly":
        assert schedule.monthly_anchor is not None
        last = calendar.monthrange(day.year, day.month)[1]
        return day.day == min(schedule.monthly_anchor, last)
    return False


def add_business_days(start: datetime, days: int) -> datetime:
    """``start`` moved ``days`` weekdays on (a weekend start counts from Monday)."""
    moment = start
    while moment.weekday() >= 5:
        moment += timedelta(days=1)
    remaining = days
    while remaining > 0:
        moment += timedelta(days=1)
        if moment.weekday() < 5:
            remaining -= 1
    return moment


def arrival_date(method: str, created: datetime) -> datetime:
    """When a payout created at ``created`` is expected at its destination."""
    if method == "instant":
        return created + INSTANT_DELAY
    return add_business_days(created, STANDARD_BUSINESS_DAYS)
