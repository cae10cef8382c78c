"""Connected accounts, their external accounts and balances, balance transactions, transfers.

Stripe Connect's shapes and words: ``/v1/accounts`` (``settings.payouts.schedule``),
``/v1/accounts/{id}/external_accounts`` (bank accounts and debit cards),
``/v1/accounts/{id}/balance``, ``/v1/balance_transactions`` and ``/v1/transfers``.

Choices:

* Tenancy: an account belongs to an organisation; its campaign-manager keys
  manage it and see its money, admins see every account. Anyone else's account
  answers 404, as a missing one does. Viewer-app keys get 403.
* ``payouts_enabled`` and ``stripe_account_id`` are the platform's to set:
  admin keys only (403 for a manager who sends them).
* External accounts are created from their numbers (Stripe's
  ``external_account`` hash); only ``last4`` and a keyed fingerprint are kept,
  and no answer, event or error ever repeats a full number.
* ``POST /v1/transfers`` moves held revenue (``hold_in_platform``) to the
  account's balance; it honours ``Idempotency-Key`` like ``/v1/match``.
* Money is in integer minor units: a float, a string, zero or a negative
  amount is refused (422) before anything is written. Times are ISO 8601 (UTC).
* Lists are cursor-paginated like the other lists: ``{object: "list", data,
  has_more, next_cursor}``; pass ``next_cursor`` back as ``starting_after``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session, sessionmaker

from acr.auth import Principal
from acr.db.models import Account, ExternalAccount, LedgerTransaction, Organisation, Payout, utcnow
from acr.db.session import write_session
from acr.payouts.accounts import (
    AccountFields,
    PayoutInputError,
    account_document,
    create_account,
    live_external_accounts,
    update_account,
)
from acr.payouts.balance import account_balance, balance_document, balance_transaction_document
from acr.payouts.external_accounts import (
    BankAccountDetails,
    CardDetails,
    DuplicateExternalAccountError,
    ExternalAccountConflictError,
    create_external_account,
    delete_external_account,
    external_account_document,
    update_external_account,
)
from acr.payouts.revenue import (
    InsufficientFundsError,
    UnknownAccountError,
    transfer_document,
    transfer_held,
)
from api.deps import ManagerDep, ServicesDep, SessionDep
from api.idempotent import IdempotencyKey, IdempotentPost, body_fingerprint, replayed_header
from api.pagination import Page, newest_first, unknown_cursor
from api.problems import Problem, not_found, responses

router = APIRouter(prefix="/v1", tags=["accounts"], responses=responses(401, 403))

MAX_MINOR_UNITS = 10**15
"""Largest amount of money accepted (fits a BIGINT with room for sums)."""


def _invalid(loc: list[str | int], msg: str, kind: str = "value_error") -> Problem:
    where = ".".join(str(part) for part in loc)
    code = "validation_error" if kind == "value_error" else kind
    return Problem(422, code, f"{where}: {msg}", errors=[{"loc": loc, "msg": msg, "type": kind}])


def _from_input(error: PayoutInputError) -> Problem:
    return _invalid(["body", *error.loc], error.message, error.code)


# -- request bodies ------------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=40)], Annotated[str, Field(max_length=500)]],
    Field(max_length=50, description="Your key-value pairs; an empty value removes a key"),
]
Currency = Annotated[str, Field(pattern=r"^[A-Za-z]{3}$", description="ISO 4217")]
Country = Annotated[str, Field(pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2")]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
Amount = Annotated[
    StrictInt, Field(gt=0, le=MAX_MINOR_UNITS, description="Minor units, a whole number")
]


class ScheduleIn(Strict):
    interval: Literal["daily", "weekly", "monthly", "manual"] | None = Field(
        default=None, description="daily (rolling; the default) | weekly | monthly | manual"
    )
    delay_days: StrictInt | None = Field(
        default=None, ge=0, le=365, description="Days before revenue is available (default 2)"
    )
    weekly_anchor: Weekday | None = Field(
        default=None, description="Day of a weekly payout (weekly only)"
    )
    monthly_anchor: StrictInt | None = Field(
        default=None, ge=1, le=31, description="Day of a monthly payout; 29–31: the last day"
    )


class PayoutSettingsIn(Strict):
    schedule: ScheduleIn | None = None
    hold_in_platform: bool | None = Field(
        default=None, description="Accumulate revenue in the platform's balance until transferred"
    )


class SettingsIn(Strict):
    payouts: PayoutSettingsIn | None = None


class BusinessProfileIn(Strict):
    name: str | None = Field(default=None, max_length=200)


class AccountUpdate(Strict):
    """Only the fields given change; ``settings.payouts.schedule`` merges into the current one."""

    country: Country | None = None
    default_currency: Currency | None = None
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    business_profile: BusinessProfileIn | None = None
    payouts_enabled: bool | None = Field(default=None, description="Admin keys only")
    settings: SettingsIn | None = None
    stripe_account_id: str | None = Field(
        default=None, max_length=64, description="Admin keys only"
    )
    metadata: Metadata | None = None


class AccountCreate(AccountUpdate):
    organisation_id: str | None = Field(
        default=None,
        max_length=32,
        description="Admin keys name it (none: the platform's own); a manager's is implied",
    )
    country: Country = Field(description="ISO 3166-1 alpha-2")


class BankAccountIn(Strict):
    object: Literal["bank_account"]
    country: Country
    currency: Currency
    account_number: str = Field(min_length=4, max_length=40)
    routing_number: str | None = Field(default=None, max_length=20)
    account_holder_name: str | None = Field(default=None, max_length=200)


class CardIn(Strict):
    object: Literal["card"]
    number: str = Field(min_length=12, max_length=23)
    exp_month: StrictInt
    exp_year: StrictInt
    currency: Currency
    name: str | None = Field(default=None, max_length=200)


class ExternalAccountCreate(Strict):
    external_account: Annotated[BankAccountIn | CardIn, Field(discriminator="object")]
    default_for_currency: bool = False
    metadata: Metadata | None = None


class ExternalAccountUpdate(Strict):
    account_holder_name: str | None = Field(default=None, max_length=200)
    exp_month: StrictInt | None = None
    exp_year: StrictInt | None = None
    default_for_currency: bool | None = None
    metadata: Metadata | None = None


class TransferCreate(Strict):
    amount: Amount
    currency: Currency
    destination: str = Field(max_length=64, description="The connected account")
    description: str | None = Field(default=None, max_length=500)


# -- helpers -------------------------------------------------------------------------------


def _scope(principal: Principal) -> str | None:
    """The organisation a key is confined to (None for admins)."""
    return None if principal.is_admin else principal.organisation_id


def _visible(principal: Principal) -> ColumnElement[bool] | None:
    scope = _scope(principal)
    return None if scope is None else Account.organisation_id == scope


def _find(session: Session, principal: Principal, account_id: str, *, lock: bool) -> Account | None:
    query = select(Account).where(Account.id == account_id)
    visible = _visible(principal)
    if visible is not None:
        query = query.where(visible)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def _account(session: Session, principal: Principal, account_id: str, *, lock: bool) -> Account:
    """The caller's account (404 if it is not theirs), row-locked for a write if asked."""
    account = _find(session, principal, account_id, lock=lock)
    if account is None:
        raise not_found("account", account_id)
    return account


