"""``/v1/accounts``, external accounts, balances, balance transactions and transfers over HTTP.

Runs on SQLite and PostgreSQL (via the ``services`` fixture).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from acr.db.models import Base, Engagement, Event, ExternalAccount, LedgerTransaction, Organisation
from acr.payouts.revenue import accrue_engagements

if TYPE_CHECKING:
    from api.services import Services
    from tests.conftest import Keys

BANK = {
    "object": "bank_account",
    "country": "US",
    "currency": "usd",
    "account_holder_name": "Jane Owner",
    "routing_number": "110000000",
    "account_number": "000123456789",
}
DEBIT = {"object": "card", "number": "4000056655665556", "exp_month": 12, "exp_year": 2040,
         "currency": "usd"}  # fmt: skip


@pytest.fixture
def api(services: Services) -> Iterator[TestClient]:
    """The app without its background work, with the accounts router (until app.py has it)."""
    from api.app import create_app
    from api.routers import accounts

    app = create_app(services, background=False)
    if not any(getattr(route, "path", "") == "/v1/accounts" for route in app.routes):
        app.include_router(accounts.router)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _create(api: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = api.post("/v1/accounts", json={"country": "US", **fields}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _add(api: TestClient, headers: dict[str, str], account: str, **body: Any) -> Any:
    return api.post(f"/v1/accounts/{account}/external_accounts", json=body, headers=headers)


def _events(services: Services, type: str) -> list[Event]:
    with services.sessions() as session:
        return list(
            session.scalars(select(Event).where(Event.type == type).order_by(Event.created_at))
        )


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def test_create_read_and_update_an_account(api: TestClient, keys: Keys, services: Services) -> None:
    account = _create(api, keys.acme, business_profile={"name": "Jane's shows"})
    assert account["object"] == "account" and account["id"].startswith("acct_")
    assert account["default_currency"] == "usd" and account["payouts_enabled"] is True
    assert account["settings"]["payouts"] == {
        "schedule": {"interval": "daily", "delay_days": 2, "weekly_anchor": None,
                     "monthly_anchor": None},
        "hold_in_platform": False,
    }  # fmt: skip
    assert account["external_accounts"]["data"] == []
    assert _create(api, keys.acme, country="fr")["default_currency"] == "eur"
    assert api.get(f"/v1/accounts/{account['id']}", headers=keys.acme).json() == account

    weekly = {
        "settings": {"payouts": {"schedule": {"interval": "weekly", "weekly_anchor": "friday"}}}
    }
    patched = api.patch(f"/v1/accounts/{account['id']}", json=weekly, headers=keys.acme).json()
    assert patched["settings"]["payouts"]["schedule"]["weekly_anchor"] == "friday"
    daily = {"settings": {"payouts": {"schedule": {"interval": "daily"}}}}
    patched = api.patch(f"/v1/accounts/{account['id']}", json=daily, headers=keys.acme).json()
    assert patched["settings"]["payouts"]["schedule"]["weekly_anchor"] is None
    [created] = _events(services, "account.created")[:1]
    assert created.data["object"]["id"] == account["id"]
    updates = _events(services, "account.updated")
    assert [e.data["previous_attributes"] for e in updates] == [
        {"settings": {"payouts": {"schedule": {"interval": "daily", "weekly_anchor": None}}}},
        {"settings": {"payouts": {"schedule": {"interval": "weekly", "weekly_anchor": "friday"}}}},
    ]


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ({"interval": "weekly"}, "weekly_anchor"),
        ({"interval": "monthly", "monthly_anchor": 32}, "monthly_anchor"),
        ({"interval": "daily", "weekly_anchor": "monday"}, "weekly_anchor"),
        ({"interval": "monthly"}, "monthly_anchor"),
        ({"interval": "hourly"}, "interval"),
        ({"delay_days": -1}, "delay_days"),
        ({"delay_days": 1.5}, "delay_days"),
    ],
)
def test_invalid_schedules_are_422(
    api: TestClient, keys: Keys, schedule: dict[str, Any], field: str
) -> None:
    response = api.post(
        "/v1/accounts",
        json={"country": "US", "settings": {"payouts": {"schedule": schedule}}},
        headers=keys.acme,
    )
    body = _problem(response, 422, "validation_error")
    assert field in body["errors"][0]["loc"]
    assert api.get("/v1/accounts", headers=keys.acme).json()["data"] == []


def test_tenancy(api: TestClient, keys: Keys, services: Services) -> None:
    mine = _create(api, keys.acme)["id"]
    _create(api, keys.globex)
    assert api.get(f"/v1/accounts/{mine}", headers=keys.globex).status_code == 404
    assert api.patch(f"/v1/accounts/{mine}", json={}, headers=keys.globex).status_code == 404
    assert _add(api, keys.globex, mine, external_account=BANK).status_code == 404
    assert api.get(f"/v1/accounts/{mine}/balance", headers=keys.globex).status_code == 404
    assert [a["id"] for a in api.get("/v1/accounts", headers=keys.acme).json()["data"]] == [mine]
    assert len(api.get("/v1/accounts", headers=keys.admin).json()["data"]) == 2
    listing = api.get(f"/v1/balance_transactions?account={mine}", headers=keys.globex)
    assert listing.status_code == 404
    _problem(api.get("/v1/accounts", headers=keys.tv_app), 403, "forbidden")
    assert api.get("/v1/accounts").status_code == 401
    # The platform decides who is paid out; managers cannot.
    refused = api.patch(f"/v1/accounts/{mine}", json={"payouts_enabled": False}, headers=keys.acme)
    _problem(refused, 403, "forbidden")
    allowed = api.patch(f"/v1/accounts/{mine}", json={"payouts_enabled": False}, headers=keys.admin)
    assert allowed.json()["payouts_enabled"] is False
    with services.sessions() as session:
        acme = session.scalars(select(Organisation.id).where(Organisation.slug == "acme")).one()
    by_admin = _create(api, keys.admin, organisation_id=acme)
    assert by_admin["organisation_id"] == acme
    assert api.get(f"/v1/accounts/{by_admin['id']}", headers=keys.acme).status_code == 200


def _dump_database(services: Services) -> str:
    """Every row of every table, as text."""
    with services.sessions() as session:
        return "\n".join(
            str(row)
            for table in Base.metadata.sorted_tables
            for row in session.execute(text(f'SELECT * FROM "{table.name}"')).all()
        )


def test_external_accounts_keep_no_full_numbers(
    api: TestClient, keys: Keys, services: Services
) -> None:
    account = _create(api, keys.acme)["id"]
    bank = _add(api, keys.acme, account, external_account=BANK)
    assert bank.status_code == 201, bank.text
    bank_doc = bank.json()
    assert bank_doc["object"] == "bank_account" and bank_doc["id"].startswith("ba_")
    assert (bank_doc["last4"], bank_doc["status"], bank_doc["default_for_currency"]) == (
        "6789",
        "verified",
        True,
    )
    assert bank_doc["bank_name"] == "STRIPE TEST BANK"
    assert bank_doc["available_payout_methods"] == ["standard"]
    added = _add(api, keys.acme, account, external_account=DEBIT)
    assert added.status_code == 201, added.text
    card = added.json()
    assert card["object"] == "card" and card["brand"] == "Visa" and card["funding"] == "debit"
    assert card["available_payout_methods"] == ["standard", "instant"]
    assert card["default_for_currency"] is False  # the bank account was first
    dump = _dump_database(services)
    for full in ("000123456789", "4000056655665556", "00012345"):
        assert full not in dump
    # The same number again is recognised by its fingerprint, not stored.
    again = _add(api, keys.acme, account, external_account={**BANK, "account_holder_name": "J"})
    _problem(again, 409, "external_account_exists")
    other = _create(api, keys.acme)["id"]
    elsewhere = _add(api, keys.acme, other, external_account=BANK).json()
    assert elsewhere["fingerprint"] == bank_doc["fingerprint"]
    listed = api.get(f"/v1/accounts/{account}", headers=keys.acme).json()["external_accounts"]
    assert [e["id"] for e in listed["data"]] == [bank_doc["id"], card["id"]]
    cards = api.get(f"/v1/accounts/{account}/external_accounts?object=card", headers=keys.acme)
    assert [e["id"] for e in cards.json()["data"]] == [card["id"]]


@pytest.mark.parametrize(
    ("external", "field", "code"),
    [
        ({**DEBIT, "number": "4000056655665557"}, "number", "invalid_number"),
        ({**DEBIT, "exp_year": 2020}, "exp_year", "invalid_expiry_year"),
        ({**DEBIT, "exp_month": 13}, "exp_month", "invalid_expiry_month"),
        ({**BANK, "routing_number": "110000001"}, "routing_number", "routing_number_invalid"),
        ({**BANK, "account_number": "12ab"}, "account_number", "invalid_number"),
        ({**BANK, "country": "XX"}, "country", "value_error"),
        ({**BANK, "currency": "dollars"}, "currency", "string_pattern_mismatch"),
        ({**BANK, "object": "wallet"}, "external_account", "union_tag_invalid"),
    ],
)
def test_invalid_external_accounts_are_422(
    api: TestClient, keys: Keys, services: Services, external: dict[str, Any], field: str,
    code: str,
) -> None:  # fmt: skip
    account = _create(api, keys.acme)["id"]
    response = _add(api, keys.acme, account, external_account=external)
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert field in error["loc"] and error["type"] == code
    # No full number in the answer, and nothing stored.
    assert "4000056655665557" not in response.text and "000123456789" not in response.text
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ExternalAccount)) == 0


def test_defaults_errors_and_deletion(api: TestClient, keys: Keys, services: Services) -> None:
    account = _create(api, keys.acme)["id"]
    url = f"/v1/accounts/{account}/external_accounts"
    first = _add(api, keys.acme, account, external_account=BANK).json()
    second_bank = {**BANK, "account_number": "000111111113"}
    second = _add(
        api, keys.acme, account, external_account=second_bank, default_for_currency=True
    ).json()
    assert second["default_for_currency"] is True
    assert (
        api.get(f"{url}/{first['id']}", headers=keys.acme).json()["default_for_currency"] is False
    )
    unset = api.patch(
        f"{url}/{second['id']}", json={"default_for_currency": False}, headers=keys.acme
    )
    _problem(unset, 409, "default_external_account")
    _problem(
        api.delete(f"{url}/{second['id']}", headers=keys.acme), 409, "default_external_account"
    )

    # A failed payout marks it errored (the payouts module does); an update lifts the block.
    from acr.db.models import Account
    from acr.payouts.external_accounts import set_external_account_status

    with services.sessions() as session:
        row, owner = session.get(ExternalAccount, second["id"]), session.get(Account, account)
        assert row is not None and owner is not None
        assert set_external_account_status(session, owner, row, "errored", reason="po_1 failed")
        session.commit()
    assert api.get(f"{url}/{second['id']}", headers=keys.acme).json()["status"] == "errored"
    fixed = api.patch(
        f"{url}/{second['id']}", json={"account_holder_name": "Jane Q. Owner"}, headers=keys.acme
    ).json()
    assert fixed["status"] == "verified" and fixed["account_holder_name"] == "Jane Q. Owner"
    updated = _events(services, "account.external_account.updated")
    assert updated[-1].data["previous_attributes"]["status"] == "errored"
    assert updated[-1].account_id == account

    deleted = api.delete(f"{url}/{first['id']}", headers=keys.acme)
    assert deleted.json() == {"id": first["id"], "object": "bank_account", "deleted": True}
    assert api.get(f"{url}/{first['id']}", headers=keys.acme).status_code == 404
    assert len(_events(services, "account.external_account.deleted")) == 1
    assert len(_events(services, "account.external_account.created")) == 2


def _earn(services: Services, account: str, count: int, at: datetime) -> None:
    """Engagements of ``account``'s content, accrued (cost 100, owner share 30 each)."""
    from acr.db.models import Campaign, Content

    with services.sessions() as session:
        org = session.scalars(select(Organisation.id).where(Organisation.slug == "acme")).one()
        content = Content(title="Show", kind="audio", status="ready", owner_account_id=account)
        campaign = Campaign(organisation_id=org, name="c", advertiser="Acme")
        session.add_all([content, campaign])
        session.flush()
        for i in range(count):
            session.add(
                Engagement(
                    campaign_id=campaign.id, organisation_id=org, content_id=content.id,
                    viewer_hash=f"v{i}", offset_s=1.0, confidence=0.9, cost=100, currency="usd",
                    owner_account_id=account, owner_share=30, created_at=at,
                )
            )  # fmt: skip
        session.commit()
    accrue_engagements(services.sessions, at)


