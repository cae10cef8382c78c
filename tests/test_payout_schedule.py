"""The automatic payout schedule and arrival dates: pure date arithmetic."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from acr.payouts.schedule import (
    PayoutSchedule,
    add_business_days,
    arrival_date,
    is_due,
)


def _days(start: date, count: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(count)]


def test_daily_is_due_every_day_and_manual_never() -> None:
    for day in _days(date(2030, 1, 1), 40):
        assert is_due(PayoutSchedule("daily"), day)
        assert not is_due(PayoutSchedule("manual"), day)


def test_weekly_is_due_on_its_anchor_only() -> None:
    schedule = PayoutSchedule("weekly", weekly_anchor="friday")
    due = [day for day in _days(date(2030, 1, 1), 28) if is_due(schedule, day)]
    assert due == [date(2030, 1, 4), date(2030, 1, 11), date(2030, 1, 18), date(2030, 1, 25)]
    assert all(day.weekday() == 4 for day in due)
    assert is_due(PayoutSchedule("weekly", weekly_anchor="Monday"), date(2030, 1, 7))


@pytest.mark.parametrize(
    ("anchor", "year", "expected"),
    [
        (15, 2030, [date(2030, m, 15) for m in range(1, 13)]),
        # 31 pays on the last day of shorter months; 29-31 on February's last day.
        (
            31,
            2030,
            [
                date(2030, m, 28 if m == 2 else 30 if m in (4, 6, 9, 11) else 31)
                for m in range(1, 13)
            ],
        ),
        (29, 2030, [date(2030, m, 28 if m == 2 else 29) for m in range(1, 13)]),
        (30, 2032, [date(2032, m, 29 if m == 2 else 30) for m in range(1, 13)]),  # leap year
        (1, 2030, [date(2030, m, 1) for m in range(1, 13)]),
    ],
)
def test_monthly_anchor_falls_back_to_the_last_day(
    anchor: int, year: int, expected: list[date]
) -> None:
    schedule = PayoutSchedule("monthly", monthly_anchor=anchor)
    days = _days(date(year, 1, 1), 366 if year % 4 == 0 else 365)
    assert [day for day in days if is_due(schedule, day)] == expected


@pytest.mark.parametrize(
    "bad",
    [
        {"interval": "hourly"},
        {"interval": "weekly"},
        {"interval": "weekly", "weekly_anchor": "someday"},
        {"interval": "monthly"},
        {"interval": "monthly", "monthly_anchor": 0},
        {"interval": "monthly", "monthly_anchor": 32},
    ],
)
def test_invalid_schedules_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PayoutSchedule(**bad)  # type: ignore[arg-type]


def test_standard_arrival_is_two_business_days_later() -> None:
    monday = datetime(2030, 1, 7, 9, 30, tzinfo=UTC)
    assert arrival_date("standard", monday) == monday + timedelta(days=2)
    thursday = datetime(2030, 1, 10, 9, 30, tzinfo=UTC)
    assert arrival_date("standard", thursday) == datetime(2030, 1, 14, 9, 30, tzinfo=UTC)
    friday = datetime(2030, 1, 11, 23, 0, tzinfo=UTC)
    assert arrival_date("standard", friday) == datetime(2030, 1, 15, 23, 0, tzinfo=UTC)
    saturday = datetime(2030, 1, 12, 8, 0, tzinfo=UTC)  # counts from Monday
    assert arrival_date("standard", saturday) == datetime(2030, 1, 16, 8, 0, tzinfo=UTC)
    assert add_business_days(monday, 0) == monday


def test_instant_arrival_is_thirty_minutes_later() -> None:
    saturday = datetime(2030, 1, 12, 8, 0, tzinfo=UTC)
    assert arrival_date("instant", saturday) == saturday + timedelta(minutes=30)
