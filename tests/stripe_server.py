"""A local server speaking Stripe's API wire protocol, for the Stripe rail's tests.

Stripe cannot be reached from the tests, so this stands in for it, implementing
only what :mod:`acr.payouts.rails.stripe_rail` uses, the way Stripe does it:

* form-encoded request bodies with bracketed nesting
  (``settings[payouts][schedule][interval]=weekly``, ``metadata[acr_payout]=po_…``);
* ``Authorization: Bearer sk_test_…`` (any other key: 401 with Stripe's error JSON);
* ``Stripe-Account: acct_…`` to act on a connected account;
* ``Idempotency-Key`` on POSTs: the same key with the same parameters replays the
  first response (``Idempotent-Replayed: true``), with other parameters or another
  endpoint it is a 400 ``idempotency_error``; keys are scoped to the account;
* Stripe's object shapes and its errors,
  ``{"error": {"type", "code", "message", "param"}}`` with Stripe's statuses.

Endpoints: ``POST /v1/transfers``, ``GET /v1/transfers``,
``POST /v1/transfers/{id}/reversals``, ``POST /v1/payouts``, ``GET /v1/payouts/{id}``,
``POST /v1/payouts/{id}/cancel``, ``POST /v1/accounts/{id}``.

Tests drive it through :class:`StripeServer`: :meth:`~StripeServer.fail_next`
makes the next matching request answer an error or hang past the client's
timeout, :meth:`~StripeServer.settle` pays or fails a payout, and
:meth:`~StripeServer.webhook` builds the event Stripe would then send, signed
as Stripe signs it (``Stripe-Signature: t=…,v1=…``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API_KEY = "sk_test_acr_local"
WEBHOOK_SECRET = "whsec_acr_local_test"
API_VERSION = "2025-01-27.acacia"


class StripeApiError(Exception):
    """Answer with Stripe's error JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": type, "message": message}
        if code is not None:
            self.body["code"] = code
        if param is not None:
            self.body["param"] = param

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.body}, status_code=self.status)


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracketed form keys to nested dicts (``a[b][c]=v``); ``a[0]`` to lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    nested: dict[str, Any] = _lists(root)
    return nested


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        if node and all(key.isdigit() for key in node):
            return [_lists(node[key]) for key in sorted(node, key=int)]
        return {key: _lists(value) for key, value in node.items()}
    return node


@dataclass
class Fault:
    method: str
    path: str
    status: int | None
    """Answer this status with Stripe's error JSON; None: hang for ``delay``."""
    delay: float = 0.0
    type: str = "api_error"
    code: str | None = None
    after: bool = False
    """Do the work first and then fail (the client cannot know it succeeded)."""


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    params: dict[str, Any]


@dataclass
class StripeState:
    """What the server knows: accounts, balances, objects, idempotency keys."""

    platform_balance: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    balances: dict[str, dict[str, int]] = field(default_factory=dict)
    """Connected account → currency → available."""
    external_accounts: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    payouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    payout_account: dict[str, str] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], tuple[str, int, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}{next(_ids):04d}"


def _int(params: dict[str, Any], name: str) -> int:
    raw = params.get(name)
    if raw is None:
        raise StripeApiError(
            400, f"Missing required param: {name}.", code="parameter_missing", param=name
        )
    try:
        value = int(raw)
    except ValueError:
        raise StripeApiError(
            400, f"Invalid integer: {raw}", code="parameter_invalid_integer", param=name
        ) from None
    if value <= 0:
        raise StripeApiError(
            400,
            "This value must be greater than or equal to 1.",
            code="parameter_invalid_integer",
            param=name,
        )
    return value


def _empty_list(url: str) -> dict[str, Any]:
    return {"object": "list", "data": [], "has_more": False, "url": url}


