"""External accounts: the bank accounts and debit cards a connected account is paid to.

Created from token-like input (a bank account's routing and account numbers, a
card's number and expiry), as Stripe's ``external_account`` parameter is. Only
``last4``, a keyed ``fingerprint`` and the bank's name or the card's brand are
kept: the full number never reaches the database, an event or a log.

Choices:

* The fingerprint is an HMAC-SHA256 keyed by a key derived from the server's
  secret, so the same number is recognisable (a duplicate on one account is
  refused, 409) but cannot be recovered by hashing guessed numbers.
* Debit cards are eligible for instant payouts (``available_payout_methods:
  ["standard", "instant"]``) unless the simulated bank says otherwise
  (``instant_eligible: false``); bank accounts are ``["standard"]``. Stripe's
  credit test cards are accepted as ``funding: credit`` (payouts to them fail
  on the simulated rail, as the rail's test behaviours say), never instant.
* Verification is immediate on the simulated rail: a new external account is
  ``verified`` at once. The simulated bank's behaviour for the number (its
  failure code, …) goes into ``rail_data`` from
  :func:`acr.payouts.rails.simulated.behaviour_for`; cards add ``exp_month``,
  ``exp_year`` and ``funding`` there.
* ``default_for_currency``: the first external account of a currency is its
  default; making another one the default unsets the old one. The default one
  cannot be unset (make another the default) and the default for the
  account's default currency cannot be deleted, as on Stripe.
* ``errored`` and ``disabled`` external accounts block payouts to them. Any
  update of one (new holder name, expiry, metadata, or making it default)
  verifies it again (``verified``), which lifts the block; adding a new default
  external account lifts it too, since payouts go to the default.
* Every change emits ``account.external_account.created`` / ``.updated`` /
  ``.deleted`` in the same transaction. The caller holds the account's row lock
  (:func:`acr.payouts.ledger.lock_account`), which serialises default changes.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from acr.db.models import Account, ExternalAccount, new_id, utcnow
from acr.events import emit
from acr.payouts.accounts import PayoutInputError, check_country, check_currency

Status = Literal["new", "verified", "errored", "disabled"]
STATUSES: Final = ("new", "verified", "errored", "disabled")
BLOCKING: Final = frozenset({"errored", "disabled"})
"""Statuses that stop payouts to an external account."""

CREDIT_TEST_CARDS: Final = frozenset(
    {"4242424242424242", "5555555555554444", "2223003122003222", "378282246310005",
     "371449635398431", "6011111111111117", "3056930009020004", "36227206271667",
     "3566002020360505", "6200000000000005", "5105105105105100"}
)  # fmt: skip
"""Stripe's test cards that are credit cards: shown as ``funding: credit``. They are
accepted, as the simulated bank's test behaviours need (payouts to them fail with
``unsupported_card``), but never instant-eligible."""
# Routing numbers of the simulated banks (Stripe's test routing number first).
BANK_NAMES: Final = {"110000000": "STRIPE TEST BANK", "021000021": "JPMORGAN CHASE"}


class DuplicateExternalAccountError(Exception):
    """The account already has this bank account or card."""


class ExternalAccountConflictError(Exception):
    """A change the external account's role forbids (unsetting or deleting a default)."""


@dataclass(frozen=True)
class BankAccountDetails:
    """A bank account as submitted (Stripe's ``external_account[object]=bank_account``)."""

    country: str
    currency: str
    account_number: str
    routing_number: str | None = None
    account_holder_name: str | None = None


@dataclass(frozen=True)
class CardDetails:
    """A debit card as submitted (Stripe's ``external_account[object]=card``)."""

    number: str
    exp_month: int
    exp_year: int
    currency: str
    name: str | None = None


def _fingerprint_key(secret: bytes) -> bytes:
    # A key of its own, so that these hashes can never be compared with the viewer ids'.
    return hmac.new(secret, b"acr external account fingerprint", hashlib.sha256).digest()


def fingerprint(secret: bytes, *parts: str) -> str:
    """A keyed hash of the identifying parts of a number (32 hex characters)."""
    message = "\x00".join(parts).encode()
    return hmac.new(_fingerprint_key(secret), message, hashlib.sha256).hexdigest()[:32]


