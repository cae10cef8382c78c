"""The dashboard's server side, on SQLite and PostgreSQL: session, CSRF, forms and tenancy.

The pages call the JSON API's route functions, so these tests check what the
dashboard adds — the session, the forms' units and inline errors — and that
each page obeys the API's permissions, reading the results back through the
JSON API. The browser runs the whole story in ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from typing import TYPE_CHECKING

import pytest
import starlette.formparsers
from fastapi.testclient import TestClient

from acr.auth import authenticate, revoke_key
from tests.payout_helpers import fund
from tests.test_api_campaigns import add_content

if TYPE_CHECKING:
    from httpx import Response

    from api.services import Services
    from tests.conftest import Keys

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def secret(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def csrf_of(page: Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


def sign_in(client: TestClient, headers: dict[str, str]) -> str:
    """Sign ``client`` in with the key in ``headers``; return the session's CSRF token."""
    form = client.get("/dashboard/sign-in")
    signed = client.post(
        "/dashboard/sign-in",
        data={"csrf_token": csrf_of(form), "api_key": secret(headers)},
        follow_redirects=False,
    )
    assert signed.status_code == 303, signed.text
    return csrf_of(client.get("/dashboard/campaigns"))


def another(client: TestClient) -> TestClient:
    """A second browser on the same app (its own cookies; the background work is shared)."""
    return TestClient(client.app)


def errors_of(page: Response) -> dict[str, str]:
    """Inline field errors of a form page: field id → message."""
    return dict(
        re.findall(r'<small id="f-([\w-]+)-error" class="error">([^<]+)</small>', page.text)
    )


