"""A campaign's status, its schedule and its day-parting, as pure functions.

Statuses and the manual actions between them::

    draft ──schedule──▶ scheduled ──(start_at)──▶ running ◀──resume── paused
      │                    │                       │  └────pause─────▶  │
      └──────start─────────┴──────start───────────▶│                    │
                                                   └──complete / (end_at)┴──▶ completed
    archive: from any status but archived ─────────────────────────────────▶ archived

Choices:

* ``schedule`` arms a draft: it becomes ``running`` by itself at ``start_at`` (at
  once if there is none) and ``completed`` by itself at ``end_at``. ``start`` runs a
  draft or scheduled campaign now, whatever ``start_at`` says (the manager asked).
* Neither ``schedule``, ``start`` nor ``resume`` is allowed once ``end_at`` has
  passed: the campaign could only complete at once.
* ``complete`` ends a scheduled, running or paused campaign; ``archive`` hides a
  campaign from any status (a running one stops). Both are final: completed and
  archived campaigns are read-only, except that a completed one may be archived.
* The time-driven transitions are :func:`advance`; the scheduler tick
  (:func:`acr.campaigns.scheduler.apply_schedules`) persists them, and serving
  applies them lazily too, so that a slow tick never serves a finished campaign.
* Day-parting is a list of weekly windows ``{"days": [0..6], "start": "HH:MM",
  "end": "HH:MM"}`` in the campaign's IANA time zone; Monday is 0, as in
  :meth:`datetime.weekday`. A window is half-open, ``[start, end)``; ``end`` may be
  ``"24:00"``; an ``end`` before ``start`` crosses midnight into the next day (the
  window belongs to the day it starts on). No windows means all day, every day.
  Local wall-clock time is what counts, so a DST change moves windows with it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class Status(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ARCHIVED = "archived"


class Action(StrEnum):
    SCHEDULE = "schedule"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    COMPLETE = "complete"
    ARCHIVE = "archive"


READ_ONLY = frozenset({Status.COMPLETED, Status.ARCHIVED})
"""Statuses whose campaigns can no longer be edited."""

LIVE = frozenset({Status.SCHEDULED, Status.RUNNING, Status.PAUSED})
"""Statuses that the schedule can still move on."""

_ALLOWED: dict[Action, frozenset[Status]] = {
    Action.SCHEDULE: frozenset({Status.DRAFT}),
    Action.START: frozenset({Status.DRAFT, Status.SCHEDULED}),
    Action.PAUSE: frozenset({Status.RUNNING}),
    Action.RESUME: frozenset({Status.PAUSED}),
    Action.COMPLETE: frozenset({Status.SCHEDULED, Status.RUNNING, Status.PAUSED}),
    Action.ARCHIVE: frozenset(set(Status) - {Status.ARCHIVED}),
}
_TARGET: dict[Action, Status] = {
    Action.SCHEDULE: Status.SCHEDULED,
    Action.START: Status.RUNNING,
    Action.PAUSE: Status.PAUSED,
    Action.RESUME: Status.RUNNING,
    Action.COMPLETE: Status.COMPLETED,
    Action.ARCHIVE: Status.ARCHIVED,
}
_NEEDS_FUTURE_END = frozenset({Action.SCHEDULE, Action.START, Action.RESUME})


class InvalidTransitionError(Exception):
    """A manual action that the campaign's status (or schedule) does not allow."""


class Scheduled(Protocol):
    """What :func:`advance` reads: a :class:`~acr.db.models.Campaign` is one."""

    @property
    def status(self) -> str: ...
    @property
    def start_at(self) -> datetime | None: ...
    @property
    def end_at(self) -> datetime | None: ...


class Servable(Scheduled, Protocol):
    """What :func:`servable` reads: the schedule and the day-parting."""

    @property
    def timezone(self) -> str: ...
    @property
    def dayparts(self) -> list[dict[str, Any]]: ...


def allowed_actions(status: str) -> list[Action]:
    """The manual actions possible from ``status``, in declaration order."""
    return [action for action, sources in _ALLOWED.items() if status in sources]