def luhn_ok(number: str) -> bool:
    """Whether a card number's check digit is right."""
    total = 0
    for i, char in enumerate(reversed(number)):
        digit = int(char)
        if i % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def aba_ok(routing: str) -> bool:
    """Whether a US routing number's checksum is right."""
    weights = (3, 7, 1) * 3
    return sum(int(d) * w for d, w in zip(routing, weights, strict=True)) % 10 == 0


def card_brand(number: str) -> str:
    """The card network from the number's first digits (Stripe's brand names)."""
    if number.startswith("4"):
        return "Visa"
    two, four = int(number[:2]), int(number[:4])
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "MasterCard"
    if two in (34, 37):
        return "American Express"
    if number.startswith(("6011", "65", "644", "645", "646", "647", "648", "649")):
        return "Discover"
    if two in (30, 36, 38, 39):
        return "Diners Club"
    if 3528 <= four <= 3589:
        return "JCB"
    if number.startswith("62"):
        return "UnionPay"
    return "Unknown"


def rail_behaviour(number: str) -> dict[str, Any]:
    """What the simulated bank does with payouts to ``number`` (its test behaviours).

    Asks :func:`acr.payouts.rails.simulated.behaviour_for`; without that module,
    keeps only the last four digits, by which a simulated rail can still tell
    Stripe's test numbers apart.
    """
    try:
        module = importlib.import_module("acr.payouts.rails.simulated")
    except ImportError:
        return {"test_number_last4": number[-4:]}
    behaviour_for = getattr(module, "behaviour_for", None)
    if behaviour_for is None:
        return {"test_number_last4": number[-4:]}
    return dict(behaviour_for(number))


def _digits(value: str) -> str:
    return re.sub(r"[\s-]", "", value)


def external_account_id(kind: str) -> str:
    return new_id("ba" if kind == "bank_account" else "card")


def _new_bank_account(
    account: Account, details: BankAccountDetails, secret: bytes
) -> ExternalAccount:
    country = check_country(details.country, ("country",))
    currency = check_currency(details.currency, ("currency",))
    number = _digits(details.account_number).upper()
    routing = _digits(details.routing_number or "")
    if country == "US":
        if not re.fullmatch(r"[0-9]{4,17}", number):
            raise PayoutInputError(
                ("account_number",), "a US account number is 4 to 17 digits", "invalid_number"
            )
        if not re.fullmatch(r"[0-9]{9}", routing) or not aba_ok(routing):
            raise PayoutInputError(
                ("routing_number",), "a US routing number is 9 digits with a valid checksum",
                "routing_number_invalid",
            )  # fmt: skip
    else:
        if not re.fullmatch(r"[A-Z0-9]{4,34}", number):
            raise PayoutInputError(
                ("account_number",), "an account number (or IBAN) is 4 to 34 letters and digits",
                "invalid_number",
            )  # fmt: skip
        if routing and not re.fullmatch(r"[A-Za-z0-9]{1,20}", routing):
            raise PayoutInputError(
                ("routing_number",), "a routing number is up to 20 letters and digits",
                "routing_number_invalid",
            )  # fmt: skip
    return ExternalAccount(
        id=external_account_id("bank_account"),
        account_id=account.id,
        object="bank_account",
        last4=number[-4:],
        fingerprint=fingerprint(secret, "bank_account", country, routing, number),
        bank_name=BANK_NAMES.get(routing),
        account_holder_name=details.account_holder_name,
        country=country,
        currency=currency,
        available_payout_methods=["standard"],
        rail_data={**rail_behaviour(number), "routing_last4": routing[-4:] or None},
    )


def _new_card(
    account: Account, details: CardDetails, secret: bytes, now: datetime
) -> ExternalAccount:
    currency = check_currency(details.currency, ("currency",))
    number = _digits(details.number)
    if not re.fullmatch(r"[0-9]{12,19}", number) or not luhn_ok(number):
        raise PayoutInputError(("number",), "the card number is not valid", "invalid_number")
    if not 1 <= details.exp_month <= 12:
        raise PayoutInputError(("exp_month",), "exp_month is 1..12", "invalid_expiry_month")
    today = now.astimezone(UTC)
    if not today.year <= details.exp_year <= today.year + 50:
        raise PayoutInputError(
            ("exp_year",), "the card has expired or its year is not valid", "invalid_expiry_year"
        )
    if (details.exp_year, details.exp_month) < (today.year, today.month):
        raise PayoutInputError(("exp_month",), "the card has expired", "invalid_expiry_month")
    behaviour = rail_behaviour(number)
    credit = number in CREDIT_TEST_CARDS
    instant = not credit and behaviour.get("instant_eligible", True) is not False
    return ExternalAccount(
        id=external_account_id("card"),
        account_id=account.id,
        object="card",
        last4=number[-4:],
        fingerprint=fingerprint(secret, "card", number),
        brand=card_brand(number),
        account_holder_name=details.name,
        # Stripe reads a card's country from its issuer; the simulated one issues locally.
        country=account.country,
        currency=currency,
        available_payout_methods=["standard", "instant"] if instant else ["standard"],
        rail_data={
            **behaviour,
            "exp_month": details.exp_month,
            "exp_year": details.exp_year,
            "funding": "credit" if credit else "debit",
        },
    )