class StripeApp:
    """The ASGI app over a :class:`StripeState`."""

    def __init__(self, state: StripeState) -> None:
        self.state = state
        routes = [
            Route("/v1/transfers", self.dispatch, methods=["GET", "POST"]),
            Route("/v1/transfers/{id}/reversals", self.dispatch, methods=["POST"]),
            Route("/v1/payouts", self.dispatch, methods=["POST"]),
            Route("/v1/payouts/{id}", self.dispatch, methods=["GET"]),
            Route("/v1/payouts/{id}/cancel", self.dispatch, methods=["POST"]),
            Route("/v1/accounts/{id}", self.dispatch, methods=["POST"]),
        ]
        self.app = Starlette(routes=routes)

    async def dispatch(self, request: Request) -> Response:
        state = self.state
        method, path = request.method, request.url.path
        if request.method == "POST":
            body = (await request.body()).decode()
            pairs = parse_qsl(body, keep_blank_values=True)
        else:
            pairs = parse_qsl(request.url.query, keep_blank_values=True)
        params = parse_form(pairs)
        headers = {k.lower(): v for k, v in request.headers.items()}
        with state.lock:
            state.requests.append(Recorded(method, path, headers, params))
            fault = next(
                (f for f in state.faults if f.method == method and path.startswith(f.path)), None
            )
            if fault is not None:
                state.faults.remove(fault)
        if fault is not None and not fault.after:
            if fault.status is None:
                await asyncio.sleep(fault.delay)
                return JSONResponse({"error": {"type": "api_error", "message": "too late"}}, 500)
            return StripeApiError(
                fault.status, "Injected failure", type=fault.type, code=fault.code
            ).response()
        auth = headers.get("authorization", "")
        if auth != f"Bearer {API_KEY}":
            return StripeApiError(
                401, f"Invalid API Key provided: {auth.removeprefix('Bearer ')[:8]}****"
            ).response()
        account = headers.get("stripe-account")
        key = headers.get("idempotency-key")
        fingerprint = json.dumps([method, path, params], sort_keys=True)
        scope = account or "platform"
        with state.lock:
            if method == "POST" and key is not None:
                seen = state.idempotency.get((scope, key))
                if seen is not None:
                    if seen[0] != fingerprint:
                        return StripeApiError(
                            400,
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{key}' if you meant to execute a different request.",
                            type="idempotency_error",
                        ).response()
                    return JSONResponse(seen[2], seen[1], headers={"Idempotent-Replayed": "true"})
            try:
                if account is not None and account not in state.accounts:
                    raise StripeApiError(
                        403,
                        f"The provided key does not have access to account '{account}' "
                        "(or that account does not exist).",
                        code="account_invalid",
                    )
                status, result = 200, self._route(method, path, request, params, account)
            except StripeApiError as error:
                status, result = error.status, {"error": error.body}
            # Stripe stores the outcome of a request that ran, errors included (not 5xx).
            if method == "POST" and key is not None and status < 500:
                state.idempotency[(scope, key)] = (fingerprint, status, result)
        if fault is not None and fault.after:
            return StripeApiError(500, "Injected failure after the work").response()
        return JSONResponse(result, status)

    # -- the endpoints (called with the state locked) ---------------------------------------

    def _route(
        self, method: str, path: str, request: Request, params: dict[str, Any], account: str | None
    ) -> dict[str, Any]:
        ident = request.path_params.get("id")
        if path == "/v1/transfers":
            return self.create_transfer(params) if method == "POST" else self.list_transfers(params)
        if path.startswith("/v1/transfers/"):
            return self.reverse_transfer(str(ident), params)
        if path == "/v1/payouts":
            return self.create_payout(params, account)
        if path.endswith("/cancel"):
            return self.cancel_payout(str(ident), account)
        if path.startswith("/v1/payouts/"):
            return self.payout(str(ident), account)
        return self.update_account(str(ident), params)

    def create_transfer(self, params: dict[str, Any]) -> dict[str, Any]:
        amount = _int(params, "amount")
        currency = str(params.get("currency", "")).lower()
        destination = params.get("destination")
        if destination not in self.state.accounts:
            raise StripeApiError(
                400,
                f"No such destination: '{destination}'",
                code="resource_missing",
                param="destination",
            )
        if self.state.platform_balance.get(currency, 0) < amount:
            raise StripeApiError(
                400,
                "You have insufficient available funds in your Stripe account.",
                code="balance_insufficient",
            )
        self.state.platform_balance[currency] -= amount
        balance = self.state.balances.setdefault(str(destination), {})
        balance[currency] = balance.get(currency, 0) + amount
        transfer_id = new_id("tr")
        transfer = {
            "id": transfer_id,
            "object": "transfer",
            "amount": amount,
            "amount_reversed": 0,
            "balance_transaction": new_id("txn"),
            "created": int(time.time()),
            "currency": currency,
            "description": params.get("description"),
            "destination": destination,
            "destination_payment": new_id("py"),
            "livemode": False,
            "metadata": params.get("metadata", {}),
            "reversals": _empty_list(f"/v1/transfers/{transfer_id}/reversals"),
            "reversed": False,
            "source_transaction": None,
            "source_type": "card",
            "transfer_group": params.get("transfer_group"),
        }
        self.state.transfers[transfer_id] = transfer
        return transfer

    def list_transfers(self, params: dict[str, Any]) -> dict[str, Any]:
        found = [
            t
            for t in reversed(self.state.transfers.values())
            if all(
                params.get(name) is None or t[name] == params[name]
                for name in ("destination", "transfer_group")
            )
        ]
        limit = int(params.get("limit", 10))
        listing = _empty_list("/v1/transfers")
        listing.update(data=found[:limit], has_more=len(found) > limit)
        return listing

    def reverse_transfer(self, transfer_id: str, params: dict[str, Any]) -> dict[str, Any]:
        transfer = self.state.transfers.get(transfer_id)
        if transfer is None:
            raise StripeApiError(
                404, f"No such transfer: '{transfer_id}'", code="resource_missing", param="id"
            )
        remaining = transfer["amount"] - transfer["amount_reversed"]
        amount = int(params.get("amount", remaining))
        if amount > remaining or amount <= 0:
            raise StripeApiError(
                400, "Transfer has already been reversed.", code="transfer_already_reversed"
            )
        currency, destination = transfer["currency"], transfer["destination"]
        balance = self.state.balances.setdefault(destination, {})
        balance[currency] = balance.get(currency, 0) - amount
        self.state.platform_balance[currency] = (
            self.state.platform_balance.get(currency, 0) + amount
        )
        transfer["amount_reversed"] += amount
        transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
        reversal = {
            "id": new_id("trr"),
            "object": "transfer_reversal",
            "amount": amount,
            "balance_transaction": new_id("txn"),
            "created": int(time.time()),
            "currency": currency,
            "metadata": params.get("metadata", {}),
            "transfer": transfer_id,
        }
        transfer["reversals"]["data"].append(reversal)
        return reversal

    def create_payout(self, params: dict[str, Any], account: str | None) -> dict[str, Any]:
        if account is None:
            raise StripeApiError(400, "This test server pays out connected accounts only.")
        amount = _int(params, "amount")
        currency = str(params.get("currency", "")).lower()
        method = params.get("method", "standard")
        if method not in ("standard", "instant"):
            raise StripeApiError(
                400, f"Invalid method: {method}", code="parameter_invalid_string", param="method"
            )
        destination = params.get("destination")
        external = self.state.external_accounts.get(account, {}).get(str(destination))
        if external is None:
            raise StripeApiError(
                404,
                f"No such external account: '{destination}'",
                code="resource_missing",
                param="destination",
            )
        if method == "instant" and external["object"] != "card":
            raise StripeApiError(
                400,
                "Instant payouts are only supported for debit cards.",
                code="instant_payouts_unsupported",
                param="method",
            )
        balance = self.state.balances.setdefault(account, {})
        if balance.get(currency, 0) < amount:
            raise StripeApiError(
                400,
                "You have insufficient funds in your Stripe account for this transfer.",
                code="balance_insufficient",
            )
        balance[currency] -= amount
        now = int(time.time())
        payout_id = new_id("po")
        payout = {
            "id": payout_id,
            "object": "payout",
            "amount": amount,
            "application_fee": None,
            "application_fee_amount": None,
            "arrival_date": now + (0 if method == "instant" else 2 * 86400),
            "automatic": False,
            "balance_transaction": new_id("txn"),
            "created": now,
            "currency": currency,
            "description": params.get("description"),
            "destination": destination,
            "failure_balance_transaction": None,
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": params.get("metadata", {}),
            "method": method,
            "original_payout": None,
            "reconciliation_status": "not_applicable",
            "reversed_by": None,
            "source_type": "card",
            "statement_descriptor": None,
            "status": "pending",
            "type": external["object"],
        }
        self.state.payouts[payout_id] = payout
        self.state.payout_account[payout_id] = account
        return payout

    def _payout_of(self, payout_id: str, account: str | None) -> dict[str, Any]:
        payout = self.state.payouts.get(payout_id)
        if payout is None or self.state.payout_account[payout_id] != account:
            raise StripeApiError(
                404, f"No such payout: '{payout_id}'", code="resource_missing", param="id"
            )
        return payout

    def payout(self, payout_id: str, account: str | None) -> dict[str, Any]:
        return self._payout_of(payout_id, account)

    def cancel_payout(self, payout_id: str, account: str | None) -> dict[str, Any]:
        payout = self._payout_of(payout_id, account)
        if payout["status"] != "pending":
            raise StripeApiError(400, "Payouts can only be canceled while they are pending.")
        payout["status"] = "canceled"
        payout["failure_balance_transaction"] = new_id("txn")
        balance = self.state.balances.setdefault(str(account), {})
        balance[payout["currency"]] = balance.get(payout["currency"], 0) + payout["amount"]
        return payout

    def update_account(self, account_id: str, params: dict[str, Any]) -> dict[str, Any]:
        account = self.state.accounts.get(account_id)
        if account is None:
            raise StripeApiError(
                404, f"No such account: '{account_id}'", code="resource_missing", param="account"
            )
        prefix = "settings[payouts][schedule]"
        schedule = dict(params.get("settings", {}).get("payouts", {}).get("schedule", {}))
        interval = schedule.get("interval", account["settings"]["payouts"]["schedule"]["interval"])
        if interval not in ("daily", "weekly", "monthly", "manual"):
            raise StripeApiError(
                400,
                f"Invalid interval: {interval}",
                code="parameter_invalid_string",
                param=f"{prefix}[interval]",
            )
        if interval == "weekly" and "weekly_anchor" not in schedule:
            raise StripeApiError(
                400,
                "You must specify a weekly anchor for weekly schedules.",
                code="parameter_missing",
                param=f"{prefix}[weekly_anchor]",
            )
        if interval == "monthly" and "monthly_anchor" not in schedule:
            raise StripeApiError(
                400,
                "You must specify a monthly anchor for monthly schedules.",
                code="parameter_missing",
                param=f"{prefix}[monthly_anchor]",
            )
        for name in ("delay_days", "monthly_anchor"):
            if name in schedule:
                schedule[name] = int(schedule[name])
        account["settings"]["payouts"]["schedule"].update(schedule)
        return account