def _external(session: Session, account: Account, external_id: str) -> ExternalAccount:
    external = session.scalars(
        select(ExternalAccount).where(
            ExternalAccount.id == external_id,
            ExternalAccount.account_id == account.id,
            ExternalAccount.deleted_at.is_(None),
        )
    ).first()
    if external is None:
        raise not_found("external account", external_id)
    return external


def _document(session: Session, account: Account) -> dict[str, Any]:
    externals = [external_account_document(e) for e in live_external_accounts(session, account.id)]
    return account_document(account, externals)


def _fields(body: AccountUpdate, principal: Principal) -> AccountFields:
    given = body.model_fields_set
    for name in ("payouts_enabled", "stripe_account_id"):
        if name in given and not principal.is_admin:
            raise Problem(403, "forbidden", f"{name} is set by the platform (admin keys)")
    for name in ("country", "default_currency", "payouts_enabled"):
        if name in given and getattr(body, name) is None:
            raise _invalid(["body", name], "may not be null")
    payouts = body.settings.payouts if body.settings else None
    schedule = (
        payouts.schedule.model_dump(exclude_unset=True) if payouts and payouts.schedule else None
    )
    return AccountFields(
        country=body.country,
        default_currency=body.default_currency,
        business_name=body.business_profile.name if body.business_profile else None,
        email=body.email,
        payouts_enabled=body.payouts_enabled,
        schedule=schedule,
        hold_in_platform=payouts.hold_in_platform if payouts else None,
        stripe_account_id=body.stripe_account_id,
        metadata=body.metadata,
    )