def external_account_document(external: ExternalAccount) -> dict[str, Any]:
    """The external account as the API and its events show it (Stripe's shapes)."""
    document: dict[str, Any] = {
        "id": external.id,
        "object": external.object,
        "account": external.account_id,
        "account_holder_name": external.account_holder_name,
        "country": external.country,
        "currency": external.currency,
        "default_for_currency": external.default_for_currency,
        "fingerprint": external.fingerprint,
        "last4": external.last4,
        "status": external.status,
        "available_payout_methods": list(external.available_payout_methods or []),
        "metadata": dict(external.extra or {}),
    }
    if external.object == "card":
        rail = external.rail_data or {}
        document.update(
            brand=external.brand,
            exp_month=rail.get("exp_month"),
            exp_year=rail.get("exp_year"),
            funding=rail.get("funding", "debit"),
        )
    else:
        document["bank_name"] = external.bank_name
    return document


def _emit(session: Session, account: Account, kind: str, data: dict[str, Any]) -> None:
    emit(
        session,
        f"account.external_account.{kind}",
        data,
        organisation_id=account.organisation_id,
        account_id=account.id,
    )


def _same_currency(session: Session, account_id: str, currency: str) -> list[ExternalAccount]:
    return list(
        session.scalars(
            select(ExternalAccount).where(
                ExternalAccount.account_id == account_id,
                ExternalAccount.currency == currency,
                ExternalAccount.deleted_at.is_(None),
            )
        )
    )


def _make_default(session: Session, account: Account, external: ExternalAccount) -> None:
    """Make ``external`` its currency's default, unsetting (with an event) the old one."""
    for other in _same_currency(session, account.id, external.currency):
        if other.id != external.id and other.default_for_currency:
            other.default_for_currency = False
            session.flush()
            _emit(
                session,
                account,
                "updated",
                {
                    "object": external_account_document(other),
                    "previous_attributes": {"default_for_currency": True},
                },
            )
    external.default_for_currency = True