class StripeServer:
    """The app run by uvicorn on a free local port, with controls for tests."""

    def __init__(self) -> None:
        self.state = StripeState()
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifetime ----------------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[StripeServer]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(StripeApp(self.state).app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the Stripe test server did not start")
            time.sleep(0.01)
        try:
            yield self
        finally:
            self._server.should_exit = True
            self._thread.join(timeout=5)
            sock.close()

    def reset(self) -> None:
        """Forget everything (between tests sharing one server)."""
        with self.state.lock:
            fresh = StripeState()
            for name in (
                "platform_balance",
                "accounts",
                "balances",
                "external_accounts",
                "transfers",
                "payouts",
                "payout_account",
                "idempotency",
                "requests",
                "faults",
            ):
                setattr(self.state, name, getattr(fresh, name))

    # -- fixtures of the Stripe side ------------------------------------------------------

    def fund_platform(self, currency: str, amount: int) -> None:
        with self.state.lock:
            balance = self.state.platform_balance
            balance[currency] = balance.get(currency, 0) + amount

    def add_account(self, account_id: str | None = None, country: str = "US") -> str:
        """A connected account (``acct_…``) with a daily schedule."""
        account_id = account_id or new_id("acct")
        with self.state.lock:
            self.state.accounts[account_id] = {
                "id": account_id,
                "object": "account",
                "charges_enabled": True,
                "country": country,
                "created": int(time.time()),
                "default_currency": "usd",
                "details_submitted": True,
                "payouts_enabled": True,
                "type": "custom",
                "metadata": {},
                "settings": {
                    "payouts": {
                        "debit_negative_balances": False,
                        "schedule": {"delay_days": 2, "interval": "daily"},
                        "statement_descriptor": None,
                    }
                },
            }
        return account_id

    def add_external_account(self, account_id: str, kind: str = "bank_account") -> str:
        prefix = "ba" if kind == "bank_account" else "card"
        external_id = new_id(prefix)
        with self.state.lock:
            self.state.external_accounts.setdefault(account_id, {})[external_id] = {
                "id": external_id,
                "object": kind,
                "account": account_id,
                "last4": "6789",
            }
        return external_id

    # -- controls ----------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path: str,
        status: int | None = 500,
        *,
        delay: float = 0.0,
        type: str = "api_error",
        code: str | None = None,
        after: bool = False,
    ) -> None:
        """The next ``method`` request under ``path`` answers ``status`` (None: hangs)."""
        with self.state.lock:
            self.state.faults.append(Fault(method, path, status, delay, type, code, after))

    def requests_to(self, method: str, path: str) -> list[Recorded]:
        with self.state.lock:
            return [r for r in self.state.requests if r.method == method and r.path == path]

    def settle(
        self, payout_id: str, status: str, failure_code: str | None = None
    ) -> dict[str, Any]:
        """Move a payout to ``paid`` or ``failed`` as the bank reports; return it."""
        with self.state.lock:
            payout = self.state.payouts[payout_id]
            payout["status"] = status
            if status == "failed":
                payout["failure_code"] = failure_code or "could_not_process"
                payout["failure_message"] = f"The bank reported {payout['failure_code']}."
                payout["failure_balance_transaction"] = new_id("txn")
                account = self.state.payout_account[payout_id]
                balance = self.state.balances.setdefault(account, {})
                balance[payout["currency"]] = balance.get(payout["currency"], 0) + payout["amount"]
            settled: dict[str, Any] = json.loads(json.dumps(payout))
            return settled

    def webhook(
        self,
        event_type: str,
        payout_id: str,
        *,
        event_id: str | None = None,
        secret: str = WEBHOOK_SECRET,
        timestamp: int | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers Stripe would POST to a webhook endpoint for this payout."""
        with self.state.lock:
            payout = json.loads(json.dumps(self.state.payouts[payout_id]))
            account = self.state.payout_account[payout_id]
        event = {
            "id": event_id or new_id("evt"),
            "object": "event",
            "account": account,
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": payout},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        payload = json.dumps(event, indent=2).encode()
        return payload, {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": sign(payload, secret, timestamp),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Stripe's ``Stripe-Signature`` header: HMAC-SHA256 of ``"<t>.<payload>"``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"
