"""The dashboard end to end, in a real headless browser against a real server.

``acr serve --demo`` runs on loopback (SQLite, the demo catalogue indexed, the
background indexer, schedule and payouts passes running); Debian's Chromium,
driven by Playwright, signs in, creates a campaign on demo content and starts
it; a viewer app sends the demo's living-room recording to ``POST /v1/match``;
the report shows the engagement and the content owner's pending balance rises.
A payout to a closed bank account fails on the simulated bank, the page shows
its failure code, and updating the bank account lifts the block. The pages'
screenshots for the README are written to ``docs/screenshots``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from acr.db.models import utcnow
from acr.db.session import make_engine, session_factory
from acr.payouts.scheduler import run_pass
from acr.settings import Settings
from tests.conftest import ROOT
from tests.payout_helpers import fund

CHROMIUM = Path(os.environ.get("ACR_TEST_CHROMIUM", "/usr/bin/chromium"))
README_SCREENSHOTS = ROOT / "docs" / "screenshots"
"""Where ``ACR_UPDATE_SCREENSHOTS=1`` writes the README's screenshots (else a temporary one)."""
MAX_SCREENSHOT_BYTES = 150_000
CLOSED_BANK = "000111111113"
"""The simulated bank's test number whose payouts fail with ``account_closed``."""
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 800}

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
if not CHROMIUM.exists():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install Debian's package (`apt-get install -y chromium`, "
        "as .ci/run does) or point ACR_TEST_CHROMIUM at one",
        allow_module_level=True,
    )