def test_balance_and_balance_transactions(api: TestClient, keys: Keys, services: Services) -> None:
    account = _create(api, keys.acme)["id"]
    empty = api.get(f"/v1/accounts/{account}/balance", headers=keys.acme).json()
    assert empty == {
        "object": "balance",
        "account": account,
        "livemode": False,
        "available": [{"amount": 0, "currency": "usd"}],
        "pending": [{"amount": 0, "currency": "usd"}],
        "instant_available": [{"amount": 0, "currency": "usd"}],
        "held": [],
    }
    _earn(services, account, 2, datetime.now(UTC) - timedelta(days=5))
    _earn(services, account, 1, datetime.now(UTC))
    balance = api.get(f"/v1/accounts/{account}/balance", headers=keys.acme).json()
    assert balance["available"] == [{"amount": 60, "currency": "usd"}]
    assert balance["pending"] == [{"amount": 30, "currency": "usd"}]
    assert balance["instant_available"] == [{"amount": 0, "currency": "usd"}]  # no debit card
    _add(api, keys.acme, account, external_account=DEBIT)
    balance = api.get(f"/v1/accounts/{account}/balance", headers=keys.acme).json()
    assert balance["instant_available"] == [{"amount": 90, "currency": "usd"}]

    page = api.get("/v1/balance_transactions?limit=2", headers=keys.acme).json()
    assert page["has_more"] is True and len(page["data"]) == 2
    newest = page["data"][0]
    assert set(newest) == {
        "id", "object", "account", "amount", "fee", "net", "currency", "type", "status",
        "available_on", "created", "source", "description",
    }  # fmt: skip
    assert (newest["object"], newest["type"], newest["status"]) == (
        "balance_transaction",
        "payment",
        "pending",
    )
    assert (newest["amount"], newest["fee"], newest["net"]) == (100, 70, 30)
    rest = api.get(
        f"/v1/balance_transactions?starting_after={page['next_cursor']}", headers=keys.acme
    ).json()
    assert [t["status"] for t in rest["data"]] == ["available"] and rest["has_more"] is False
    one = api.get(f"/v1/balance_transactions/{newest['id']}", headers=keys.acme)
    assert one.json() == newest
    assert (
        api.get(f"/v1/balance_transactions/{newest['id']}", headers=keys.globex).status_code == 404
    )
    assert api.get("/v1/balance_transactions", headers=keys.globex).json()["data"] == []
    typed = api.get(f"/v1/balance_transactions?account={account}&type=transfer", headers=keys.acme)
    assert typed.json()["data"] == []