def _listing(data: list[dict[str, Any]], page: Page[Any]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "has_more": page.has_more,
        "next_cursor": page.next_cursor,
    }


Limit = Annotated[int, Query(ge=1, le=100)]
StartingAfter = Annotated[
    str | None, Query(max_length=64, description="An id from the previous page: the page after it")
]


# -- accounts ------------------------------------------------------------------------------


@router.post("/accounts", status_code=201, responses=responses(422))
def create_connected_account(
    body: AccountCreate, principal: ManagerDep, services: ServicesDep
) -> dict[str, Any]:
    """Create a connected account: a content owner who is paid its revenue share."""
    if principal.is_admin:
        organisation_id = body.organisation_id
    else:
        if body.organisation_id not in (None, principal.organisation_id):
            raise _invalid(
                ["body", "organisation_id"], "a campaign manager creates in its own organisation"
            )
        organisation_id = principal.organisation_id
    fields = _fields(body, principal)
    with write_session(services.sessions) as session:
        if organisation_id is not None and session.get(Organisation, organisation_id) is None:
            raise _invalid(["body", "organisation_id"], f"no organisation {organisation_id!r}")
        try:
            account = create_account(session, organisation_id, fields)
        except PayoutInputError as error:
            raise _from_input(error) from None
        document = _document(session, account)
        session.commit()
    return document


@router.get("/accounts", responses=responses(422))
def list_accounts(
    principal: ManagerDep,
    session: SessionDep,
    organisation_id: Annotated[str | None, Query(max_length=32)] = None,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
) -> dict[str, Any]:
    """The caller's connected accounts, newest first."""
    conditions: list[ColumnElement[bool]] = []
    visible = _visible(principal)
    if visible is not None:
        conditions.append(visible)
    if organisation_id is not None:
        conditions.append(Account.organisation_id == organisation_id)
    after = None
    if starting_after is not None:
        after = _find(session, principal, starting_after, lock=False)
        if after is None:
            raise unknown_cursor("account", starting_after)
    page = newest_first(
        session, select(Account).where(*conditions), Account, limit=limit, after=after
    )
    return _listing([_document(session, a) for a in page.rows], page)


@router.get("/accounts/{account_id}", responses=responses(404))
def get_account(account_id: str, principal: ManagerDep, session: SessionDep) -> dict[str, Any]:
    """One connected account with its external accounts."""
    return _document(session, _account(session, principal, account_id, lock=False))


@router.patch("/accounts/{account_id}", responses=responses(404, 422))
def update_connected_account(
    account_id: str, body: AccountUpdate, principal: ManagerDep, services: ServicesDep
) -> dict[str, Any]:
    """Change an account's details or payout settings (emits ``account.updated``)."""
    fields = _fields(body, principal)
    with write_session(services.sessions) as session:
        account = _account(session, principal, account_id, lock=True)
        try:
            update_account(session, account, fields)
        except PayoutInputError as error:
            raise _from_input(error) from None
        document = _document(session, account)
        session.commit()
    return document


@router.get("/accounts/{account_id}/balance", responses=responses(404))
def get_balance(account_id: str, principal: ManagerDep, session: SessionDep) -> dict[str, Any]:
    """The account's balance: ``available``, ``pending`` and ``instant_available`` by currency.

    ``instant_available`` is available plus pending money in each currency in
    which the account has a usable instant-eligible debit card (0 elsewhere);
    ``held`` is revenue kept in the platform's balance for it, to transfer.
    """
    account = _account(session, principal, account_id, lock=False)
    return balance_document(account_balance(session, account, utcnow()), account_id=account.id)


# -- external accounts ---------------------------------------------------------------------


