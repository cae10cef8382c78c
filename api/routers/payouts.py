"""``/v1/payouts``: money from connected accounts' balances to their banks and cards.

Choices:

* Tenancy: a campaign_manager key sees and makes payouts only for accounts of
  its organisation (``Account.organisation_id``); another organisation's
  payout or account answers 404, as a missing one does. Admins see all.
  Viewer-app keys get 403.
* ``POST /v1/payouts`` and ``POST /v1/payouts/{id}/cancel`` move money and honour
  ``Idempotency-Key``: the same key and body replay the first response
  (``Idempotent-Replayed: true``); the same key with another body is 409
  ``idempotency_mismatch``. A refused request releases its key, so a retry
  after fixing the cause (funding the balance, updating the bank account) works.
* ``amount`` is an integer in the currency's minor unit; a fractional or
  non-positive amount is 422 ``invalid_amount``. Refusals have stable codes:
  ``invalid_currency``, ``currency_mismatch``, ``no_such_destination``,
  ``no_external_account``, ``instant_ineligible`` (422); ``payouts_blocked``,
  ``external_account_disabled``, ``insufficient_funds``,
  ``payout_not_cancelable`` (409). None changes the ledger.
* Times are ISO 8601 datetimes in UTC, as elsewhere in this API (Stripe's
  unix timestamps are not used). ``fee`` is the instant payout fee, also its
  own ``payout_fee`` balance transaction.
* Lists are cursor-paginated, newest first: ``{object: "list", data, has_more,
  next_cursor}``; pass ``next_cursor`` back as ``starting_after``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.encoders import jsonable_encoder
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictFloat, StrictInt
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from acr import idempotency
from acr.auth import Principal
from acr.db.models import Account, Payout, utcnow
from acr.db.session import write_session
from acr.payouts.payouts import (
    PayoutError,
    PayoutRequest,
    cancel_payout,
    create_payout,
    payout_document,
    payout_terms,
    reconciliation,
)
from api.deps import ManagerDep, ServicesDep, SessionDep
from api.idempotent import IdempotencyKey, IdempotentPost, body_fingerprint, replayed_header
from api.pagination import newest_first, unknown_cursor
from api.problems import Problem, not_found, responses

router = APIRouter(prefix="/v1/payouts", tags=["payouts"], responses=responses(401, 403))

Status = Literal["pending", "in_transit", "paid", "failed", "canceled"]


class PayoutCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str = Field(max_length=64, description="The connected account paid out")
    amount: StrictInt | StrictFloat = Field(
        description="Positive integer, in the currency's minor unit (cents)"
    )
    currency: str = Field(min_length=1, max_length=16, description="ISO 4217, e.g. usd")
    destination: str | None = Field(
        default=None,
        max_length=32,
        description="An external account (ba_… or card_…); its default for the currency if none",
    )
    method: Literal["standard", "instant"] = Field(
        default="standard", description="instant: to an eligible debit card within 30 minutes"
    )
    description: str | None = Field(default=None, max_length=500)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)


class PayoutView(BaseModel):
    id: str
    object: Literal["payout"] = "payout"
    account: str
    amount: int
    arrival_date: datetime
    automatic: bool
    balance_transaction: str | None
    created: datetime
    currency: str
    description: str | None
    destination: str
    failure_balance_transaction: str | None
    failure_code: str | None
    failure_message: str | None
    fee: int
    metadata: dict[str, Any]
    method: Literal["standard", "instant"]
    status: Status
    type: Literal["bank_account", "card"]


class PayoutList(BaseModel):
    object: Literal["list"] = "list"
    data: list[PayoutView]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as starting_after for the next page")


class BalanceTransactionView(BaseModel):
    id: str
    object: Literal["balance_transaction"] = "balance_transaction"
    type: str
    source: str
    amount: int
    fee: int
    net: int
    currency: str
    available_on: datetime
    created: datetime
    description: str


class ReconciliationTotals(BaseModel):
    payout_net: int = Field(description="Net of the payout's own transactions on the balance")
    settled_net: int = Field(description="Net of the transactions an automatic payout settled")


class ReconciliationView(BaseModel):
    object: Literal["payout_reconciliation"] = "payout_reconciliation"
    payout: str
    account: str
    currency: str
    status: Status
    amount: int
    fee: int
    balance_transactions: list[BalanceTransactionView] = Field(
        description="The payout's own: payout, payout_fee, payout_paid, payout_failure, cancel"
    )
    settled_transactions: list[BalanceTransactionView] = Field(
        description="For an automatic payout, the balance transactions it paid out"
    )
    totals: ReconciliationTotals


def _view(payout: Payout) -> PayoutView:
    return PayoutView.model_validate(payout_document(payout))


def _problem(error: PayoutError) -> Problem:
    if error.code == "no_such_account":
        return Problem(404, "not_found", error.message)
    errors = None
    if error.status == 422 and error.param is not None:
        errors = [{"loc": ["body", error.param], "msg": error.message, "type": error.code}]
    return Problem(error.status, error.code, error.message, errors=errors)


def _scope(principal: Principal) -> str | None:
    return None if principal.is_admin else principal.organisation_id


def _check_account(session: Session, principal: Principal, account_id: str) -> Account:
    account = session.get(Account, account_id)
    scope = _scope(principal)
    if account is None or (scope is not None and account.organisation_id != scope):
        raise not_found("account", account_id)
    return account


def _load(session: Session, principal: Principal, payout_id: str) -> Payout:
    query = select(Payout).where(Payout.id == payout_id)
    scope = _scope(principal)
    if scope is not None:
        query = query.join(Account, Account.id == Payout.account_id).where(
            Account.organisation_id == scope
        )
    payout = session.scalars(query).first()
    if payout is None:
        raise not_found("payout", payout_id)
    return payout


@router.post(
    "",
    status_code=201,
    response_model=PayoutView,
    responses={**replayed_header(201), **responses(404, 409, 422)},
)
def create(
    body: PayoutCreate,
    principal: ManagerDep,
    services: ServicesDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Pay out part of an account's balance now (standard, or instant to a debit card)."""
    post = IdempotentPost(
        services.sessions, principal.key_id, idempotency_key, "/v1/payouts", body_fingerprint(body)
    )
    if (replayed := post.replay(response)) is not None:
        return replayed
    with post.released_on_error(), write_session(services.sessions) as session:
        _check_account(session, principal, body.account)
        try:
            payout = create_payout(
                session,
                PayoutRequest(
                    account_id=body.account,
                    amount=body.amount,  # type: ignore[arg-type] # floats refused inside
                    currency=body.currency,
                    destination=body.destination,
                    method=body.method,
                    description=body.description,
                    metadata=body.metadata,
                ),
                terms=payout_terms(services.settings),
            )
        except PayoutError as error:
            raise _problem(error) from None
        document: dict[str, Any] = jsonable_encoder(_view(payout))
        post.complete(session, 201, document)
        session.commit()
    return document


