"""Connected accounts: balances, bank accounts and cards, payouts, and lifting a payout block.

Who sees what is the JSON API's rule (:mod:`api.routers.accounts`): a campaign
manager sees its organisation's accounts, an admin every account.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from acr.auth import Principal
from acr.payouts.external_accounts import BLOCKING
from api.dashboard.pages import PREFIX, PageRoute, parse_amount, render
from api.dashboard.session import FormDep, VisitorDep
from api.deps import ServicesDep, SessionDep
from api.problems import Problem
from api.routers import accounts as accounts_api
from api.routers import payouts as payouts_api

router = APIRouter(route_class=PageRoute)

NOTICES = {
    "updated": "External account updated: payouts to it may be made again.",
    "paid_out": "Payout created: it is on its way to the bank.",
}


def _amounts(balance: dict[str, Any], kind: str) -> dict[str, int]:
    return {item["currency"]: item["amount"] for item in balance[kind]}


def _summary(principal: Principal, session: Session, account: dict[str, Any]) -> dict[str, Any]:
    """An account with its balance by currency and its blocked external accounts."""
    balance = accounts_api.get_balance(account["id"], principal, session)
    externals = account["external_accounts"]["data"]
    return {
        "account": account,
        "available": _amounts(balance, "available"),
        "pending": _amounts(balance, "pending"),
        "held": _amounts(balance, "held"),
        "externals": externals,
        "blocked": [e for e in externals if e["status"] in BLOCKING],
    }


@router.get("/payouts")
def accounts_page(request: Request, visitor: VisitorDep, session: SessionDep) -> Response:
    accounts = accounts_api.list_accounts(
        visitor.principal, session, organisation_id=None, limit=100, starting_after=None
    )
    return render(
        request,
        "accounts.html",
        {"summaries": [_summary(visitor.principal, session, a) for a in accounts["data"]]},
    )


def _account_page(
    request: Request,
    principal: Principal,
    session: Session,
    account_id: str,
    *,
    notice: str = "",
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    account = accounts_api.get_account(account_id, principal, session)
    payouts = payouts_api.list_payouts(
        principal,
        session,
        account=account_id,
        status=None,
        automatic=None,
        arrival_date_gte=None,
        arrival_date_lt=None,
        limit=50,
        starting_after=None,
    )
    return render(
        request,
        "account.html",
        {
            **_summary(principal, session, account),
            "payouts": payouts.data,
            "notice": notice,
            "errors": errors or {},
            "values": values or {},
            # A new key per form shown: a double-click or a resent form pays out once.
            "idempotency_key": secrets.token_urlsafe(18),
        },
        status_code=status_code,
    )


@router.get("/payouts/{account_id}")
def account_page(
    request: Request, account_id: str, visitor: VisitorDep, session: SessionDep, notice: str = ""
) -> Response:
    return _account_page(
        request, visitor.principal, session, account_id, notice=NOTICES.get(notice, "")
    )


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _refused(
    request: Request,
    services: ServicesDep,
    principal: Principal,
    account_id: str,
    form: FormData,
    errors: dict[str, str],
    status_code: int,
) -> Response:
    values = {key: value for key, value in form.items() if isinstance(value, str)}
    with services.sessions() as session:
        return _account_page(
            request,
            principal,
            session,
            account_id,
            errors=errors,
            values=values,
            status_code=status_code,
        )


@router.post("/payouts/{account_id}/external_accounts/{external_id}")
def update_external(
    request: Request,
    account_id: str,
    external_id: str,
    visitor: VisitorDep,
    services: ServicesDep,
    form: FormDep,
) -> Response:
    given = {
        name: _text(form, name)
        for name in ("account_holder_name", "exp_month", "exp_year")
        if _text(form, name)
    }
    key = f"external.{external_id}"
    try:
        body = accounts_api.ExternalAccountUpdate.model_validate(given)
        accounts_api.update_external(account_id, external_id, body, visitor.principal, services)
    except ValidationError as error:
        first = error.errors()[0]
        message = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return _refused(request, services, visitor.principal, account_id, form, {key: message}, 422)
    except Problem as problem:
        if problem.status not in (409, 422):
            raise
        return _refused(
            request,
            services,
            visitor.principal,
            account_id,
            form,
            {key: problem.detail},
            problem.status,
        )
    return RedirectResponse(f"{PREFIX}/payouts/{account_id}?notice=updated", status_code=303)


@router.post("/payouts/{account_id}/payouts")
def pay_out(
    request: Request,
    account_id: str,
    visitor: VisitorDep,
    services: ServicesDep,
    form: FormDep,
) -> Response:
    currency = _text(form, "currency") or "usd"
    try:
        amount = parse_amount(_text(form, "amount"), currency)
        body = payouts_api.PayoutCreate(account=account_id, amount=amount, currency=currency)
        payouts_api.create(
            body,
            visitor.principal,
            services,
            Response(),
            idempotency_key=_text(form, "idempotency_key") or None,
        )
    except (ValueError, ValidationError) as error:
        return _refused(
            request, services, visitor.principal, account_id, form, {"payout": str(error)}, 422
        )
    except Problem as problem:
        if problem.status not in (409, 422):
            raise
        return _refused(
            request,
            services,
            visitor.principal,
            account_id,
            form,
            {"payout": f"{problem.detail} ({problem.code})"},
            problem.status,
        )
    return RedirectResponse(f"{PREFIX}/payouts/{account_id}?notice=paid_out", status_code=303)