@router.post(
    "/accounts/{account_id}/external_accounts",
    status_code=201,
    responses=responses(404, 409, 422),
)
def create_external(
    account_id: str, body: ExternalAccountCreate, principal: ManagerDep, services: ServicesDep
) -> dict[str, Any]:
    """Add a bank account or debit card (only its last4 and fingerprint are kept)."""
    given = body.external_account
    details: BankAccountDetails | CardDetails
    if isinstance(given, CardIn):
        details = CardDetails(
            number=given.number,
            exp_month=given.exp_month,
            exp_year=given.exp_year,
            currency=given.currency,
            name=given.name,
        )
    else:
        details = BankAccountDetails(
            country=given.country,
            currency=given.currency,
            account_number=given.account_number,
            routing_number=given.routing_number,
            account_holder_name=given.account_holder_name,
        )
    with write_session(services.sessions) as session:
        account = _account(session, principal, account_id, lock=True)
        try:
            external = create_external_account(
                session,
                account,
                details,
                secret=services.viewer_secret,
                default_for_currency=body.default_for_currency,
                metadata=body.metadata,
            )
        except PayoutInputError as error:
            raise _invalid(
                ["body", "external_account", *error.loc], error.message, error.code
            ) from None
        except DuplicateExternalAccountError as error:
            raise Problem(409, "external_account_exists", str(error)) from None
        document = external_account_document(external)
        session.commit()
    return document


@router.get("/accounts/{account_id}/external_accounts", responses=responses(404, 422))
def list_external(
    account_id: str,
    principal: ManagerDep,
    session: SessionDep,
    object: Annotated[Literal["bank_account", "card"] | None, Query()] = None,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
) -> dict[str, Any]:
    """The account's bank accounts and cards, oldest first."""
    account = _account(session, principal, account_id, lock=False)
    rows = live_external_accounts(session, account.id)
    if object is not None:
        rows = [row for row in rows if row.object == object]
    if starting_after is not None:
        ids = [row.id for row in rows]
        if starting_after not in ids:
            raise unknown_cursor("external account", starting_after)
        rows = rows[ids.index(starting_after) + 1 :]
    page = Page(rows[:limit], len(rows) > limit)
    return _listing([external_account_document(e) for e in page.rows], page)


@router.get("/accounts/{account_id}/external_accounts/{external_id}", responses=responses(404))
def get_external(
    account_id: str, external_id: str, principal: ManagerDep, session: SessionDep
) -> dict[str, Any]:
    """One bank account or card."""
    account = _account(session, principal, account_id, lock=False)
    return external_account_document(_external(session, account, external_id))