@router.get("", response_model=PayoutList, responses=responses(422))
def list_payouts(
    principal: ManagerDep,
    session: SessionDep,
    account: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[list[Status] | None, Query(description="Any of these statuses")] = None,
    automatic: bool | None = None,
    arrival_date_gte: Annotated[AwareDatetime | None, Query(description="Inclusive")] = None,
    arrival_date_lt: Annotated[AwareDatetime | None, Query(description="Exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[
        str | None, Query(max_length=32, description="A payout id: the page after it")
    ] = None,
) -> PayoutList:
    """The caller's payouts, newest first, a page at a time."""
    conditions: list[ColumnElement[bool]] = []
    scope = _scope(principal)
    query = select(Payout)
    if scope is not None:
        query = query.join(Account, Account.id == Payout.account_id)
        conditions.append(Account.organisation_id == scope)
    if account is not None:
        conditions.append(Payout.account_id == account)
    if status:
        conditions.append(Payout.status.in_(status))
    if automatic is not None:
        conditions.append(Payout.automatic.is_(automatic))
    if arrival_date_gte is not None:
        conditions.append(Payout.arrival_date >= arrival_date_gte)
    if arrival_date_lt is not None:
        conditions.append(Payout.arrival_date < arrival_date_lt)
    after = None
    if starting_after is not None:
        try:
            after = _load(session, principal, starting_after)
        except Problem:
            raise unknown_cursor("payout", starting_after) from None
    page = newest_first(session, query.where(*conditions), Payout, limit=limit, after=after)
    return PayoutList(
        data=[_view(payout) for payout in page.rows],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/{payout_id}", response_model=PayoutView, responses=responses(404))
def get_payout(payout_id: str, principal: ManagerDep, session: SessionDep) -> PayoutView:
    """One payout."""
    return _view(_load(session, principal, payout_id))


@router.post(
    "/{payout_id}/cancel",
    response_model=PayoutView,
    responses={**replayed_header(200), **responses(404, 409, 422)},
)
def cancel(
    payout_id: str,
    principal: ManagerDep,
    services: ServicesDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Cancel a pending manual payout: its amount (and fee) returns to the balance."""
    path = f"/v1/payouts/{payout_id}/cancel"
    post = IdempotentPost(
        services.sessions,
        principal.key_id,
        idempotency_key,
        path,
        idempotency.request_fingerprint(path),
    )
    if (replayed := post.replay(response)) is not None:
        return replayed
    with post.released_on_error(), write_session(services.sessions) as session:
        _load(session, principal, payout_id)
        try:
            payout = cancel_payout(session, payout_id, now=utcnow())
        except PayoutError as error:
            raise _problem(error) from None
        except LookupError:
            raise not_found("payout", payout_id) from None
        document: dict[str, Any] = jsonable_encoder(_view(payout))
        post.complete(session, 200, document)
        session.commit()
    return document


@router.get(
    "/{payout_id}/reconciliation", response_model=ReconciliationView, responses=responses(404)
)
def get_reconciliation(
    payout_id: str, principal: ManagerDep, session: SessionDep
) -> ReconciliationView:
    """The payout's balance transactions and, for an automatic payout, what it settled."""
    payout = _load(session, principal, payout_id)
    return ReconciliationView.model_validate(reconciliation(session, payout))
