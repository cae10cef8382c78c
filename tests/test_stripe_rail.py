"""The Stripe rail against a local server speaking Stripe's API, and inbound Stripe webhooks.

The server (:mod:`tests.stripe_server`) runs once for the module on a free local
port and is emptied before each test. The webhook tests that touch the service's
database run on SQLite and PostgreSQL (the ``services`` fixture).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from acr.payouts.rails.base import RailError, RailPayout
from acr.payouts.rails.stripe_rail import StripePayoutRef, StripeRail, StripeRefusedError
from tests.stripe_server import API_KEY, WEBHOOK_SECRET, StripeServer, sign

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from sqlalchemy.orm import Session

    from api.services import Services


@pytest.fixture(scope="module")
def stripe_server() -> Iterator[StripeServer]:
    with StripeServer().running() as server:
        yield server


@pytest.fixture
def server(stripe_server: StripeServer) -> StripeServer:
    stripe_server.reset()
    return stripe_server


@pytest.fixture
def rail(server: StripeServer) -> StripeRail:
    return StripeRail(API_KEY, server.url, timeout=0.5)


@pytest.fixture
def connected(server: StripeServer) -> tuple[str, str]:
    """A funded platform and a connected account with a bank account: (acct, ba)."""
    server.fund_platform("usd", 100_000)
    account = server.add_account()
    return account, server.add_external_account(account)


def rail_payout(
    payout_id: str, account: str, destination: str, amount: int = 2500, **extra: Any
) -> RailPayout:
    return RailPayout(
        payout_id=payout_id,
        account_id="acct_ours",
        amount=amount,
        currency="usd",
        method=extra.pop("method", "standard"),
        destination_id="ba_ours",
        destination_object="bank_account",
        destination_rail_data={"stripe_id": destination},
        stripe_account_id=account,
        **extra,
    )


# -- submit -----------------------------------------------------------------------------------


def test_submit_transfers_then_pays_out_on_the_connected_account(
    server: StripeServer, rail: StripeRail, connected: tuple[str, str]
) -> None:
    account, bank = connected
    reference = rail.submit(rail_payout("po_1", account, bank))

    [transfer] = server.requests_to("POST", "/v1/transfers")
    assert transfer.headers["authorization"] == f"Bearer {API_KEY}"
    assert transfer.headers["content-type"] == "application/x-www-form-urlencoded"
    assert transfer.headers["idempotency-key"] == "transfer-po_1"
    assert "stripe-account" not in transfer.headers  # from the platform's own balance
    assert transfer.params == {
        "amount": "2500",
        "currency": "usd",
        "destination": account,
        "transfer_group": "po_1",
        "metadata": {"acr_payout": "po_1"},
    }
    [payout] = server.requests_to("POST", "/v1/payouts")
    assert payout.headers["stripe-account"] == account
    assert payout.headers["idempotency-key"] == "payout-po_1"
    assert payout.params == {
        "amount": "2500",
        "currency": "usd",
        "method": "standard",
        "destination": bank,
        "metadata": {"acr_payout": "po_1"},
    }
    assert reference.startswith("po_")
    assert server.state.payouts[reference]["status"] == "pending"
    assert server.state.platform_balance["usd"] == 100_000 - 2500
    assert server.state.balances[account]["usd"] == 0  # transferred in, paid out


def test_resubmission_pays_once(
    server: StripeServer, rail: StripeRail, connected: tuple[str, str]
) -> None:
    account, bank = connected
    first = rail.submit(rail_payout("po_1", account, bank))
    # Another process (or this one after a restart) submits the same payout again.
    again = StripeRail(API_KEY, server.url).submit(rail_payout("po_1", account, bank))
    assert again == first
    assert len(server.requests_to("POST", "/v1/transfers")) == 2
    assert len(server.state.transfers) == 1
    assert len(server.state.payouts) == 1
    assert server.state.platform_balance["usd"] == 100_000 - 2500


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/v1/transfers", 500, "api_error"),
        ("/v1/transfers", 429, "rate_limit_error"),
        ("/v1/payouts", 503, "api_error"),
        ("/v1/payouts", 409, "idempotency_error"),
    ],
)
def test_server_errors_are_retryable(
    server: StripeServer,
    rail: StripeRail,
    connected: tuple[str, str],
    path: str,
    status: int,
    kind: str,
) -> None:
    account, bank = connected
    server.fail_next("POST", path, status, type=kind)
    with pytest.raises(RailError) as raised:
        rail.submit(rail_payout("po_1", account, bank))
    assert not isinstance(raised.value, StripeRefusedError)
    assert rail.poll(datetime.now(UTC)) == []
    rail.submit(rail_payout("po_1", account, bank))
    assert len(server.state.transfers) == 1
    assert len(server.state.payouts) == 1


def test_a_timeout_is_retryable_and_the_retry_pays_once(
    server: StripeServer, connected: tuple[str, str]
) -> None:
    account, bank = connected
    rail = StripeRail(API_KEY, server.url, timeout=0.3)
    server.fail_next("POST", "/v1/payouts", None, delay=1.0)
    started = time.monotonic()
    with pytest.raises(RailError):
        rail.submit(rail_payout("po_1", account, bank))
    assert time.monotonic() - started < 1.0
    # Stripe did the work but the answer was lost: the retry gets the same payout.
    server.fail_next("POST", "/v1/payouts", after=True)
    with pytest.raises(RailError):
        rail.submit(rail_payout("po_1", account, bank))
    assert len(server.state.payouts) == 1
    reference = rail.submit(rail_payout("po_1", account, bank))
    assert list(server.state.payouts) == [reference]
    assert len(server.state.transfers) == 1


def test_a_refused_key_is_retryable(server: StripeServer, connected: tuple[str, str]) -> None:
    account, bank = connected
    rail = StripeRail("sk_test_wrong", server.url)
    with pytest.raises(RailError) as raised:
        rail.submit(rail_payout("po_1", account, bank))
    assert not isinstance(raised.value, StripeRefusedError)
    [request] = server.requests_to("POST", "/v1/transfers")
    assert request.headers["authorization"] == "Bearer sk_test_wrong"
    assert server.state.transfers == {}


def test_an_unknown_destination_is_refused_and_the_transfer_reversed(
    server: StripeServer, rail: StripeRail, connected: tuple[str, str]
) -> None:
    account, _ = connected
    with pytest.raises(StripeRefusedError) as raised:
        rail.submit(rail_payout("po_1", account, "ba_unknown"))
    refusal = raised.value
    assert refusal.http_status == 404
    assert refusal.failure_code == "resource_missing"
    assert refusal.update.status == "failed"
    assert refusal.update.payout_id == "po_1"
    assert "ba_unknown" in (refusal.update.failure_message or "")
    [transfer] = server.state.transfers.values()
    assert transfer["reversed"] is True
    assert server.state.platform_balance["usd"] == 100_000
    # The outbox knows RailError only: the refusal is also reported by poll until applied.
    assert rail.poll(datetime.now(UTC)) == [refusal.update]
    rail.acknowledge(refusal.update)
    assert rail.poll(datetime.now(UTC)) == []
    # Submitting again replays the refusal: no second transfer, no second reversal.
    with pytest.raises(StripeRefusedError):
        rail.submit(rail_payout("po_1", account, "ba_unknown"))
    assert len(server.state.transfers) == 1
    assert server.state.platform_balance["usd"] == 100_000


def test_insufficient_platform_funds_are_refused(
    server: StripeServer, rail: StripeRail, connected: tuple[str, str]
) -> None:
    account, bank = connected
    with pytest.raises(StripeRefusedError) as raised:
        rail.submit(rail_payout("po_1", account, bank, amount=1_000_000))
    assert raised.value.failure_code == "balance_insufficient"
    assert server.requests_to("POST", "/v1/payouts") == []


def test_instant_payout_to_a_bank_account_is_refused(
    server: StripeServer, rail: StripeRail, connected: tuple[str, str]
) -> None:
    account, bank = connected
    with pytest.raises(StripeRefusedError) as raised:
        rail.submit(rail_payout("po_1", account, bank, method="instant"))
    assert raised.value.failure_code == "instant_payouts_unsupported"
    assert raised.value.http_status == 400


def test_changed_parameters_under_the_same_payout_id_are_refused(
    server: StripeServer, rail: StripeRail, connected: tuple[str, str]
) -> None:
    account, bank = connected
    rail.submit(rail_payout("po_1", account, bank, amount=100))
    with pytest.raises(StripeRefusedError) as raised:
        rail.submit(rail_payout("po_1", account, bank, amount=200))
    assert raised.value.failure_code == "idempotency_error"
    assert len(server.state.transfers) == 1


def test_an_account_without_stripe_account_is_refused(rail: StripeRail) -> None:
    payout = rail_payout("po_1", "", "ba_1")
    with pytest.raises(StripeRefusedError) as raised:
        rail.submit(payout)
    assert raised.value.failure_code == "no_stripe_account"


# -- cancel, retrieve, schedule ---------------------------------------------------------------


def test_cancel_a_pending_payout(
    server: StripeServer, rail: StripeRail, connected: tuple[str, str]
) -> None:
    account, bank = connected
    reference = rail.submit(rail_payout("po_1", account, bank))
    assert rail.cancel("po_1") is True
    [request] = server.requests_to("POST", f"/v1/payouts/{reference}/cancel")
    assert request.headers["stripe-account"] == account
    assert server.state.payouts[reference]["status"] == "canceled"
    [transfer] = server.state.transfers.values()
    assert transfer["reversed"] is True
    assert server.state.platform_balance["usd"] == 100_000
    assert server.state.balances[account]["usd"] == 0


def test_cancel_after_a_restart_finds_the_payout_and_is_too_late_once_paid(
    server: StripeServer, connected: tuple[str, str]
) -> None:
    account, bank = connected
    reference = StripeRail(API_KEY, server.url).submit(rail_payout("po_1", account, bank))
    server.settle(reference, "paid")
    located = {"po_1": StripePayoutRef(reference, account)}
    rail = StripeRail(API_KEY, server.url, locate=located.get)
    retrieved = rail.retrieve("po_1")
    assert retrieved is not None and retrieved.status == "paid"
    assert rail.cancel("po_1") is False
    assert rail.cancel("po_never_sent") is True


def test_cancel_when_stripe_is_down_is_retryable(
    server: StripeServer, rail: StripeRail, connected: tuple[str, str]
) -> None:
    account, bank = connected
    rail.submit(rail_payout("po_1", account, bank))
    server.fail_next("POST", "/v1/payouts/", 502)
    with pytest.raises(RailError):
        rail.cancel("po_1")
    assert rail.cancel("po_1") is True


def test_update_schedule_sends_stripes_nested_form(server: StripeServer, rail: StripeRail) -> None:
    account = server.add_account()
    updated = rail.update_schedule(account, "weekly", delay_days=3, weekly_anchor="friday")
    [request] = server.requests_to("POST", f"/v1/accounts/{account}")
    assert request.params == {
        "settings": {
            "payouts": {
                "schedule": {"interval": "weekly", "delay_days": "3", "weekly_anchor": "friday"}
            }
        }
    }
    schedule = updated.settings.payouts.schedule  # type: ignore[union-attr]
    assert (schedule.interval, schedule.delay_days, schedule.weekly_anchor) == (
        "weekly",
        3,
        "friday",
    )
    rail.update_schedule(account, "monthly", monthly_anchor=31)
    assert server.state.accounts[account]["settings"]["payouts"]["schedule"]["monthly_anchor"] == 31
    with pytest.raises(RailError, match="weekly anchor"):
        rail.update_schedule(account, "weekly")


def test_poll_reports_nothing_without_refusals(rail: StripeRail) -> None:
    assert rail.poll(datetime.now(UTC)) == []


def test_stripe_rail_from_settings(server: StripeServer, connected: tuple[str, str]) -> None:
    from acr.payouts.rails.stripe_rail import stripe_rail_from
    from acr.settings import Settings

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        stripe_api_key=API_KEY,
        stripe_api_base=server.url,
    )
    account, bank = connected
    rail = stripe_rail_from(settings, sessions=None)  # type: ignore[arg-type]
    assert rail.name == "stripe"
    assert rail.submit(rail_payout("po_1", account, bank)).startswith("po_")


def test_settings_read_the_plain_stripe_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from acr.settings import Settings

    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_env")
    monkeypatch.setenv("ACR_STRIPE_WEBHOOK_SECRET", "whsec_env")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.stripe_api_key, settings.stripe_webhook_secret) == ("sk_test_env", "whsec_env")


# -- inbound webhooks, with the service's database -------------------------------------------


@pytest.fixture
def webhook_client(services: Services) -> Iterator[TestClient]:
    """An app with the webhook route (the service's own app may not include it yet)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from api import problems
    from api.routers import stripe_webhooks

    services.settings.stripe_webhook_secret = WEBHOOK_SECRET
    app = FastAPI()
    app.state.services = services
    problems.install(app)
    app.include_router(stripe_webhooks.router)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def stripe_payout(
    services: Services, server: StripeServer, rail: StripeRail, connected: tuple[str, str]
) -> str:
    """A payout of ours, funded in the ledger, submitted through the outbox to Stripe."""
    from acr.db.models import Account, ExternalAccount
    from acr.payouts import ledger
    from acr.payouts.payouts import PayoutRequest, PayoutTerms, create_payout, submit_outbox

    stripe_account, bank = connected
    with services.sessions() as session:
        account = Account(country="US", default_currency="usd", stripe_account_id=stripe_account)
        session.add(account)
        session.flush()
        session.add(
            ExternalAccount(
                id="ba_ours",
                account_id=account.id,
                object="bank_account",
                last4="6789",
                fingerprint="f" * 16,
                country="US",
                currency="usd",
                default_for_currency=True,
                status="verified",
                available_payout_methods=["standard"],
                rail_data={"stripe_id": bank},
            )
        )
        ledger.post(
            session,
            ledger.posting(
                type="adjustment",
                source_id=f"fund-{account.id}",
                currency="usd",
                legs=[
                    ledger.Leg(ledger.account_book(account.id), 10_000),
                    ledger.Leg(ledger.PLATFORM_UNALLOCATED, -10_000),
                ],
                account_id=account.id,
                amount=10_000,
                net=10_000,
                available_on=datetime.now(UTC) - timedelta(days=1),
            ),
        )
        payout = create_payout(
            session, PayoutRequest(account.id, 2500, "usd"), terms=PayoutTerms(rail="stripe")
        )
        payout_id = payout.id
        session.commit()
    result = submit_outbox(services.sessions, rail)
    assert result.submitted == [payout_id]
    return payout_id


def _payout(session: Session, payout_id: str) -> Any:
    from acr.db.models import Payout

    payout = session.get(Payout, payout_id)
    assert payout is not None
    return payout


def _postings(session: Session, payout_id: str, type: str) -> int:
    from sqlalchemy import func, select

    from acr.db.models import LedgerTransaction

    return (
        session.scalar(
            select(func.count())
            .select_from(LedgerTransaction)
            .where(LedgerTransaction.source_id == payout_id, LedgerTransaction.type == type)
        )
        or 0
    )


def test_webhook_refuses_a_bad_signature(
    webhook_client: TestClient, server: StripeServer, stripe_payout: str
) -> None:
    reference = next(iter(server.state.payouts))
    payload, headers = server.webhook("payout.paid", reference)
    forged = server.webhook("payout.paid", reference, secret="whsec_other")[1]
    stale = {"Stripe-Signature": sign(payload, WEBHOOK_SECRET, int(time.time()) - 3600)}
    for bad in (forged, stale, {}, {"Stripe-Signature": "t=1,v1=00"}):
        answer = webhook_client.post("/v1/stripe/webhooks", content=payload, headers=bad)
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "invalid_signature"
    # The body is what is signed: a changed body fails under the original signature.
    tampered = payload.replace(b'"payout.paid"', b'"payout.failed"')
    answer = webhook_client.post("/v1/stripe/webhooks", content=tampered, headers=headers)
    assert answer.status_code == 400
    with webhook_client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        assert _payout(session, stripe_payout).status == "in_transit"


def test_webhook_without_a_secret_is_not_found(
    webhook_client: TestClient, services: Services
) -> None:
    services.settings.stripe_webhook_secret = ""
    answer = webhook_client.post("/v1/stripe/webhooks", content=b"{}", headers={})
    assert answer.status_code == 404


def test_webhook_acknowledges_events_it_does_not_act_on(
    webhook_client: TestClient, server: StripeServer, stripe_payout: str
) -> None:
    reference = next(iter(server.state.payouts))
    for event_type in ("payout.created", "payout.reconciliation_completed"):
        payload, headers = server.webhook(event_type, reference)
        answer = webhook_client.post("/v1/stripe/webhooks", content=payload, headers=headers)
        assert answer.status_code == 200
        assert answer.json()["outcome"] == "ignored"
    charge = b'{"id": "evt_c", "object": "event", "type": "charge.succeeded", "created": 1, '
    charge += b'"data": {"object": {"id": "ch_1", "object": "charge"}}}'
    answer = webhook_client.post(
        "/v1/stripe/webhooks",
        content=charge,
        headers={"Stripe-Signature": sign(charge, WEBHOOK_SECRET)},
    )
    assert answer.json() == {"received": True, "event": "evt_c", "outcome": "ignored"}


def test_payout_paid_webhook_pays_our_payout_once(
    webhook_client: TestClient, services: Services, server: StripeServer, stripe_payout: str
) -> None:
    with services.sessions() as session:
        payout = _payout(session, stripe_payout)
        assert (payout.status, payout.rail, payout.rail_state) == (
            "in_transit",
            "stripe",
            "submitted",
        )
        reference = payout.rail_ref
    server.settle(reference, "paid")
    payload, headers = server.webhook("payout.paid", reference, event_id="evt_paid")
    answer = webhook_client.post("/v1/stripe/webhooks", content=payload, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": True, "event": "evt_paid", "outcome": "applied"}
    redelivered = webhook_client.post("/v1/stripe/webhooks", content=payload, headers=headers)
    assert redelivered.json()["outcome"] == "duplicate"
    # The same news in another event (payout.updated) changes nothing either.
    payload, headers = server.webhook("payout.updated", reference)
    answer = webhook_client.post("/v1/stripe/webhooks", content=payload, headers=headers)
    assert answer.json()["outcome"] == "unchanged"
    with services.sessions() as session:
        payout = _payout(session, stripe_payout)
        assert (payout.status, payout.rail_state) == ("paid", "done")
        assert _postings(session, stripe_payout, "payout_paid") == 1


def test_payout_failed_webhook_fails_our_payout_and_returns_the_money(
    webhook_client: TestClient,
    services: Services,
    server: StripeServer,
    rail: StripeRail,
    stripe_payout: str,
) -> None:
    from acr.payouts import ledger
    from acr.payouts.payouts import reclaim_returned

    with services.sessions() as session:
        payout = _payout(session, stripe_payout)
        reference, account_id = payout.rail_ref, payout.account_id
        before = ledger.book_balance(
            session, ledger.account_book(account_id), "usd", datetime.now(UTC)
        )
    server.settle(reference, "failed", failure_code="account_closed")
    payload, headers = server.webhook("payout.failed", reference, event_id="evt_failed")
    for _ in range(2):  # a redelivery changes nothing twice
        answer = webhook_client.post("/v1/stripe/webhooks", content=payload, headers=headers)
        assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "duplicate"
    with services.sessions() as session:
        payout = _payout(session, stripe_payout)
        assert (payout.status, payout.failure_code) == ("failed", "account_closed")
        assert payout.failure_message == "The bank reported account_closed."
        assert _postings(session, stripe_payout, "payout_failure") == 1
        after = ledger.book_balance(
            session, ledger.account_book(account_id), "usd", datetime.now(UTC)
        )
        assert after.available == before.available + 2500
        assert ledger.verify(session) == []
        assert payout.rail_state == "to_reclaim"
    # The bank returned the money to the connected account at Stripe; our ledger has
    # it in the account's balance already, so the transfer comes back to the platform.
    [transfer] = [
        t for t in server.state.transfers.values() if t["transfer_group"] == stripe_payout
    ]
    assert transfer["reversed"] is False
    assert reclaim_returned(services.sessions, rail) == [stripe_payout]
    assert transfer["reversed"] is True
    assert reclaim_returned(services.sessions, rail) == []
    with services.sessions() as session:
        assert _payout(session, stripe_payout).rail_state == "done"


def test_a_refused_submission_fails_the_payout_through_the_outbox(
    services: Services, server: StripeServer, rail: StripeRail, stripe_payout: str
) -> None:
    """An outbox payout Stripe refuses is failed by ``poll_rail`` (the refusal's update)."""
    from acr.db.models import Account, ExternalAccount
    from acr.payouts.payouts import (
        PayoutRequest,
        PayoutTerms,
        create_payout,
        poll_rail,
        submit_outbox,
    )

    with services.sessions() as session:
        account_id = _payout(session, stripe_payout).account_id
        external = session.get(ExternalAccount, "ba_ours")
        assert external is not None and session.get(Account, account_id) is not None
        external.rail_data = {"stripe_id": "ba_gone_at_stripe"}
        payout = create_payout(
            session, PayoutRequest(account_id, 1000, "usd"), terms=PayoutTerms(rail="stripe")
        )
        refused_id = payout.id
        session.commit()
    result = submit_outbox(services.sessions, rail)
    assert result.errors == [refused_id]
    assert poll_rail(services.sessions, rail).applied == 1
    assert rail.poll(datetime.now(UTC)) == []
    with services.sessions() as session:
        payout = _payout(session, refused_id)
        assert (payout.status, payout.failure_code) == ("failed", "resource_missing")
        assert _postings(session, refused_id, "payout_failure") == 1
    assert submit_outbox(services.sessions, rail).submitted == []
