"""Campaign statuses, schedules and day-parting: the pure rules, then the scheduler tick."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from acr.auth import ensure_organisation
from acr.campaigns import apply_schedules
from acr.campaigns.lifecycle import (
    Action,
    DaypartError,
    InvalidTransitionError,
    Status,
    advance,
    allowed_actions,
    in_dayparts,
    servable,
    transition,
    validate_dayparts,
)
from acr.db.models import Campaign, Event

if TYPE_CHECKING:
    from api.services import Services

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday
HOUR = timedelta(hours=1)


@dataclass
class Plan:
    status: str
    start_at: datetime | None = None
    end_at: datetime | None = None
    timezone: str = "UTC"
    dayparts: list[dict[str, Any]] = field(default_factory=list)


# -- manual actions ------------------------------------------------------------------------

ALLOWED = {
    ("draft", Action.SCHEDULE): Status.SCHEDULED,
    ("draft", Action.START): Status.RUNNING,
    ("scheduled", Action.START): Status.RUNNING,
    ("running", Action.PAUSE): Status.PAUSED,
    ("paused", Action.RESUME): Status.RUNNING,
    ("scheduled", Action.COMPLETE): Status.COMPLETED,
    ("running", Action.COMPLETE): Status.COMPLETED,
    ("paused", Action.COMPLETE): Status.COMPLETED,
    **{
        (status.value, Action.ARCHIVE): Status.ARCHIVED for status in Status if status != "archived"
    },
}


@pytest.mark.parametrize("status", [s.value for s in Status])
@pytest.mark.parametrize("action", list(Action))
def test_every_transition_is_allowed_or_refused(status: str, action: Action) -> None:
    expected = ALLOWED.get((status, action))
    if expected is None:
        with pytest.raises(InvalidTransitionError, match=f"cannot {action.value}"):
            transition(status, action, end_at=None, now=NOW)
        assert action not in allowed_actions(status)
    else:
        assert transition(status, action, end_at=None, now=NOW) is expected
        assert action in allowed_actions(status)


@pytest.mark.parametrize("action", [Action.SCHEDULE, Action.START])
def test_a_campaign_past_its_end_cannot_be_started(action: Action) -> None:
    with pytest.raises(InvalidTransitionError, match="has passed"):
        transition("draft", action, end_at=NOW, now=NOW)
    assert transition("draft", action, end_at=NOW + HOUR, now=NOW) in (
        Status.SCHEDULED,
        Status.RUNNING,
    )
    with pytest.raises(InvalidTransitionError, match="has passed"):
        transition("paused", Action.RESUME, end_at=NOW - HOUR, now=NOW)
    # Ending or hiding it is still fine.
    assert transition("paused", Action.COMPLETE, end_at=NOW - HOUR, now=NOW) is Status.COMPLETED


# -- the schedule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (Plan("scheduled", start_at=NOW + HOUR), Status.SCHEDULED),
        (Plan("scheduled", start_at=NOW), Status.RUNNING),  # start_at is inclusive
        (Plan("scheduled"), Status.RUNNING),  # no start: at once
        (Plan("scheduled", start_at=NOW - 2 * HOUR, end_at=NOW - HOUR), Status.COMPLETED),
        (Plan("running", end_at=NOW + HOUR), Status.RUNNING),
        (Plan("running", end_at=NOW), Status.COMPLETED),  # end_at is exclusive
        (Plan("paused", end_at=NOW - HOUR), Status.COMPLETED),
        (Plan("draft", start_at=NOW - HOUR, end_at=NOW - HOUR / 2), Status.DRAFT),
        (Plan("archived", end_at=NOW - HOUR), Status.ARCHIVED),
        (Plan("completed"), Status.COMPLETED),
    ],
)
def test_advance_applies_the_schedule(plan: Plan, expected: Status) -> None:
    assert advance(plan, NOW) is expected


# -- day-parting ---------------------------------------------------------------------------

EVENINGS: list[dict[str, Any]] = [{"days": [0], "start": "22:00", "end": "02:00"}]
"""Monday 22:00 to Tuesday 02:00, crossing midnight."""


@pytest.mark.parametrize(
    ("local", "inside"),
    [
        ("2026-11-23T21:59:59", False),  # Monday, just before
        ("2026-11-23T22:00:00", True),  # Monday, start is inclusive
        ("2026-11-23T23:59:59", True),
        ("2026-11-24T00:00:00", True),  # Tuesday, the window goes on past midnight
        ("2026-11-24T01:59:59", True),
        ("2026-11-24T02:00:00", False),  # end is exclusive
        ("2026-11-24T22:30:00", False),  # Tuesday evening is not a window
        ("2026-11-23T01:00:00", False),  # Monday early: Sunday has no window
    ],
)
def test_dayparts_cross_midnight_in_the_campaigns_time_zone(local: str, inside: bool) -> None:
    from zoneinfo import ZoneInfo

    paris = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo("Europe/Paris"))
    assert in_dayparts(EVENINGS, "Europe/Paris", paris.astimezone(UTC)) is inside
    # The same instant is an hour earlier in London: the zone matters.
    london = paris.replace(tzinfo=ZoneInfo("Europe/London"))
    assert in_dayparts(EVENINGS, "Europe/London", london.astimezone(UTC)) is inside


def test_dayparts_follow_local_time_across_dst() -> None:
    mornings = [{"days": list(range(7)), "start": "08:00", "end": "09:00"}]
    # 08:30 in New York is 13:30 UTC in winter and 12:30 UTC in summer.
    assert in_dayparts(mornings, "America/New_York", datetime(2026, 1, 5, 13, 30, tzinfo=UTC))
    assert not in_dayparts(mornings, "America/New_York", datetime(2026, 7, 6, 13, 30, tzinfo=UTC))
    assert in_dayparts(mornings, "America/New_York", datetime(2026, 7, 6, 12, 30, tzinfo=UTC))


def test_whole_days_and_no_dayparts() -> None:
    whole = [{"days": [5, 6], "start": "00:00", "end": "24:00"}]
    saturday = datetime(2026, 11, 28, 23, 59, tzinfo=UTC)
    assert in_dayparts(whole, "UTC", saturday)
    assert not in_dayparts(whole, "UTC", saturday + timedelta(days=2))
    assert in_dayparts([], "UTC", saturday)


def test_servable_needs_both_the_schedule_and_a_daypart() -> None:
    monday_evening = datetime(2026, 11, 23, 21, 30, tzinfo=UTC)  # 22:30 in Paris
    plan = Plan("running", timezone="Europe/Paris", dayparts=EVENINGS)
    assert servable(plan, monday_evening)
    assert not servable(plan, monday_evening - 2 * HOUR)
    plan.status = "paused"
    assert not servable(plan, monday_evening)


@pytest.mark.parametrize(
    ("dayparts", "loc"),
    [
        ([{"days": [0], "start": "10:00"}], [0]),
        ([{"days": [], "start": "10:00", "end": "11:00"}], [0, "days"]),
        ([{"days": [7], "start": "10:00", "end": "11:00"}], [0, "days"]),
        ([{"days": [True], "start": "10:00", "end": "11:00"}], [0, "days"]),
        ([{"days": [1], "start": "9:00", "end": "11:00"}], [0, "start"]),
        ([{"days": [1], "start": "10:00", "end": "24:01"}], [0, "end"]),
        ([{"days": [1], "start": "24:00", "end": "01:00"}], [0, "start"]),
        ([{"days": [1], "start": "10:00", "end": "10:00"}], [0, "end"]),
    ],
)
def test_invalid_dayparts_say_where(dayparts: list[dict[str, object]], loc: list[object]) -> None:
    with pytest.raises(DaypartError) as raised:
        validate_dayparts(dayparts)
    assert raised.value.loc == loc


def test_valid_dayparts_are_normalised() -> None:
    assert validate_dayparts([{"days": [3, 1, 3], "start": "23:00", "end": "01:30"}]) == [
        {"days": [1, 3], "start": "23:00", "end": "01:30"}
    ]


# -- the scheduler tick, on both databases -------------------------------------------------


def test_apply_schedules_starts_and_completes_and_emits_events(services: Services) -> None:
    with services.sessions() as session:
        org = ensure_organisation(session, "acme").id
        plans = {
            "due_start": Campaign(status="scheduled", start_at=NOW - HOUR),
            "not_yet": Campaign(status="scheduled", start_at=NOW + HOUR),
            "due_end": Campaign(status="running", end_at=NOW - HOUR),
            "paused_end": Campaign(status="paused", end_at=NOW),
            "running": Campaign(status="running", end_at=NOW + HOUR),
            "draft": Campaign(status="draft", start_at=NOW - HOUR),
        }
        for name, campaign in plans.items():
            campaign.organisation_id, campaign.name, campaign.advertiser = org, name, "Acme"
            session.add(campaign)
        session.commit()
        ids = {name: campaign.id for name, campaign in plans.items()}

    assert apply_schedules(services.sessions, NOW) is False  # all done in one batch
    with services.sessions() as session:
        statuses = {
            name: session.get_one(Campaign, campaign_id).status for name, campaign_id in ids.items()
        }
        events = session.scalars(select(Event).where(Event.type == "campaign.updated")).all()
    assert statuses == {
        "due_start": "running",
        "not_yet": "scheduled",
        "due_end": "completed",
        "paused_end": "completed",
        "running": "running",
        "draft": "draft",
    }
    changes = {
        e.data["object"]["id"]: (e.data["previous_attributes"], e.data["object"]["status"])
        for e in events
    }
    assert changes == {
        ids["due_start"]: ({"status": "scheduled"}, "running"),
        ids["due_end"]: ({"status": "running"}, "completed"),
        ids["paused_end"]: ({"status": "paused"}, "completed"),
    }
    assert all(e.organisation_id == org for e in events)
    # A second tick has nothing to do and emits nothing.
    assert apply_schedules(services.sessions, NOW) is False
    with services.sessions() as session:
        again = session.scalars(select(Event).where(Event.type == "campaign.updated")).all()
    assert len(again) == 3


def test_apply_schedules_reports_a_full_batch(services: Services) -> None:
    with services.sessions() as session:
        org = ensure_organisation(session, "acme").id
        for i in range(3):
            session.add(
                Campaign(organisation_id=org, name=f"c{i}", advertiser="A", status="scheduled")
            )
        session.commit()
    assert apply_schedules(services.sessions, NOW, batch=2) is True
    assert apply_schedules(services.sessions, NOW, batch=2) is False
    with services.sessions() as session:
        assert set(session.scalars(select(Campaign.status))) == {"running"}