def create_external_account(
    session: Session,
    account: Account,
    details: BankAccountDetails | CardDetails,
    *,
    secret: bytes,
    default_for_currency: bool = False,
    metadata: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> ExternalAccount:
    """Add a bank account or debit card to ``account`` (flushed, with its events).

    Parameters
    ----------
    secret : bytes
        The server secret that keys fingerprints (``services.viewer_secret``).
    default_for_currency : bool
        Make it its currency's default (the first of a currency always is).

    Raises
    ------
    PayoutInputError
        An invalid number, routing number, expiry, currency or country; a credit card.
    DuplicateExternalAccountError
        The account already has it (same fingerprint, not deleted).
    """
    now = now or utcnow()
    external = (
        _new_card(account, details, secret, now)
        if isinstance(details, CardDetails)
        else _new_bank_account(account, details, secret)
    )
    duplicate = session.scalars(
        select(ExternalAccount.id).where(
            ExternalAccount.account_id == account.id,
            ExternalAccount.fingerprint == external.fingerprint,
            ExternalAccount.deleted_at.is_(None),
        )
    ).first()
    if duplicate is not None:
        raise DuplicateExternalAccountError(
            f"account {account.id} already has this {external.object} ({duplicate})"
        )
    # Verification is immediate on the simulated rail.
    external.status = "verified"
    external.extra = dict(metadata or {})
    external.created_at = external.updated_at = now
    first = not _same_currency(session, account.id, external.currency)
    session.add(external)
    session.flush()
    if first or default_for_currency:
        _make_default(session, account, external)
        session.flush()
    _emit(session, account, "created", {"object": external_account_document(external)})
    return external


def update_external_account(
    session: Session,
    account: Account,
    external: ExternalAccount,
    *,
    account_holder_name: str | None = None,
    exp_month: int | None = None,
    exp_year: int | None = None,
    default_for_currency: bool | None = None,
    metadata: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Change an external account; an errored or disabled one is verified again.

    Returns
    -------
    dict
        ``previous_attributes`` of the ``account.external_account.updated`` event.

    Raises
    ------
    PayoutInputError
        An expiry on a bank account, or an invalid or past one.
    ExternalAccountConflictError
        ``default_for_currency: false`` on the default (make another the default).
    """
    now = now or utcnow()
    before = external_account_document(external)
    if account_holder_name is not None:
        external.account_holder_name = account_holder_name
    if exp_month is not None or exp_year is not None:
        if external.object != "card":
            loc = "exp_month" if exp_month is not None else "exp_year"
            raise PayoutInputError((loc,), "only cards have an expiry")
        rail = dict(external.rail_data or {})
        month = exp_month if exp_month is not None else int(rail.get("exp_month") or 0)
        year = exp_year if exp_year is not None else int(rail.get("exp_year") or 0)
        today = now.astimezone(UTC)
        if not 1 <= month <= 12:
            raise PayoutInputError(("exp_month",), "exp_month is 1..12", "invalid_expiry_month")
        if not (today.year, today.month) <= (year, month) <= (today.year + 50, 12):
            raise PayoutInputError(
                ("exp_year",), "the card has expired or its year is not valid",
                "invalid_expiry_year",
            )  # fmt: skip
        external.rail_data = {**rail, "exp_month": month, "exp_year": year}
    if metadata is not None:
        merged = {**(external.extra or {}), **metadata}
        external.extra = {k: v for k, v in merged.items() if v not in ("", None)}
    if default_for_currency is True and not external.default_for_currency:
        _make_default(session, account, external)
    elif default_for_currency is False and external.default_for_currency:
        raise ExternalAccountConflictError(
            "an external account stops being its currency's default when another one becomes it"
        )
    if external.status in BLOCKING:
        # The owner has fixed what was wrong: payouts to it may be tried again.
        external.status = "verified"
    external.updated_at = now
    session.flush()
    after = external_account_document(external)
    previous = {k: v for k, v in before.items() if after.get(k) != v}
    if previous:
        _emit(session, account, "updated", {"object": after, "previous_attributes": previous})
    return previous


def set_external_account_status(
    session: Session,
    account: Account,
    external: ExternalAccount,
    status: Status,
    *,
    reason: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Set the status (e.g. ``errored`` after a payout failed for a closed account).

    Emits ``account.external_account.updated`` (``reason`` in its data); False
    if it already had that status. The caller commits.
    """
    if status not in STATUSES:
        raise ValueError(f"status is one of {', '.join(STATUSES)}")
    previous = external.status
    if previous == status:
        return False
    external.status = status
    external.updated_at = now or utcnow()
    session.flush()
    data: dict[str, Any] = {
        "object": external_account_document(external),
        "previous_attributes": {"status": previous},
    }
    if reason is not None:
        data["reason"] = reason
    _emit(session, account, "updated", data)
    return True


def delete_external_account(
    session: Session, account: Account, external: ExternalAccount, *, now: datetime | None = None
) -> None:
    """Delete (softly: payouts still name it) an external account.

    Raises
    ------
    ExternalAccountConflictError
        It is the default for the account's default currency, or the default of
        a currency that has others (make another one the default first).
    """
    if external.default_for_currency:
        others = [
            e for e in _same_currency(session, account.id, external.currency) if e.id != external.id
        ]
        if external.currency == account.default_currency or others:
            raise ExternalAccountConflictError(
                "the default external account of a currency cannot be deleted while it is "
                "needed: make another one the default first"
            )
    external.deleted_at = now or utcnow()
    external.default_for_currency = False
    session.flush()
    _emit(
        session,
        account,
        "deleted",
        {"object": {**external_account_document(external), "deleted": True}},
    )


def default_external_account(
    session: Session, account_id: str, currency: str
) -> ExternalAccount | None:
    """The default external account of ``currency`` (None if the account has none)."""
    return session.scalars(
        select(ExternalAccount).where(
            ExternalAccount.account_id == account_id,
            ExternalAccount.currency == currency,
            ExternalAccount.default_for_currency.is_(True),
            ExternalAccount.deleted_at.is_(None),
        )
    ).first()