def transition(status: str, action: Action, *, end_at: datetime | None, now: datetime) -> Status:
    """The status after ``action`` from ``status``.

    Raises
    ------
    InvalidTransitionError
        The action is not allowed from ``status``, or it would (re)start a campaign
        whose ``end_at`` has passed.
    """
    if status not in _ALLOWED[action]:
        raise InvalidTransitionError(f"cannot {action.value} a campaign that is {status}")
    if action in _NEEDS_FUTURE_END and end_at is not None and end_at <= now:
        raise InvalidTransitionError(
            f"cannot {action.value} a campaign whose end_at ({end_at.isoformat()}) has passed"
        )
    return _TARGET[action]


def advance(campaign: Scheduled, now: datetime) -> Status:
    """The status that the schedule gives ``campaign`` at ``now`` (it may be unchanged).

    A scheduled campaign runs from ``start_at`` (or at once without one); a
    scheduled, running or paused campaign completes at ``end_at``.
    """
    status = Status(campaign.status)
    if status is Status.SCHEDULED and (campaign.start_at is None or campaign.start_at <= now):
        status = Status.RUNNING
    if status in LIVE and campaign.end_at is not None and campaign.end_at <= now:
        status = Status.COMPLETED
    return status


# -- day-parting ----------------------------------------------------------------------------

_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")
MINUTES_PER_DAY = 24 * 60


class DaypartError(ValueError):
    """Invalid day-parting; ``loc`` is the path of the bad field below ``dayparts``."""

    def __init__(self, loc: list[str | int], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``.

    Raises
    ------
    ValueError
        Not a known IANA zone name.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Paris"
        ) from None


def clock_minutes(value: str) -> int:
    """Minutes since midnight of ``"HH:MM"`` (``"24:00"`` is 1440).

    Raises
    ------
    ValueError
        Not a 24-hour ``HH:MM`` time.
    """
    if not isinstance(value, str) or not _CLOCK.match(value):
        raise ValueError(f"{value!r} is not a time of day as HH:MM (00:00 to 24:00)")
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def validate_dayparts(dayparts: Sequence[Any]) -> list[dict[str, Any]]:
    """Day-parting windows checked and normalised (days sorted, no duplicates).

    Raises
    ------
    DaypartError
        A window that is not ``{"days": [0..6, ...], "start": "HH:MM", "end": "HH:MM"}``
        with ``start != end`` (an empty window would never serve) and ``start`` before 24:00.
    """
    result: list[dict[str, Any]] = []
    for i, window in enumerate(dayparts):
        if not isinstance(window, dict) or set(window) != {"days", "start", "end"}:
            raise DaypartError([i], "a window has exactly the keys days, start and end")
        days = window["days"]
        if (
            not isinstance(days, list)
            or not days
            or any(type(day) is not int or not 0 <= day <= 6 for day in days)
        ):
            raise DaypartError([i, "days"], "days is a non-empty list of 0 (Monday) to 6 (Sunday)")
        try:
            start = clock_minutes(window["start"])
        except ValueError as error:
            raise DaypartError([i, "start"], str(error)) from None
        try:
            end = clock_minutes(window["end"])
        except ValueError as error:
            raise DaypartError([i, "end"], str(error)) from None
        if start == MINUTES_PER_DAY:
            raise DaypartError([i, "start"], "a window starts before 24:00")
        if start == end:
            raise DaypartError([i, "end"], "a window's end differs from its start")
        result.append({"days": sorted(set(days)), "start": window["start"], "end": window["end"]})
    return result


def in_dayparts(dayparts: Sequence[dict[str, Any]], timezone: str, now: datetime) -> bool:
    """Whether ``now`` falls inside one of the (valid) weekly windows, in ``timezone``."""
    if not dayparts:
        return True
    local = now.astimezone(zone(timezone))
    weekday = local.weekday()
    minute = local.hour * 60 + local.minute + local.second / 60 + local.microsecond / 60e6
    for window in dayparts:
        start, end = clock_minutes(window["start"]), clock_minutes(window["end"])
        days = window["days"]
        if start < end:
            if weekday in days and start <= minute < end:
                return True
        elif (weekday in days and minute >= start) or ((weekday - 1) % 7 in days and minute < end):
            return True
    return False


def servable(campaign: Servable, now: datetime) -> bool:
    """Whether a campaign may serve at ``now``: running by its schedule, inside its day-parting."""
    return advance(campaign, now) is Status.RUNNING and in_dayparts(
        campaign.dayparts, campaign.timezone, now
    )
