"""Payouts on the simulated rail with a controlled clock, and the ``/v1/payouts`` API.

Each test runs on SQLite and on PostgreSQL (the ``services`` fixture).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from acr.db.models import ExternalAccount, Organisation, Payout, utcnow
from acr.payouts import ledger
from acr.payouts.payouts import (
    PayoutError,
    PayoutRequest,
    PayoutTerms,
    cancel,
    create_manual,
    poll_rail,
    run_automatic,
    submit_outbox,
)
from acr.payouts.rails.simulated import (
    FAIL_LATER_S,
    FAILURE_MESSAGES,
    TEST_BANK_ACCOUNTS,
    SimulatedRail,
)
from acr.payouts.scheduler import run_once
from api.services import Services
from tests.conftest import Keys
from tests.payout_helpers import (
    DEBIT,
    T0,
    add_external,
    available,
    book_total,
    events,
    fund,
    ledger_count,
    make_account,
    set_status,
    verify,
)

TERMS = PayoutTerms(bps=150, minimum=50)


def _get(services: Services, payout_id: str) -> Payout:
    with services.sessions() as session:
        payout = session.get(Payout, payout_id)
        assert payout is not None
        return payout


def _external(services: Services, external_id: str) -> ExternalAccount:
    with services.sessions() as session:
        external = session.get(ExternalAccount, external_id)
        assert external is not None
        return external


def _pay(services: Services, account: str, amount: int, **fields: Any) -> Payout:
    return create_manual(
        services.sessions, PayoutRequest(account, amount, "usd", **fields), terms=TERMS, now=T0
    )


def test_standard_payout_goes_in_transit_then_paid(services: Services) -> None:
    sessions = services.sessions
    rail = SimulatedRail(sessions)
    account = make_account(sessions)
    add_external(sessions, account)
    fund(sessions, account, 10_000)

    payout = _pay(services, account, 3_000, description="weekly", metadata={"k": "v"})
    assert (payout.status, payout.rail_state, payout.automatic) == ("pending", "to_submit", False)
    assert payout.arrival_date == T0 + timedelta(days=2)  # Monday + 2 business days
    assert available(sessions, account) == 7_000
    assert book_total(sessions, ledger.RAIL_IN_TRANSIT) == 3_000

    assert submit_outbox(sessions, rail, T0).submitted == [payout.id]
    assert _get(services, payout.id).status == "in_transit"
    assert submit_outbox(sessions, rail, T0).submitted == []  # nothing left in the outbox

    assert poll_rail(sessions, rail, T0 + timedelta(days=1)).updates == 0
    assert poll_rail(sessions, rail, payout.arrival_date).applied == 1
    paid = _get(services, payout.id)
    assert (paid.status, paid.rail_state) == ("paid", "done")
    assert poll_rail(sessions, rail, T0 + timedelta(days=9)).updates == 0
    assert book_total(sessions, ledger.RAIL_IN_TRANSIT) == 0
    assert book_total(sessions, ledger.RAIL_PAID) == 3_000
    assert available(sessions, account) == 7_000
    assert verify(sessions) == []
    assert [e["object"]["status"] for e in events(sessions, "payout.created")] == ["pending"]
    assert [e["object"]["status"] for e in events(sessions, "payout.updated")] == ["in_transit"]
    assert [e["previous_attributes"] for e in events(sessions, "payout.paid")] == [
        {"status": "in_transit"}
    ]


def test_instant_payout_pays_a_fee_and_arrives_within_30_minutes(services: Services) -> None:
    sessions = services.sessions
    rail = SimulatedRail(sessions)
    account = make_account(sessions)
    card = add_external(sessions, account, DEBIT)
    fund(sessions, account, 20_000)

    small = _pay(services, account, 1_000, method="instant")
    large = _pay(services, account, 10_000, destination=card, method="instant")
    assert (small.fee, large.fee) == (50, 150)  # the minimum, then 1.5 %
    assert small.arrival_date == T0 + timedelta(minutes=30)
    assert available(sessions, account) == 20_000 - 11_000 - 200
    assert book_total(sessions, ledger.PLATFORM_FEES) == 200

    submit_outbox(sessions, rail, T0)
    poll_rail(sessions, rail, T0 + timedelta(minutes=29))
    assert _get(services, small.id).status == "in_transit"
    poll_rail(sessions, rail, T0 + timedelta(minutes=30))
    assert _get(services, small.id).status == "paid"
    assert _get(services, large.id).status == "paid"
    assert verify(sessions) == []


def test_every_failure_code_reverses_and_blocks_until_updated(services: Services) -> None:
    sessions = services.sessions
    rail = SimulatedRail(sessions)
    cases = {number: code for number, code in TEST_BANK_ACCOUNTS.items() if code is not None}
    cases["4000000000000002"] = "declined"
    assert set(cases.values()) | {"unsupported_card"} == set(FAILURE_MESSAGES)
    made: dict[str, tuple[str, str, str]] = {}
    for number, code in cases.items():
        account = make_account(sessions, interval="daily")
        external = add_external(sessions, account, number)
        fund(sessions, account, 10_000)
        made[code] = (account, external, _pay(services, account, 4_000).id)
    before_events = len(events(sessions, "account.external_account.updated"))
    submit_outbox(sessions, rail, T0)
    arrived = T0 + timedelta(days=2)
    poll_rail(sessions, rail, arrived)

    for code, (account, external, payout_id) in made.items():
        payout = _get(services, payout_id)
        assert (payout.status, payout.failure_code) == ("failed", code)
        assert payout.failure_message == FAILURE_MESSAGES[code]
        assert payout.failure_balance_transaction_id is not None
        assert available(sessions, account, now=arrived) == 10_000, code  # reversal restored it
        assert _external(services, external).status == "errored"
    updated = events(sessions, "account.external_account.updated")[before_events:]
    assert sorted(e["object"]["id"] for e in updated) == sorted(e for _, e, _ in made.values())
    assert all(e["previous_attributes"] == {"status": "new"} for e in updated)
    assert len(events(sessions, "payout.failed")) == len(made)
    assert book_total(sessions, ledger.RAIL_IN_TRANSIT) == 0
    assert verify(sessions) == []

    # Blocked: manual payouts refused, automatic ones skipped, nothing posted.
    account, external, _ = made["no_account"]
    count = ledger_count(sessions)
    with pytest.raises(PayoutError) as refused:
        _pay(services, account, 100)
    assert refused.value.code == "external_account_disabled"
    automatic = run_automatic(sessions, T0 + timedelta(days=3), terms=TERMS)
    assert automatic.created == []
    assert (account, "usd", "external_account_disabled") in automatic.skipped
    assert ledger_count(sessions) == count

    # Updating the external account lifts the block.
    set_status(sessions, external, "verified")
    assert _pay(services, account, 100).status == "pending"


def test_a_paid_payout_can_fail_later(services: Services) -> None:
    sessions = services.sessions
    rail = SimulatedRail(sessions)
    account = make_account(sessions)
    external = add_external(sessions, account, "000555555559")
    fund(sessions, account, 5_000)
    payout = _pay(services, account, 5_000)
    submit_outbox(sessions, rail, T0)
    poll_rail(sessions, rail, payout.arrival_date)
    assert _get(services, payout.id).status == "paid"
    assert available(sessions, account) == 0
    assert book_total(sessions, ledger.RAIL_PAID) == 5_000

    later = payout.arrival_date + timedelta(seconds=FAIL_LATER_S)
    poll_rail(sessions, rail, later - timedelta(seconds=1))
    assert _get(services, payout.id).status == "paid"
    poll_rail(sessions, rail, later)
    failed = _get(services, payout.id)
    assert (failed.status, failed.failure_code) == ("failed", "could_not_process")
    assert book_total(sessions, ledger.RAIL_PAID) == 0
    assert available(sessions, account, now=later) == 5_000
    assert _external(services, external).status == "errored"
    assert [e["previous_attributes"] for e in events(sessions, "payout.failed")] == [
        {"status": "paid"}
    ]
    assert poll_rail(sessions, rail, later + timedelta(days=5)).updates == 0
    assert verify(sessions) == []


def test_paying_twice_in_one_poll_applies_both_steps(services: Services) -> None:
    sessions = services.sessions
    rail = SimulatedRail(sessions)
    account = make_account(sessions)
    add_external(sessions, account, "000555555559")
    fund(sessions, account, 1_000)
    payout = _pay(services, account, 1_000)
    submit_outbox(sessions, rail, T0)
    result = poll_rail(sessions, rail, T0 + timedelta(days=30))
    assert (result.updates, result.applied) == (2, 2)
    assert _get(services, payout.id).status == "failed"
    assert [e["object"]["id"] for e in events(sessions, "payout.paid")] == [payout.id]
    assert verify(sessions) == []


def test_cancel_a_pending_manual_payout(services: Services) -> None:
    sessions = services.sessions
    rail = SimulatedRail(sessions)
    account = make_account(sessions)
    card = add_external(sessions, account, DEBIT)
    fund(sessions, account, 10_000)
    payout = _pay(services, account, 2_000, method="instant", destination=card)
    assert available(sessions, account) == 10_000 - 2_000 - 50

    canceled = cancel(sessions, payout.id, now=T0)
    assert canceled.status == "canceled"
    assert available(sessions, account) == 10_000  # the fee comes back too
    assert book_total(sessions, ledger.PLATFORM_FEES) == 0
    assert submit_outbox(sessions, rail, T0).submitted == []
    assert rail.transfer(payout.id) is None
    with pytest.raises(PayoutError) as again:
        cancel(sessions, payout.id, now=T0)
    assert again.value.code == "payout_not_cancelable"

    sent = _pay(services, account, 1_000)
    submit_outbox(sessions, rail, T0)
    with pytest.raises(PayoutError) as late:
        cancel(sessions, sent.id, now=T0)
    assert late.value.code == "payout_not_cancelable"
    assert [e["object"]["id"] for e in events(sessions, "payout.canceled")] == [payout.id]
    assert verify(sessions) == []


def test_automatic_payouts_follow_the_schedule_once_a_day(services: Services) -> None:
    sessions = services.sessions
    daily = make_account(sessions, interval="daily")
    weekly = make_account(sessions, interval="weekly", weekly_anchor="friday")
    manual = make_account(sessions)
    empty = make_account(sessions, interval="daily")
    no_bank = make_account(sessions, interval="daily")
    for account in (daily, weekly, manual, empty):
        add_external(sessions, account)
    payment = fund(sessions, daily, 4_000)
    for account in (weekly, manual, no_bank):
        fund(sessions, account, 4_000)
    fund(sessions, daily, 999, available_on=T0 + timedelta(days=1))  # still pending at T0

    result = run_automatic(sessions, T0, terms=TERMS)  # a Monday
    assert len(result.created) == 1
    assert (no_bank, "usd", "no_external_account") in result.skipped
    payout = _get(services, result.created[0])
    assert (payout.account_id, payout.amount, payout.automatic) == (daily, 4_000, True)
    assert payout.automatic_for == T0.date().isoformat()
    assert run_automatic(sessions, T0 + timedelta(hours=3), terms=TERMS).created == []

    friday = T0 + timedelta(days=4)
    later = run_automatic(sessions, friday, terms=TERMS).created
    assert sorted(_get(services, p).account_id for p in later) == sorted([daily, weekly])
    assert {_get(services, p).amount for p in later} == {999, 4_000}
    with pytest.raises(PayoutError):
        cancel(sessions, payout.id, now=T0)  # automatic payouts are not canceled

    with services.sessions() as session:
        from acr.payouts.payouts import reconciliation

        report = reconciliation(session, _get(services, payout.id))
    assert [t["id"] for t in report["settled_transactions"]] == [payment]
    assert [t["type"] for t in report["balance_transactions"]] == ["payout"]
    assert verify(sessions) == []


def test_run_once_makes_submits_and_pays(services: Services) -> None:
    sessions = services.sessions
    account = make_account(sessions, interval="daily")
    add_external(sessions, account)
    fund(sessions, account, 1_234)
    first = run_once(services, T0)
    assert len(first.created) == 1 and first.submitted == first.created
    assert first.busy
    paid = run_once(services, T0 + timedelta(days=2))
    assert (paid.applied, paid.created) == (1, [])
    assert _get(services, first.created[0]).status == "paid"
    assert verify(sessions) == []
    assert run_once(services.settings, T0 + timedelta(days=2, hours=1)).busy is False


# -- the HTTP API ------------------------------------------------------------------------------


def _org(services: Services, slug: str) -> str:
    with services.sessions() as session:
        found = session.scalars(select(Organisation.id).where(Organisation.slug == slug)).first()
        assert found is not None
        return found


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    """The app with the payouts router, without background work.

    No background payouts pass: the tests move payouts on themselves, so that a
    pending payout stays pending until they submit it.
    """
    from api.app import create_app
    from api.routers import payouts

    app = create_app(services, background=False)
    if not any(getattr(route, "path", "") == "/v1/payouts" for route in app.routes):
        app.include_router(payouts.router)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def acme_account(services: Services, keys: Keys) -> dict[str, str]:
    sessions = services.sessions
    account = make_account(sessions, organisation_id=_org(services, "acme"))
    bank = add_external(sessions, account)
    card = add_external(sessions, account, DEBIT, default=False)
    eur = add_external(sessions, account, currency="eur", default=True)
    fund(sessions, account, 10_000)
    return {"account": account, "bank": bank, "card": card, "eur": eur}


def test_api_create_get_list_cancel_reconcile(
    client: TestClient, keys: Keys, acme_account: dict[str, str], services: Services
) -> None:
    account = acme_account["account"]
    created = client.post(
        "/v1/payouts",
        json={"account": account, "amount": 1_500, "currency": "USD", "metadata": {"a": "b"}},
        headers=keys.acme,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["object"] == "payout" and body["status"] == "pending"
    assert (body["destination"], body["type"], body["method"]) == (
        acme_account["bank"],
        "bank_account",
        "standard",
    )
    assert body["currency"] == "usd" and body["metadata"] == {"a": "b"}
    assert body["balance_transaction"].startswith("txn_")
    assert "T" in body["arrival_date"] and "T" in body["created"]

    instant = client.post(
        "/v1/payouts",
        json={
            "account": account,
            "amount": 1_000,
            "currency": "usd",
            "method": "instant",
            "destination": acme_account["card"],
        },
        headers=keys.acme,
    ).json()
    assert (instant["fee"], instant["type"]) == (50, "card")

    assert client.get(f"/v1/payouts/{body['id']}", headers=keys.acme).json() == body
    listed = client.get("/v1/payouts", params={"limit": 1}, headers=keys.acme).json()
    assert listed["has_more"] and [p["id"] for p in listed["data"]] == [instant["id"]]
    rest = client.get(
        "/v1/payouts", params={"starting_after": listed["next_cursor"]}, headers=keys.acme
    ).json()
    assert [p["id"] for p in rest["data"]] == [body["id"]] and not rest["has_more"]
    only_instant = client.get(
        "/v1/payouts", params={"status": "pending", "automatic": "false",
                               "arrival_date_lt": (utcnow() + timedelta(hours=1)).isoformat()},
        headers=keys.acme,
    ).json()  # fmt: skip
    assert [p["id"] for p in only_instant["data"]] == [instant["id"]]

    canceled = client.post(f"/v1/payouts/{instant['id']}/cancel", headers=keys.acme)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    again = client.post(f"/v1/payouts/{instant['id']}/cancel", headers=keys.acme)
    assert again.status_code == 409 and again.json()["code"] == "payout_not_cancelable"

    report = client.get(f"/v1/payouts/{instant['id']}/reconciliation", headers=keys.acme)
    assert report.status_code == 200, report.text
    types = [t["type"] for t in report.json()["balance_transactions"]]
    assert types == ["payout", "payout_fee", "payout_cancel"]
    assert report.json()["totals"]["payout_net"] == 0
    assert available(services.sessions, account, now=utcnow()) == 10_000 - 1_500


def _problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def test_api_bad_input_is_a_problem_and_changes_nothing(
    client: TestClient, keys: Keys, acme_account: dict[str, str], services: Services
) -> None:
    sessions = services.sessions
    account = acme_account["account"]
    other = make_account(sessions, organisation_id=_org(services, "acme"))
    others_bank = add_external(sessions, other)
    base = {"account": account, "amount": 100, "currency": "usd"}
    count = ledger_count(sessions)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"amount": 0}, 422, "invalid_amount"),
        ({"amount": -5}, 422, "invalid_amount"),
        ({"amount": 10.5}, 422, "invalid_amount"),
        ({"amount": 100.0}, 422, "invalid_amount"),
        ({"amount": 10**16}, 422, "invalid_amount"),
        ({"amount": "100"}, 422, "validation_error"),
        ({"currency": "dollars"}, 422, "invalid_currency"),
        ({"currency": "gbp"}, 422, "no_external_account"),
        ({"destination": acme_account["eur"]}, 422, "currency_mismatch"),
        ({"destination": "ba_nope"}, 422, "no_such_destination"),
        ({"destination": others_bank}, 422, "no_such_destination"),
        ({"method": "instant"}, 422, "instant_ineligible"),
        ({"method": "wire"}, 422, "validation_error"),
        ({"amount": 10_001}, 409, "insufficient_funds"),
        (
            {"amount": 9_990, "method": "instant", "destination": acme_account["card"]},
            409,
            "insufficient_funds",
        ),
        ({"account": "acct_nope"}, 404, "not_found"),
        ({"surprise": 1}, 422, "validation_error"),
    ]
    for change, status, code in cases:
        _problem(
            client.post("/v1/payouts", json={**base, **change}, headers=keys.acme), status, code
        )

    set_status(sessions, acme_account["bank"], "errored")
    _problem(
        client.post("/v1/payouts", json=base, headers=keys.acme), 409, "external_account_disabled"
    )
    # The default is errored: another destination in that currency is blocked too.
    card = {**base, "destination": acme_account["card"]}
    _problem(client.post("/v1/payouts", json=card, headers=keys.acme), 409, "payouts_blocked")
    set_status(sessions, acme_account["bank"], "verified")
    with sessions() as session:
        from acr.db.models import Account

        row = session.get(Account, account)
        assert row is not None
        row.payouts_enabled = False
        session.commit()
    _problem(client.post("/v1/payouts", json=base, headers=keys.acme), 409, "payouts_blocked")
    assert ledger_count(sessions) == count
    assert available(sessions, account, now=utcnow()) == 10_000
    assert verify(sessions) == []


def test_api_idempotency_key_replays_and_refuses_another_body(
    client: TestClient, keys: Keys, acme_account: dict[str, str], services: Services
) -> None:
    body = {"account": acme_account["account"], "amount": 700, "currency": "usd"}
    headers = {**keys.acme, "Idempotency-Key": "po-1"}
    first = client.post("/v1/payouts", json=body, headers=headers)
    second = client.post("/v1/payouts", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    _problem(
        client.post("/v1/payouts", json={**body, "amount": 701}, headers=headers),
        409,
        "idempotency_mismatch",
    )
    with services.sessions() as session:
        assert len(session.scalars(select(Payout)).all()) == 1
    # A refused request releases its key: the same key works once the cause is fixed.
    retry = {**keys.acme, "Idempotency-Key": "po-2"}
    too_much = {**body, "amount": 20_000}
    _problem(client.post("/v1/payouts", json=too_much, headers=retry), 409, "insufficient_funds")
    fund(services.sessions, acme_account["account"], 20_000)
    assert client.post("/v1/payouts", json=too_much, headers=retry).status_code == 201

    payout_id = first.json()["id"]
    cancel_headers = {**keys.acme, "Idempotency-Key": "cancel-1"}
    one = client.post(f"/v1/payouts/{payout_id}/cancel", headers=cancel_headers)
    two = client.post(f"/v1/payouts/{payout_id}/cancel", headers=cancel_headers)
    assert one.status_code == two.status_code == 200 and one.json() == two.json()
    assert len(events(services.sessions, "payout.canceled")) == 1


def test_api_tenancy(
    client: TestClient, keys: Keys, acme_account: dict[str, str], services: Services
) -> None:
    account = acme_account["account"]
    body = {"account": account, "amount": 100, "currency": "usd"}
    payout = client.post("/v1/payouts", json=body, headers=keys.acme).json()
    _problem(client.post("/v1/payouts", json=body, headers=keys.globex), 404, "not_found")
    for path in (f"/v1/payouts/{payout['id']}", f"/v1/payouts/{payout['id']}/reconciliation"):
        _problem(client.get(path, headers=keys.globex), 404, "not_found")
        assert client.get(path, headers=keys.admin).status_code == 200
    _problem(
        client.post(f"/v1/payouts/{payout['id']}/cancel", headers=keys.globex), 404, "not_found"
    )
    assert client.get("/v1/payouts", headers=keys.globex).json()["data"] == []
    assert [p["id"] for p in client.get("/v1/payouts", headers=keys.admin).json()["data"]] == [
        payout["id"]
    ]
    _problem(client.get("/v1/payouts", headers=keys.tv_app), 403, "forbidden")
    _problem(client.post("/v1/payouts", json=body, headers=keys.tv_app), 403, "forbidden")
    _problem(client.get("/v1/payouts"), 401, "unauthenticated")
    admin = client.post("/v1/payouts", json=body, headers=keys.admin)
    assert admin.status_code == 201