def test_sign_in_session_cookie_and_csrf(
    client: TestClient, keys: Keys, services: Services
) -> None:
    away = client.get("/dashboard/content", follow_redirects=False)
    assert away.status_code == 303
    assert away.headers["location"] == "/dashboard/sign-in?next=/dashboard/content"
    form = client.get("/dashboard/sign-in")
    cookie = form.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/dashboard" in cookie
    assert "frame-ancestors 'none'" in form.headers["content-security-policy"]
    token = csrf_of(form)

    def attempt(key: str, **extra: str) -> Response:
        data = {"csrf_token": token, "api_key": key, **extra}
        return client.post("/dashboard/sign-in", data=data, follow_redirects=False)

    forged = client.post(
        "/dashboard/sign-in", data={"api_key": secret(keys.acme)}, follow_redirects=False
    )
    assert forged.status_code == 403 and "csrf_failed" in forged.text
    viewer = attempt(secret(keys.tv_app))
    assert viewer.status_code == 403
    assert "A viewer_app key cannot sign in to the dashboard" in viewer.text
    assert attempt("acr_nope").status_code == 401
    assert client.get("/dashboard/campaigns", follow_redirects=False).status_code == 303

    signed = attempt(secret(keys.acme), next="https://evil.example/")
    assert signed.status_code == 303 and signed.headers["location"] == "/dashboard/campaigns"
    session_cookie = client.cookies["acr_dashboard"]
    assert secret(keys.acme) not in session_cookie
    assert secret(keys.acme).split("_")[2] not in signed.headers["set-cookie"]
    page = client.get("/dashboard/campaigns")
    assert page.status_code == 200 and ">acme<" in page.text
    token = csrf_of(page)
    assert token != csrf_of(form)  # a new token with the new identity

    # A forged cookie (the body changed, the signature not) is no session.
    body, signature = session_cookie.split(".")
    forger = another(client)
    forger.cookies.set("acr_dashboard", f"{body[:-2]}xx.{signature}", path="/dashboard")
    assert forger.get("/dashboard/campaigns", follow_redirects=False).status_code == 303

    stale = client.post("/dashboard/sign-out", data={"csrf_token": "nope"})
    assert stale.status_code == 403
    out = client.post("/dashboard/sign-out", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/dashboard/campaigns", follow_redirects=False).status_code == 303

    # Revoking the key ends its sessions at the next request.
    sign_in(client, keys.globex)
    with services.sessions() as session:
        assert revoke_key(session, authenticate(session, secret(keys.globex)).key_id)
        session.commit()
    revoked = client.get("/dashboard/campaigns", follow_redirects=False)
    assert revoked.status_code == 303 and "revoked" in revoked.headers["location"]


def test_campaign_forms_actions_and_tenancy(
    client: TestClient, keys: Keys, services: Services
) -> None:
    content = add_content(services, "Evening show")
    token = sign_in(client, keys.acme)
    fields = {
        "csrf_token": token,
        "name": "Winter sale",
        "advertiser": "Acme Corp",
        "triggers.0.content_id": content,
        "triggers.0.start_s": "10",
        "triggers.0.end_s": "20",
        "payload.title": "20% off",
        "payload.url": "https://acme.example/sale",
        "schedule.start_at": "2030-01-01T09:00",
        "schedule.timezone": "Europe/Paris",
        "currency": "eur",
        "cost_per_engagement": "1.50",
        "budget_total": "100",
        "revenue_share_percent": "30",
        "frequency_cap.count": "3",
        "frequency_cap.period_h": "24",
    }
    not_money = client.post("/dashboard/campaigns/new", data={**fields, "cost_per_engagement": "a"})
    assert not_money.status_code == 422
    assert errors_of(not_money) == {
        "cost_per_engagement": "&#39;a&#39; is not an amount, e.g. 1.50"
    }
    invalid = client.post(
        "/dashboard/campaigns/new",
        data={**fields, "payload.url": "ftp://x", "revenue_share_percent": "101"},
    )
    assert invalid.status_code == 422
    assert errors_of(invalid) == {
        "payload-url": "an address starting with http:// or https://",
        "revenue_share_percent": "a share from 0 to 100 %",
    }
    assert 'id="f-payload-url" name="payload.url" type="url" value="ftp://x"' in invalid.text
    unknown = client.post(
        "/dashboard/campaigns/new", data={**fields, "triggers.0.content_id": "cnt_nope"}
    )
    assert unknown.status_code == 422 and "no content &#39;cnt_nope&#39;" in unknown.text

    created = client.post("/dashboard/campaigns/new", data=fields, follow_redirects=False)
    assert created.status_code == 303
    campaign_id = created.headers["location"].split("/")[-1].split("?")[0]
    stored = client.get(f"/v1/campaigns/{campaign_id}", headers=keys.acme).json()
    assert stored["status"] == "draft"
    assert stored["schedule"]["start_at"] == "2030-01-01T08:00:00Z"
    assert (stored["cost_per_engagement"], stored["budget_total"]) == (150, 10_000)
    assert stored["revenue_share_bps"] == 3000
    assert stored["frequency_cap"] == {"count": 3, "period_s": 86_400}
    assert [(t["content_id"], t["start_s"], t["end_s"]) for t in stored["triggers"]] == [
        (content, 10, 20)
    ]
    page = client.get(f"/dashboard/campaigns/{campaign_id}")
    assert "Evening show" in page.text and "From 0:10.0 to 0:20.0" in page.text

    started = client.post(
        f"/dashboard/campaigns/{campaign_id}/actions/start",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert started.status_code == 303
    assert client.get(f"/v1/campaigns/{campaign_id}", headers=keys.acme).json()["status"] == (
        "running"
    )
    refused = client.post(
        f"/dashboard/campaigns/{campaign_id}/actions/resume", data={"csrf_token": token}
    )
    assert refused.status_code == 409 and "cannot resume a campaign that is running" in refused.text

    # Editing keeps what the form does not show (day-parting, set through the API).
    parted = client.patch(
        f"/v1/campaigns/{campaign_id}",
        headers=keys.acme,
        json={"schedule": {**stored["schedule"], "dayparts": [
            {"days": [0], "start": "18:00", "end": "23:00"}]}},
    )  # fmt: skip
    assert parted.status_code == 200, parted.text
    edit = client.get(f"/dashboard/campaigns/{campaign_id}/edit")
    assert 'value="Winter sale"' in edit.text and 'value="1.50"' in edit.text
    saved = client.post(
        f"/dashboard/campaigns/{campaign_id}/edit",
        data={**fields, "name": "Winter sale, week 2"},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    after = client.get(f"/v1/campaigns/{campaign_id}", headers=keys.acme).json()
    assert after["name"] == "Winter sale, week 2"
    assert after["schedule"]["dayparts"] == [{"days": [0], "start": "18:00", "end": "23:00"}]
    report = client.get(f"/dashboard/campaigns/{campaign_id}/report")
    assert report.status_code == 200 and "No engagements yet" in report.text
    csv = client.get(f"/dashboard/campaigns/{campaign_id}/report.csv?group_by=trigger")
    assert csv.text.startswith("period_start,trigger_id,engagements")

    # Another organisation's manager: as with the API, the campaign does not exist.
    globex = another(client)
    globex_token = sign_in(globex, keys.globex)
    assert "Winter sale" not in globex.get("/dashboard/campaigns").text
    for path in ("", "/edit", "/report", "/report.csv"):
        assert globex.get(f"/dashboard/campaigns/{campaign_id}{path}").status_code == 404
    pause = globex.post(
        f"/dashboard/campaigns/{campaign_id}/actions/pause", data={"csrf_token": globex_token}
    )
    assert pause.status_code == 404

    # An admin sees every organisation's campaigns, and names the organisation of a new one.
    admin = another(client)
    admin_token = sign_in(admin, keys.admin)
    running = admin.get("/dashboard/campaigns/running").text
    assert "Winter sale, week 2" in running and "Acme Corp · acme<" in running
    nameless = admin.post("/dashboard/campaigns/new", data={**fields, "csrf_token": admin_token})
    assert nameless.status_code == 422
    assert "admin keys name the organisation" in nameless.text


def test_library_upload_streams_once_and_checks_the_form_first(
    client: TestClient, keys: Keys, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dashboard's upload is parsed as it arrives, as POST /v1/content's is."""

    def no_spooling(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the upload went through Starlette's form parser")

    monkeypatch.setattr(starlette.formparsers.MultiPartParser, "parse", no_spooling)
    token = sign_in(client, keys.acme)
    data = os.urandom(2 * 1024 * 1024 + 3)  # past Starlette's 1 MiB spool threshold
    forged = client.post(
        "/dashboard/content",
        data={"csrf_token": "not-the-session's", "kind": "song"},
        files={"file": ("take.wav", data, "audio/wav")},
    )
    assert forged.status_code == 403 and "csrf_failed" in forged.text
    nameless = client.post(
        "/dashboard/content",
        data={"csrf_token": token, "kind": "jingle"},
        files={"file": ("take.wav", data, "audio/wav")},
    )
    assert nameless.status_code == 422 and "Input should be" in nameless.text
    media = services.settings.media_path
    assert [p for p in media.rglob("*") if p.is_file()] == []  # nothing kept from either
    uploaded = client.post(
        "/dashboard/content",
        data={"csrf_token": token, "kind": "song", "title": "Streamed"},
        files={"file": ("take.wav", data, "audio/wav")},
        follow_redirects=False,
    )
    assert uploaded.status_code == 303
    digest = hashlib.sha256(data).hexdigest()
    assert [p for p in media.rglob("*") if p.is_file()] == [media / digest[:2] / f"{digest}.wav"]


def test_library_and_payouts_follow_the_api_permissions(
    client: TestClient, keys: Keys, services: Services
) -> None:
    token = sign_in(client, keys.acme)
    missing = client.post("/dashboard/content", data={"csrf_token": token, "kind": "song"})
    assert missing.status_code == 422 and "Choose a media file" in missing.text
    uploaded = client.post(
        "/dashboard/content",
        data={"csrf_token": token, "kind": "song", "title": "Not audio"},
        files={"file": ("noise.wav", b"this is not a recording", "audio/wav")},
        follow_redirects=False,
    )
    assert uploaded.status_code == 303
    [content] = client.get("/v1/content", headers=keys.acme, params={"q": "Not audio"}).json()[
        "data"
    ]
    deadline = time.monotonic() + 30
    while "badge-failed" not in (library := client.get("/dashboard/content")).text:
        assert time.monotonic() < deadline, "the indexer did not get to the upload"
        time.sleep(0.2)
    assert "Not audio" in library.text

    globex = another(client)
    globex_token = sign_in(globex, keys.globex)
    assert f"/dashboard/content/{content['id']}/delete" not in globex.get("/dashboard/content").text
    stolen = globex.post(
        f"/dashboard/content/{content['id']}/delete", data={"csrf_token": globex_token}
    )
    assert stolen.status_code == 404
    deleted = client.post(
        f"/dashboard/content/{content['id']}/delete",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert deleted.status_code == 303
    assert client.get(f"/v1/content/{content['id']}", headers=keys.acme).json()["deleted_at"]

    account = client.post(
        "/v1/accounts",
        headers=keys.acme,
        json={
            "country": "US",
            "business_profile": {"name": "Acme Rights"},
            # Manual: the app's background payouts pass would otherwise pay the balance out.
            "settings": {"payouts": {"schedule": {"interval": "manual"}}},
        },
    ).json()
    bank = client.post(
        f"/v1/accounts/{account['id']}/external_accounts",
        headers=keys.acme,
        json={"external_account": {"object": "bank_account", "country": "US", "currency": "usd",
              "routing_number": "110000000", "account_number": "000123456789"}},
    ).json()  # fmt: skip
    fund(services.sessions, account["id"], 1_000)
    assert "Acme Rights" in client.get("/dashboard/payouts").text
    assert "Acme Rights" not in globex.get("/dashboard/payouts").text
    assert globex.get(f"/dashboard/payouts/{account['id']}").status_code == 404

    page = client.get(f"/dashboard/payouts/{account['id']}")
    assert "10.00 USD" in page.text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page.text)
    assert key
    too_much = client.post(
        f"/dashboard/payouts/{account['id']}/payouts",
        data={"csrf_token": token, "amount": "10.01", "currency": "usd", "idempotency_key": "k1"},
    )
    assert too_much.status_code == 409 and "(insufficient_funds)" in too_much.text
    paid = {"csrf_token": token, "amount": "4", "currency": "usd", "idempotency_key": key[1]}
    for _ in range(2):  # a form sent twice pays out once
        sent = client.post(f"/dashboard/payouts/{account['id']}/payouts", data=paid)
        assert sent.status_code == 200
    payouts = client.get("/v1/payouts", headers=keys.acme, params={"account": account["id"]})
    assert [p["amount"] for p in payouts.json()["data"]] == [400]
    long_name = client.post(
        f"/dashboard/payouts/{account['id']}/external_accounts/{bank['id']}",
        data={"csrf_token": token, "account_holder_name": "x" * 201},
    )
    assert long_name.status_code == 422 and "at most 200 characters" in long_name.text
    other = globex.post(
        f"/dashboard/payouts/{account['id']}/external_accounts/{bank['id']}",
        data={"csrf_token": globex_token, "account_holder_name": "Mallory"},
    )
    assert other.status_code == 404