@router.patch(
    "/accounts/{account_id}/external_accounts/{external_id}",
    responses=responses(404, 409, 422),
)
def update_external(
    account_id: str,
    external_id: str,
    body: ExternalAccountUpdate,
    principal: ManagerDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Change a bank account or card; an errored or disabled one is verified again."""
    if "default_for_currency" in body.model_fields_set and body.default_for_currency is None:
        raise _invalid(["body", "default_for_currency"], "may not be null")
    with write_session(services.sessions) as session:
        account = _account(session, principal, account_id, lock=True)
        external = _external(session, account, external_id)
        try:
            update_external_account(
                session,
                account,
                external,
                account_holder_name=body.account_holder_name,
                exp_month=body.exp_month,
                exp_year=body.exp_year,
                default_for_currency=body.default_for_currency,
                metadata=body.metadata,
            )
        except PayoutInputError as error:
            raise _from_input(error) from None
        except ExternalAccountConflictError as error:
            raise Problem(409, "default_external_account", str(error)) from None
        document = external_account_document(external)
        session.commit()
    return document


@router.delete(
    "/accounts/{account_id}/external_accounts/{external_id}", responses=responses(404, 409)
)
def delete_external(
    account_id: str, external_id: str, principal: ManagerDep, services: ServicesDep
) -> dict[str, Any]:
    """Delete a bank account or card (not the default one while it is needed)."""
    with write_session(services.sessions) as session:
        account = _account(session, principal, account_id, lock=True)
        external = _external(session, account, external_id)
        try:
            delete_external_account(session, account, external)
        except ExternalAccountConflictError as error:
            raise Problem(409, "default_external_account", str(error)) from None
        session.commit()
    return {"id": external_id, "object": external.object, "deleted": True}


# -- balance transactions ------------------------------------------------------------------


@router.get("/balance_transactions", tags=["balance"], responses=responses(404, 422))
def list_balance_transactions(
    principal: ManagerDep,
    session: SessionDep,
    account: Annotated[str | None, Query(max_length=64, description="A connected account")] = None,
    type: Annotated[
        str | None, Query(max_length=32, description="payment, transfer, payout, …")
    ] = None,
    payout: Annotated[
        str | None, Query(max_length=32, description="Only what this payout reconciles")
    ] = None,
    currency: Annotated[str | None, Query(pattern=r"^[A-Za-z]{3}$")] = None,
    limit: Limit = 20,
    starting_after: StartingAfter = None,
) -> dict[str, Any]:
    """Balance transactions of the caller's accounts, newest first.

    Admin keys without ``account`` also see the platform's own (those with no
    account: held and unallocated revenue).
    """
    conditions: list[ColumnElement[bool]] = []
    visible = _visible(principal)
    if visible is not None:
        conditions.append(LedgerTransaction.account_id.in_(select(Account.id).where(visible)))
    if account is not None:
        if _find(session, principal, account, lock=False) is None:
            raise not_found("account", account)
        conditions.append(LedgerTransaction.account_id == account)
    if type is not None:
        conditions.append(LedgerTransaction.type == type)
    if currency is not None:
        conditions.append(LedgerTransaction.currency == currency.lower())
    if payout is not None:
        found = session.get(Payout, payout)
        if found is None or _find(session, principal, found.account_id, lock=False) is None:
            raise not_found("payout", payout)
        conditions.append(LedgerTransaction.id.in_(_reconciled(session, found)))
    after = None
    if starting_after is not None:
        after = session.get(LedgerTransaction, starting_after)
        if after is None:
            raise unknown_cursor("balance transaction", starting_after)
    query = select(LedgerTransaction).where(*conditions)
    page = newest_first(session, query, LedgerTransaction, limit=limit, after=after)
    now = utcnow()
    return _listing([balance_transaction_document(t, now) for t in page.rows], page)


def _reconciled(session: Session, payout: Payout) -> list[str]:
    """Ids of the balance transactions the payouts module says ``payout`` reconciles."""
    from acr.payouts.payouts import reconciliation

    report = reconciliation(session, payout)
    listed = [*report.get("balance_transactions", []), *report.get("settled_transactions", [])]
    return [str(item["id"]) for item in listed]


@router.get("/balance_transactions/{transaction_id}", tags=["balance"], responses=responses(404))
def get_balance_transaction(
    transaction_id: str, principal: ManagerDep, session: SessionDep
) -> dict[str, Any]:
    """One balance transaction."""
    found = session.get(LedgerTransaction, transaction_id)
    if found is None or (
        not principal.is_admin
        and (
            found.account_id is None
            or _find(session, principal, found.account_id, lock=False) is None
        )
    ):
        raise not_found("balance transaction", transaction_id)
    return balance_transaction_document(found, utcnow())


# -- transfers -----------------------------------------------------------------------------


@router.post(
    "/transfers",
    status_code=201,
    tags=["transfers"],
    responses={**replayed_header(201), **responses(409, 422)},
)
def create_transfer(
    body: TransferCreate,
    principal: ManagerDep,
    services: ServicesDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Move revenue held in the platform's balance to the account's balance (available at once).

    Only held revenue that is available can be transferred (409
    ``insufficient_funds`` otherwise). With an ``Idempotency-Key``, a retry
    returns the first answer and moves nothing again.
    """
    post = IdempotentPost(
        services.sessions,
        principal.key_id,
        idempotency_key,
        "/v1/transfers",
        body_fingerprint(body),
    )
    if (replayed := post.replay(response)) is not None:
        return replayed
    with post.released_on_error():
        return _transfer(body, principal, services.sessions, post)


def _transfer(
    body: TransferCreate,
    principal: Principal,
    sessions: sessionmaker[Session],
    post: IdempotentPost,
) -> dict[str, Any]:
    with write_session(sessions) as session:
        if _find(session, principal, body.destination, lock=False) is None:
            raise _invalid(
                ["body", "destination"],
                f"no connected account {body.destination!r}",
                "no_such_destination",
            )
        try:
            transaction = transfer_held(
                session,
                body.destination,
                body.amount,
                body.currency.lower(),
                description=body.description or "",
            )
        except PayoutInputError as error:
            raise _from_input(error) from None
        except UnknownAccountError as error:
            raise _invalid(["body", "destination"], str(error), "no_such_destination") from None
        except InsufficientFundsError as error:
            raise Problem(409, "insufficient_funds", str(error)) from None
        document = transfer_document(transaction)
        post.complete(session, 201, document)
        session.commit()
    return document