def test_transfers_of_held_revenue(api: TestClient, keys: Keys, services: Services) -> None:
    held = {"settings": {"payouts": {"hold_in_platform": True}}}
    account = _create(api, keys.acme, **held)["id"]
    _earn(services, account, 3, datetime.now(UTC) - timedelta(days=3))
    balance = api.get(f"/v1/accounts/{account}/balance", headers=keys.acme).json()
    assert balance["held"] == [{"amount": 90, "currency": "usd"}]
    assert balance["available"] == [{"amount": 0, "currency": "usd"}]

    def transfer(body: dict[str, Any], key: str | None = None, who: str = "acme") -> Any:
        headers = {**getattr(keys, who), **({"Idempotency-Key": key} if key else {})}
        return api.post("/v1/transfers", json=body, headers=headers)

    def ledger_size() -> int:
        with services.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(LedgerTransaction)) or 0)

    before = ledger_size()
    good = {"amount": 50, "currency": "usd", "destination": account}
    for bad in (0, -5, 10.5, 10.0, "10", 10**16, True):
        _problem(transfer({**good, "amount": bad}), 422, "validation_error")
    _problem(transfer({**good, "currency": "us"}), 422, "validation_error")
    _problem(transfer({**good, "destination": "acct_nope"}), 422, "no_such_destination")
    _problem(transfer(good, who="globex"), 422, "no_such_destination")
    _problem(transfer({**good, "currency": "eur"}), 409, "insufficient_funds")
    _problem(transfer({**good, "amount": 91}), 409, "insufficient_funds")
    _problem(transfer(good, who="tv_app"), 403, "forbidden")
    assert ledger_size() == before

    first = transfer(good, key="tr-1")
    assert first.status_code == 201, first.text
    document = first.json()
    assert document["object"] == "transfer" and document["id"].startswith("tr_")
    assert (document["amount"], document["destination"]) == (50, account)
    replay = transfer(good, key="tr-1")
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == document
    _problem(transfer({**good, "amount": 40}, key="tr-1"), 409, "idempotency_mismatch")
    assert ledger_size() == before + 1
    # A refused request frees its key: the same key may be used again once fixed.
    _problem(transfer({**good, "amount": 41}, key="tr-2"), 409, "insufficient_funds")
    assert transfer({**good, "amount": 40}, key="tr-2").status_code == 201
    balance = api.get(f"/v1/accounts/{account}/balance", headers=keys.acme).json()
    assert balance["available"] == [{"amount": 90, "currency": "usd"}]
    assert balance["held"] == [{"amount": 0, "currency": "usd"}]
    transfers = api.get(f"/v1/balance_transactions?type=transfer&account={account}",
                        headers=keys.acme).json()["data"]  # fmt: skip
    assert sorted(t["net"] for t in transfers) == [40, 50]
    assert {t["source"] for t in transfers} >= {document["id"]}