@dataclass(frozen=True)
class Server:
    url: str
    data_dir: Path
    keys: dict[str, str]

    def api(self, role: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.keys[role]}"}, timeout=30
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``acr serve --demo`` on a free loopback port, with fast background passes."""
    data = tmp_path_factory.mktemp("dashboard") / "data"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACR_")}
    env.update(
        ACR_DATA_DIR=str(data),
        ACR_SECRET_KEY="dashboard-browser-test",
        ACR_SCHEDULER_INTERVAL_S="0.5",
        ACR_INDEXER_POLL_S="0.2",
        PYTHONPATH=str(ROOT),
    )
    log = (data.parent / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "acr", "serve", "--demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (data.parent / "server.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        keys = json.loads((data / "demo-keys.json").read_text())
        yield Server(url, data, keys)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("ACR_UPDATE_SCREENSHOTS") == "1":
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return README_SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


def shoot(page: Any, directory: Path, name: str) -> None:
    """A screenshot for the README: the viewport only, so that it stays small."""
    path = directory / f"{name}.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size <= MAX_SCREENSHOT_BYTES


def sign_in(page: Any, server: Server, key: str) -> None:
    """Sign in with the keyboard only: skip link, then the key field, then Enter."""
    page.goto(f"{server.url}/dashboard")
    assert page.url.startswith(f"{server.url}/dashboard/sign-in")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.locator("#api_key").focus()
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/dashboard/campaigns")


def sign_out(page: Any) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/dashboard/sign-in**")


def unlabelled_fields(page: Any) -> list[str]:
    return list(
        page.evaluate(
            """[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                 .filter((e) => !e.labels || e.labels.length === 0 && !e.getAttribute('aria-label'))
                 .map((e) => e.name || e.id)"""
        )
    )


def pending(server: Server, account_id: str) -> int:
    with server.api("admin") as api:
        body = api.get(f"/v1/accounts/{account_id}/balance").json()
    return sum(item["amount"] for item in body["pending"] if item["currency"] == "usd")


def test_a_campaign_from_sign_in_to_the_owners_balance(
    server: Server, browser: Any, screenshots: Path
) -> None:
    page = browser.new_page(viewport=WIDE)
    sign_in(page, server, server.keys["campaign_manager"])
    assert page.get_by_role("link", name="Wild Coasts — meet the film crew").is_visible()
    shoot(page, screenshots, "campaigns")

    # A viewer-app key is refused with a reason.
    other = browser.new_page(viewport=WIDE)
    other.goto(f"{server.url}/dashboard/sign-in")
    other.fill("#api_key", server.keys["viewer_app"])
    other.get_by_role("button", name="Sign in").click()
    assert "viewer_app key cannot sign in" in other.get_by_role("alert").inner_text()
    other.close()

    # Create a campaign on a demo programme; a wrong window is refused beside its field.
    page.get_by_role("link", name="New campaign").click()
    assert unlabelled_fields(page) == []
    page.fill("#f-name", "Coast jackets — autumn")
    page.fill("#f-advertiser", "Northwind Outdoor")
    page.select_option("#f-triggers-0-content_id", label="Wild Coasts, ep. 3 (programme, 1:15.0)")
    page.fill("#f-triggers-0-start_s", "25")
    page.fill("#f-triggers-0-end_s", "10")
    page.fill("#f-payload-title", "Jackets for this coast")
    page.fill("#f-payload-text", "Rain-proof, as filmed in episode 3.")
    page.fill("#f-payload-coupon_code", "AUTUMN15")
    page.fill("#f-payload-url", "https://example.com/jackets")
    page.fill("#f-cost_per_engagement", "1.00")
    page.fill("#f-budget_total", "50")
    page.fill("#f-revenue_share_percent", "50")
    page.get_by_role("button", name="Create campaign").click()
    summary = page.locator("#error-summary")
    assert "Trigger 1: “To” must be after “From”." in summary.inner_text()
    assert page.evaluate("document.activeElement.id") == "error-summary"
    shoot(page, screenshots, "campaign-form-errors")
    page.fill("#f-triggers-0-end_s", "45")
    page.get_by_role("button", name="Create campaign").click()
    page.wait_for_url("**/dashboard/campaigns/cmp_*")
    campaign_id = page.url.split("/campaigns/")[1].split("?")[0]
    assert "draft" in page.locator("h1 .badge").inner_text()
    page.get_by_role("button", name="Start").click()
    page.wait_for_url("**?notice=start")
    assert page.locator("h1 .badge").inner_text() == "running"
    assert page.get_by_role("button", name="Pause").is_visible()
    timeline = page.get_by_role(
        "img", name="Timeline of Wild Coasts, ep. 3 with 1 trigger window(s)"
    )
    assert timeline.is_visible()
    assert "From 0:25.0 to 0:45.0" in page.locator(".windows").inner_text()
    assert "AUTUMN15" in page.locator(".phone").inner_text()
    shoot(page, screenshots, "campaign")

    # A viewer app hears the programme 31.4 s in: our campaign (25–45 s) is served.
    with server.api("campaign_manager") as api:
        campaign = api.get(f"/v1/campaigns/{campaign_id}").json()
        owner = api.get(f"/v1/content/{campaign['triggers'][0]['content_id']}").json()
        owner_account = owner["owner_account_id"]
    before = pending(server, owner_account)
    sample = server.data_dir / "demo" / "samples" / "living-room.wav"
    with server.api("viewer_app") as api:
        matched = api.post(
            "/v1/match",
            data={"viewer_id": "browser-test-viewer"},
            files={"sample": (sample.name, sample.read_bytes(), "audio/wav")},
        )
    assert matched.status_code == 200, matched.text
    served = {c["id"] for c in matched.json()["campaigns"]}
    assert campaign_id in served
    with server.api("admin") as api:
        shares = sum(
            c["cost_per_engagement"] * c["revenue_share_bps"] // 10_000
            for c in (api.get(f"/v1/campaigns/{cid}").json() for cid in served)
        )

    page.get_by_role("link", name="Report").click()
    stats = page.locator(".stats").inner_text()
    assert "1\nengagements" in stats and "1.00 USD\nspent" in stats
    assert page.get_by_role("img", name="Engagements over time").is_visible()
    assert "Wild Coasts, ep. 3" in page.get_by_role("region", name="By content").inner_text()
    with page.expect_download() as download:
        page.get_by_role("link", name="by content").click()
    csv_lines = Path(download.value.path()).read_text().splitlines()
    assert csv_lines[0].startswith("period_start,content_id,engagements")
    assert len(csv_lines) == 2
    shoot(page, screenshots, "report")

    # The content owner is the platform's account: an admin key sees it, with the revenue pending.
    sign_out(page)
    sign_in(page, server, server.keys["admin"])
    page.get_by_role("link", name="Payouts").click()
    with server.api("admin") as api:
        owner_name = api.get(f"/v1/accounts/{owner_account}").json()["business_profile"]["name"]
    page.get_by_role("link", name=owner_name).click()
    expected = f"{(before + shares) / 100:,.2f} USD"
    deadline = time.monotonic() + 20
    while page.locator("tr[data-currency=usd] [data-pending]").inner_text() != expected:
        assert time.monotonic() < deadline, "the owner's pending balance did not rise"
        time.sleep(0.5)
        page.reload()
    assert shares > 0 and pending(server, owner_account) == before + shares
    page.close()


def test_a_failed_payout_blocks_until_the_bank_account_is_updated(
    server: Server, browser: Any, screenshots: Path
) -> None:
    with server.api("campaign_manager") as api:
        account = api.post(
            "/v1/accounts",
            json={
                "country": "US",
                "business_profile": {"name": "Bluefin Rights"},
                "settings": {"payouts": {"schedule": {"interval": "manual"}}},
            },
        ).json()
        bank = api.post(
            f"/v1/accounts/{account['id']}/external_accounts",
            json={
                "external_account": {
                    "object": "bank_account",
                    "country": "US",
                    "currency": "usd",
                    "routing_number": "110000000",
                    "account_number": CLOSED_BANK,
                },
                "default_for_currency": True,
            },
        )
        assert bank.status_code == 201, bank.text
    settings = Settings(_env_file=None, data_dir=server.data_dir)  # type: ignore[call-arg]
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    try:
        fund(sessions, account["id"], 2_000)

        page = browser.new_page(viewport=WIDE)
        sign_in(page, server, server.keys["campaign_manager"])
        page.get_by_role("link", name="Payouts").click()
        page.get_by_role("link", name="Bluefin Rights").click()
        assert page.locator("tr[data-currency=usd] [data-available]").inner_text() == "20.00 USD"
        page.fill("#f-amount", "5")
        page.get_by_role("button", name="Pay out").click()
        page.wait_for_url("**?notice=paid_out")
        # The simulated bank answers at the payout's arrival date: move its clock there.
        run_pass(sessions, settings, utcnow() + timedelta(days=10))
        page.reload()
        failed = page.locator("#payouts tr[data-status=failed]")
        assert failed.locator(".failure-code").inner_text() == "account_closed"
        assert "Payouts are blocked" in page.locator("#payouts-blocked").inner_text()
        # The 5.00 came back, dated by the bank's (future) clock: pending until then.
        assert page.locator("tr[data-currency=usd] [data-available]").inner_text() == "15.00 USD"
        assert page.locator("tr[data-currency=usd] [data-pending]").inner_text() == "5.00 USD"
        shoot(page, screenshots, "payouts-blocked")

        page.fill("#f-amount", "5")
        page.get_by_role("button", name="Pay out").click()
        refusal = page.locator("#f-payout-error").inner_text()
        assert "(external_account_disabled)" in refusal or "(payouts_blocked)" in refusal

        page.get_by_label("Account holder name").fill("Bluefin Rights Ltd")
        page.get_by_role("button", name="Update external account").click()
        page.wait_for_url("**?notice=updated")
        assert page.locator("#payouts-blocked").count() == 0
        assert page.locator(".external .badge").inner_text() == "verified"
        page.fill("#f-amount", "5")
        page.get_by_role("button", name="Pay out").click()
        page.wait_for_url("**?notice=paid_out")
        statuses = page.locator("#payouts tbody tr").evaluate_all(
            "(rows) => rows.map((row) => row.dataset.status)"
        )
        assert sorted(statuses) in (["failed", "pending"], ["failed", "in_transit"])
        assert page.locator("tr[data-currency=usd] [data-available]").inner_text() == "10.00 USD"
        page.close()
    finally:
        engine.dispose()


def test_upload_with_progress_indexing_and_delete_on_a_narrow_screen(
    server: Server, browser: Any, screenshots: Path
) -> None:
    page = browser.new_page(viewport=NARROW)
    sign_in(page, server, server.keys["campaign_manager"])
    shoot(page, screenshots, "campaigns-narrow")
    assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
    page.get_by_role("link", name="Content library").click()
    assert unlabelled_fields(page) == []
    sample = server.data_dir / "demo" / "samples" / "not-in-catalogue.m4a"
    page.set_input_files("#f-file", str(sample))
    page.select_option("#f-kind", "song")
    page.fill("#f-title", "Stranger tune")
    with page.expect_request(
        lambda r: r.method == "POST" and "/dashboard/content" in r.url
    ) as sent:
        page.get_by_role("button", name="Upload").click()
    assert sent.value.resource_type == "xhr"  # the script's upload, with its progress bar
    page.wait_for_url("**?notice=uploaded")
    row = page.locator("tr", has_text="Stranger tune")
    # The page refreshes itself while the content is being indexed.
    row.locator(".badge-ready").wait_for(timeout=30_000)
    page.on("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete Stranger tune").click()
    page.wait_for_url("**?notice=deleted")
    assert page.locator("tr", has_text="Stranger tune").count() == 0
    page.close()
