"""Connected accounts: the content owners who are paid, and their payout schedules.

Shaped as Stripe Connect's ``account``: ``country``, ``default_currency``,
``payouts_enabled`` and ``settings.payouts.schedule`` (``interval``,
``delay_days``, ``weekly_anchor``, ``monthly_anchor``). Ours adds
``settings.payouts.hold_in_platform``: revenue accumulates in the platform's
balance (the ``held:<acct>`` book) until a transfer moves it to the account.

Choices:

* An account belongs to an organisation (or to none: the platform's own). Its
  campaign-manager keys manage it; the routers answer 404 for anyone else's.
* The schedule is validated as a whole after a change is merged into the
  current one: ``weekly_anchor`` goes with ``weekly`` only and is required
  there, ``monthly_anchor`` (1–31) with ``monthly`` only, likewise. Switching
  the interval drops the anchor the new interval does not use.
* A change of ``delay_days`` or ``hold_in_platform`` applies to revenue accrued
  from then on; what is already in the ledger keeps its ``available_on`` and book.
* Every change emits ``account.created`` / ``account.updated`` (with
  ``previous_attributes``, as Stripe's events do) in the same transaction.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from acr.campaigns.countries import COUNTRIES
from acr.db.models import Account, ExternalAccount, iso_utc
from acr.events import emit
from acr.payouts.ledger import CURRENCY

Interval = Literal["daily", "weekly", "monthly", "manual"]
INTERVALS: Final = ("daily", "weekly", "monthly", "manual")
WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DEFAULT_DELAY_DAYS: Final = 2
MAX_DELAY_DAYS: Final = 365

# Stripe derives an account's default currency from its country; these are the usual ones.
_EURO = ("AT", "BE", "CY", "DE", "EE", "ES", "FI", "FR", "GR", "HR", "IE", "IT", "LT", "LU",
         "LV", "MT", "NL", "PT", "SI", "SK")  # fmt: skip
COUNTRY_CURRENCY: Final[dict[str, str]] = {
    **dict.fromkeys(_EURO, "eur"),
    "US": "usd", "GB": "gbp", "CA": "cad", "AU": "aud", "NZ": "nzd", "JP": "jpy",
    "CH": "chf", "SE": "sek", "NO": "nok", "DK": "dkk", "PL": "pln", "CZ": "czk",
    "HU": "huf", "RO": "ron", "BG": "bgn", "SG": "sgd", "HK": "hkd", "MX": "mxn",
    "BR": "brl", "IN": "inr",
}  # fmt: skip


class PayoutInputError(ValueError):
    """Input the payouts module refuses; ``loc`` names the field (as the API's errors do).

    Attributes
    ----------
    loc : tuple of str
        Where in the request body, e.g. ``("settings", "payouts", "schedule", "interval")``.
    code : str
        Stable machine-readable reason.
    """

    def __init__(self, loc: tuple[str, ...], message: str, code: str = "value_error") -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Schedule:
    """Stripe's ``settings.payouts.schedule``."""

    interval: str = "daily"
    delay_days: int = DEFAULT_DELAY_DAYS
    weekly_anchor: str | None = None
    monthly_anchor: int | None = None


_SCHEDULE_LOC = ("settings", "payouts", "schedule")


def validate_schedule(schedule: Schedule) -> Schedule:
    """The schedule, checked (and anchors lower-cased).

    Raises
    ------
    PayoutInputError
        An unknown interval, a delay out of 0..365, a missing or misplaced anchor.
    """
    if schedule.interval not in INTERVALS:
        raise PayoutInputError(
            (*_SCHEDULE_LOC, "interval"), f"interval is one of {', '.join(INTERVALS)}"
        )
    if isinstance(schedule.delay_days, bool) or not 0 <= schedule.delay_days <= MAX_DELAY_DAYS:
        raise PayoutInputError(
            (*_SCHEDULE_LOC, "delay_days"), f"delay_days is a whole number of 0..{MAX_DELAY_DAYS}"
        )
    weekly = schedule.weekly_anchor.lower() if schedule.weekly_anchor else None
    if schedule.interval == "weekly":
        if weekly not in WEEKDAYS:
            raise PayoutInputError(
                (*_SCHEDULE_LOC, "weekly_anchor"),
                "a weekly schedule names its weekly_anchor, monday..sunday",
            )
    elif weekly is not None:
        raise PayoutInputError(
            (*_SCHEDULE_LOC, "weekly_anchor"), "weekly_anchor goes with interval weekly only"
        )
    monthly = schedule.monthly_anchor
    if schedule.interval == "monthly":
        if monthly is None or isinstance(monthly, bool) or not 1 <= monthly <= 31:
            raise PayoutInputError(
                (*_SCHEDULE_LOC, "monthly_anchor"),
                "a monthly schedule names its monthly_anchor, 1..31",
            )
    elif monthly is not None:
        raise PayoutInputError(
            (*_SCHEDULE_LOC, "monthly_anchor"), "monthly_anchor goes with interval monthly only"
        )
    return Schedule(schedule.interval, schedule.delay_days, weekly, monthly)


def merge_schedule(current: Schedule, changes: dict[str, Any]) -> Schedule:
    """``current`` with ``changes`` applied, then validated.

    A new interval drops the current anchor it does not use (unless the change
    names one, which is then checked), so that ``{"interval": "daily"}`` turns a
    weekly schedule into a daily one without also having to null its anchor.
    """
    interval = changes.get("interval", current.interval)
    weekly = changes.get("weekly_anchor", current.weekly_anchor if interval == "weekly" else None)
    monthly = changes.get(
        "monthly_anchor", current.monthly_anchor if interval == "monthly" else None
    )
    delay = changes.get("delay_days", current.delay_days)
    return validate_schedule(Schedule(interval, delay, weekly, monthly))


def monthly_anchor_day(year: int, month: int, anchor: int) -> date:
    """The payout day of a monthly schedule in that month: 29–31 fall back to its last day."""
    return date(year, month, min(anchor, calendar.monthrange(year, month)[1]))


def check_country(country: str, loc: tuple[str, ...] = ("country",)) -> str:
    """``country`` upper-cased, if an ISO 3166-1 alpha-2 code."""
    code = country.upper()
    if code not in COUNTRIES:
        raise PayoutInputError(loc, f"{country!r} is not an ISO 3166-1 alpha-2 country code")
    return code


def check_currency(currency: str, loc: tuple[str, ...] = ("currency",)) -> str:
    """``currency`` lower-cased, if shaped as an ISO 4217 code."""
    code = currency.lower()
    if not CURRENCY.match(code):
        raise PayoutInputError(loc, f"{currency!r} is not an ISO 4217 currency code")
    return code


def schedule_of(account: Account) -> Schedule:
    return Schedule(
        account.payout_interval,
        account.payout_delay_days,
        account.payout_weekly_anchor,
        account.payout_monthly_anchor,
    )


def live_external_accounts(session: Session, account_id: str) -> list[ExternalAccount]:
    """The account's external accounts not deleted, oldest first."""
    return list(
        session.scalars(
            select(ExternalAccount)
            .where(ExternalAccount.account_id == account_id, ExternalAccount.deleted_at.is_(None))
            .order_by(ExternalAccount.created_at, ExternalAccount.id)
        )
    )


def account_document(
    account: Account, external_accounts: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The account as the API and its events show it (Stripe's ``account`` shape)."""
    document: dict[str, Any] = {
        "id": account.id,
        "object": "account",
        "organisation_id": account.organisation_id,
        "business_profile": {"name": account.business_name or None},
        "email": account.email,
        "country": account.country,
        "default_currency": account.default_currency,
        "payouts_enabled": account.payouts_enabled,
        "settings": {
            "payouts": {
                "schedule": {
                    "interval": account.payout_interval,
                    "delay_days": account.payout_delay_days,
                    "weekly_anchor": account.payout_weekly_anchor,
                    "monthly_anchor": account.payout_monthly_anchor,
                },
                "hold_in_platform": account.hold_in_platform,
            }
        },
        "stripe_account_id": account.stripe_account_id,
        "metadata": dict(account.extra or {}),
        "created": iso_utc(account.created_at),
    }
    if external_accounts is not None:
        document["external_accounts"] = {
            "object": "list",
            "data": external_accounts,
            "has_more": False,
            "url": f"/v1/accounts/{account.id}/external_accounts",
        }
    return document


@dataclass(frozen=True)
class AccountFields:
    """What a create or update may set; for an update, only the fields in ``given`` change."""

    country: str | None = None
    default_currency: str | None = None
    business_name: str | None = None
    email: str | None = None
    payouts_enabled: bool | None = None
    schedule: dict[str, Any] | None = None
    """Changes to ``settings.payouts.schedule`` (keys: interval, delay_days, anchors)."""
    hold_in_platform: bool | None = None
    stripe_account_id: str | None = None
    metadata: dict[str, Any] | None = None


def create_account(session: Session, organisation_id: str | None, fields: AccountFields) -> Account:
    """A new connected account (flushed, with its ``account.created`` event); the caller commits.

    Raises
    ------
    PayoutInputError
        No or an unknown country, a bad currency, an invalid schedule.
    """
    if not fields.country:
        raise PayoutInputError(("country",), "an account names its country")
    country = check_country(fields.country)
    currency = check_currency(
        fields.default_currency or COUNTRY_CURRENCY.get(country, "usd"), ("default_currency",)
    )
    schedule = merge_schedule(Schedule(), fields.schedule or {})
    account = Account(
        organisation_id=organisation_id,
        business_name=fields.business_name or "",
        email=fields.email,
        country=country,
        default_currency=currency,
        payouts_enabled=True if fields.payouts_enabled is None else fields.payouts_enabled,
        payout_interval=schedule.interval,
        payout_delay_days=schedule.delay_days,
        payout_weekly_anchor=schedule.weekly_anchor,
        payout_monthly_anchor=schedule.monthly_anchor,
        hold_in_platform=bool(fields.hold_in_platform),
        stripe_account_id=fields.stripe_account_id,
        extra=dict(fields.metadata or {}),
    )
    session.add(account)
    session.flush()
    emit(
        session,
        "account.created",
        {"object": account_document(account)},
        organisation_id=account.organisation_id,
        account_id=account.id,
    )
    return account


def _changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Stripe's ``previous_attributes``: the old values of what changed, nested as the object."""
    previous: dict[str, Any] = {}
    for key, value in before.items():
        if after.get(key) == value:
            continue
        if isinstance(value, dict) and isinstance(after.get(key), dict):
            previous[key] = _changed(value, after[key])
        else:
            previous[key] = value
    return previous


def update_account(session: Session, account: Account, fields: AccountFields) -> dict[str, Any]:
    """Apply the non-None ``fields`` to ``account``; emit ``account.updated`` if anything changed.

    The caller holds the account's row lock (:func:`acr.payouts.ledger.lock_account`)
    and commits.

    Returns
    -------
    dict
        ``previous_attributes`` (empty when nothing changed).
    """
    before = account_document(account)
    if fields.country is not None:
        account.country = check_country(fields.country)
    if fields.default_currency is not None:
        account.default_currency = check_currency(fields.default_currency, ("default_currency",))
    if fields.schedule is not None:
        schedule = merge_schedule(schedule_of(account), fields.schedule)
        account.payout_interval = schedule.interval
        account.payout_delay_days = schedule.delay_days
        account.payout_weekly_anchor = schedule.weekly_anchor
        account.payout_monthly_anchor = schedule.monthly_anchor
    for name, attribute in (
        ("business_name", "business_name"),
        ("email", "email"),
        ("payouts_enabled", "payouts_enabled"),
        ("hold_in_platform", "hold_in_platform"),
        ("stripe_account_id", "stripe_account_id"),
    ):
        value = getattr(fields, name)
        if value is not None:
            setattr(account, attribute, value)
    if fields.metadata is not None:
        # Stripe merges metadata keys; an empty value removes a key.
        merged = {**(account.extra or {}), **fields.metadata}
        account.extra = {k: v for k, v in merged.items() if v not in ("", None)}
    previous = _changed(before, account_document(account))
    if previous:
        session.flush()
        emit(
            session,
            "account.updated",
            {"object": account_document(account), "previous_attributes": previous},
            organisation_id=account.organisation_id,
            account_id=account.id,
        )
    return previous
