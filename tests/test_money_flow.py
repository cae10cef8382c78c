"""From a viewer's sample to money in a content owner's bank, through the HTTP API.

A sample matched to a content with a running campaign records an engagement;
the payouts pass accrues the owner's share (pending, then available after the
delay), pays it out automatically on the simulated bank, and a failing bank
account blocks payouts until it is updated. The clock is the pass's ``now``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from acr.db.models import Campaign, Content, Engagement, Organisation, Trigger, utcnow
from acr.index.catalogue import ContentSpec
from acr.index.store import Index
from acr.payouts.ledger import account_book, book_balance, verify
from acr.payouts.scheduler import run_pass
from api.app import create_app
from api.services import Services
from tests.conftest import ROOT, SONG_RATE, Keys, synth_song, write_audio

ROUTING = "110000000"
GOOD_BANK = "000123456789"
CLOSED_BANK = "000111111113"


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    """The app without its background tasks: the test runs the payouts pass itself."""
    with TestClient(create_app(services, background=False)) as test_client:
        yield test_client


def connected_account(client: TestClient, keys: Keys, name: str, bank_number: str) -> str:
    account = client.post(
        "/v1/accounts",
        headers=keys.admin,
        json={"country": "US", "business_profile": {"name": name}},
    )
    assert account.status_code == 201, account.text
    account_id: str = account.json()["id"]
    bank = client.post(
        f"/v1/accounts/{account_id}/external_accounts",
        headers=keys.admin,
        json={
            "external_account": {
                "object": "bank_account",
                "country": "US",
                "currency": "usd",
                "routing_number": ROUTING,
                "account_number": bank_number,
                "account_holder_name": name,
            }
        },
    )
    assert bank.status_code == 201, bank.text
    assert bank_number not in bank.text
    return account_id


def index_songs(services: Services, owners: list[str]) -> dict[str, np.ndarray]:
    songs: dict[str, np.ndarray] = {}
    with Index.open(services.settings.index_path) as index, services.sessions() as session:
        for seed, owner in enumerate(owners, start=40):
            samples = synth_song(seed, 12.0)
            row = Content(
                title=f"Show {seed}",
                kind="programme",
                status="ready",
                owner_account_id=owner,
                duration_s=12.0,
            )
            session.add(row)
            session.flush()
            index.add_samples(samples, SONG_RATE, ContentSpec(title=row.title, content_id=row.id))
            songs[row.id] = samples
        acme = session.scalars(select(Organisation).where(Organisation.slug == "acme")).one()
        campaign = Campaign(
            organisation_id=acme.id,
            name="Sponsor",
            advertiser="Acme",
            status="running",
            payload={"title": "hello"},
            cost_per_engagement=100,
            currency="usd",
            revenue_share_bps=3000,
        )
        campaign.triggers = [Trigger(content_id=content_id) for content_id in songs]
        session.add(campaign)
        session.commit()
    return songs


def match(client: TestClient, keys: Keys, samples: np.ndarray, tmp_path: Path) -> None:
    wav = write_audio(tmp_path / "q.wav", samples[2 * SONG_RATE : 6 * SONG_RATE]).read_bytes()
    response = client.post(
        "/v1/match",
        headers=keys.tv_app,
        data={"viewer_id": "viewer-1"},
        files={"sample": ("q.wav", io.BytesIO(wav))},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["campaigns"]) == 1


def balance(client: TestClient, keys: Keys, account_id: str) -> dict[str, int]:
    body = client.get(f"/v1/accounts/{account_id}/balance", headers=keys.admin).json()
    return {
        kind: sum(part["amount"] for part in body[kind] if part["currency"] == "usd")
        for kind in ("available", "pending")
    }


def test_revenue_reaches_the_bank_and_a_failed_payout_blocks_until_updated(
    client: TestClient, keys: Keys, services: Services, tmp_path: Path
) -> None:
    good = connected_account(client, keys, "Northwind", GOOD_BANK)
    closed = connected_account(client, keys, "Bluefin", CLOSED_BANK)
    songs = index_songs(services, [good, closed])
    for samples in songs.values():
        match(client, keys, samples, tmp_path)
    # The story happened three weeks ago: the passes' clock and the API's then agree on
    # what is past.
    start = utcnow() - timedelta(days=21)
    with services.sessions() as session:
        session.execute(update(Engagement).values(created_at=start))
        session.commit()

    run_pass(services.sessions, services.settings, start)
    with services.sessions() as session:
        on_the_day = book_balance(session, account_book(good), "usd", start)
        marks = session.execute(select(Engagement.accrued_at, Engagement.accrual_error)).all()
    assert marks == [(start, None)] * 2  # marked as accrued with the payments
    assert (on_the_day.available, on_the_day.pending) == (0, 30)
    assert balance(client, keys, good) == {"available": 30, "pending": 0}

    # Two days' delay by default: available, and paid out automatically (daily schedule).
    run_pass(services.sessions, services.settings, start + timedelta(days=3))
    payouts = client.get("/v1/payouts", headers=keys.admin).json()["data"]
    assert sorted((p["account"], p["amount"], p["automatic"]) for p in payouts) == sorted(
        [(good, 30, True), (closed, 30, True)]
    )
    assert {p["status"] for p in payouts} == {"in_transit"}
    assert balance(client, keys, good) == {"available": 0, "pending": 0}

    run_pass(services.sessions, services.settings, start + timedelta(days=10))
    by_account = {
        p["account"]: p for p in client.get("/v1/payouts", headers=keys.admin).json()["data"]
    }
    assert by_account[good]["status"] == "paid"
    failed = by_account[closed]
    assert (failed["status"], failed["failure_code"]) == ("failed", "account_closed")
    assert balance(client, keys, closed) == {"available": 30, "pending": 0}  # it came back

    externals = client.get(f"/v1/accounts/{closed}/external_accounts", headers=keys.admin)
    bank = externals.json()["data"][0]
    assert bank["status"] in {"errored", "disabled"}
    events = client.get(
        "/v1/events", headers=keys.admin, params={"type": "account.external_account.updated"}
    ).json()["data"]
    assert any(e["data"]["object"]["id"] == bank["id"] for e in events)

    blocked = client.post(
        "/v1/payouts", headers=keys.admin, json={"account": closed, "amount": 30, "currency": "usd"}
    )
    assert blocked.status_code == 409, blocked.text
    assert blocked.json()["code"] in {"payouts_blocked", "external_account_disabled"}

    updated = client.patch(
        f"/v1/accounts/{closed}/external_accounts/{bank['id']}",
        headers=keys.admin,
        json={"account_holder_name": "Bluefin Ltd"},
    )
    assert updated.status_code == 200 and updated.json()["status"] == "verified"
    lifted = client.post(
        "/v1/payouts", headers=keys.admin, json={"account": closed, "amount": 30, "currency": "usd"}
    )
    assert lifted.status_code == 201, lifted.text

    reconciliation = client.get(
        f"/v1/payouts/{by_account[good]['id']}/reconciliation", headers=keys.admin
    )
    assert reconciliation.status_code == 200
    with services.sessions() as session:
        assert verify(session) == []


def test_acr_payouts_run_and_verify_from_the_command_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACR_")}
    env.update({"ACR_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)})
    run = subprocess.run(
        [sys.executable, "-m", "acr", "payouts", "run", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["created"] == []
    checked = subprocess.run(
        [sys.executable, "-m", "acr", "payouts", "verify"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stderr
