"""The service's demo: the demo catalogue in the library, two campaigns, keys, and a curl to try.

``acr serve --demo`` calls :func:`seed_demo` before the server starts. Every
step is idempotent: a restart finds what the first start made and reuses it.
"""

from __future__ import annotations

import json
import os
import shlex
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from acr.auth import AuthError, Role, authenticate, create_key
from acr.campaigns.changes import record_created
from acr.db.models import Account, Campaign, Content, Organisation, Trigger
from acr.db.session import make_engine, session_factory, write_session
from acr.demo import build_demo
from acr.library import ContentIndexer
from acr.library.imports import hash_planned, manifest_imports, register_planned
from acr.payouts.accounts import AccountFields, create_account
from acr.payouts.external_accounts import BankAccountDetails, create_external_account
from acr.settings import Settings

ORGANISATION = "demo-brand"
OWNERS = {
    "acct_northwind": "Northwind Broadcasting",
    "acct_bluefin": "Bluefin Studios",
    "acct_fizz": "Fizz Soda Ltd",
    "acct_roadster": "Roadster Motors",
}
"""The demo manifest's owners, and the connected accounts they become."""
DEMO_BANK = BankAccountDetails("US", "usd", "000123456789", "110000000")
"""The simulated bank pays this (Stripe's test) account number."""
APP = "demo-tv"
KEYS_FILE = "demo-keys.json"


def _campaigns(titles: dict[str, str], organisation_id: str) -> list[Campaign]:
    """The demo's campaigns: one on a moment of a programme, one on a whole advert."""
    common: dict[str, Any] = {
        "organisation_id": organisation_id,
        "status": "running",
        "cost_per_engagement": 25,
        "currency": "usd",
        "budget_total": 500_000,
        "revenue_share_bps": 3000,
    }
    crew = Campaign(
        name="Wild Coasts — meet the film crew",
        advertiser="Northwind Outdoor",
        payload={
            "title": "Meet the crew who filmed this coast",
            "text": "Behind the scenes of episode 3, and 20% off our waterproof jackets.",
            "url": "https://example.com/wild-coasts/crew",
            "image_url": "https://example.com/wild-coasts/crew.jpg",
            "coupon_code": "COAST20",
        },
        **common,
    )
    crew.triggers.append(Trigger(content_id=titles["Wild Coasts, ep. 3"], start_s=20.0, end_s=60.0))
    soda = Campaign(
        name="Fizz Soda — summer coupon",
        advertiser="Fizz Soda",
        payload={"title": "Summer is fizzier", "coupon_code": "FIZZ-SUMMER-25"},
        **common,
    )
    soda.triggers.append(Trigger(content_id=titles["Fizz Soda — summer spot"]))
    return [crew, soda]


def _connect_owners(session: Session, contents: list[Content], secret: bytes) -> int:
    """A connected account with a bank account for each owner in the manifest.

    The manifest names owners by label; their contents are pointed at the real
    accounts, which are found again by name when the demo restarts.
    """
    accounts = {
        account.business_name: account
        for account in session.scalars(
            select(Account).where(Account.business_name.in_(OWNERS.values()))
        )
    }
    for name in OWNERS.values():
        if name not in accounts:
            account = create_account(session, None, AccountFields(country="US", business_name=name))
            create_external_account(
                session, account, DEMO_BANK, secret=secret, default_for_currency=True
            )
            accounts[name] = account
    for content in contents:
        label = content.owner_account_id or ""
        if label in OWNERS:
            content.owner_account_id = accounts[OWNERS[label]].id
    return len(accounts)


def _keys(settings: Settings, factory: Any) -> dict[str, str]:
    """The demo keys, kept in the data directory so that restarts print the same ones."""
    path = settings.data_dir / KEYS_FILE
    if path.exists():
        kept: dict[str, str] = json.loads(path.read_text())
        with factory() as session:
            try:
                for secret in kept.values():
                    authenticate(session, secret)
                return kept
            except AuthError:
                pass  # the database was replaced: issue new ones
    with write_session(factory) as session:
        keys = {
            "admin": create_key(session, Role.ADMIN, name="demo admin").secret,
            "campaign_manager": create_key(
                session, Role.CAMPAIGN_MANAGER, organisation=ORGANISATION, name="demo"
            ).secret,
            "viewer_app": create_key(session, Role.VIEWER_APP, app=APP, name="demo").secret,
        }
        session.commit()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(keys, handle, indent=2)
    tmp.replace(path)
    return keys


def seed_demo(settings: Settings, *, base_url: str) -> str:
    """Put the demo in the service's database and index; return what to tell the user.

    The catalogue's media are registered in place (as an admin's import would)
    and indexed now, so the service answers as soon as it is up.
    """
    demo_dir = (settings.data_dir / "demo").resolve()
    manifest, _, samples = build_demo(demo_dir)
    planned, errors = manifest_imports(str(manifest), [demo_dir], default_kind="programme")
    if errors:
        raise RuntimeError(f"demo manifest: {errors[0].message}")
    hashed = hash_planned(planned)
    engine = make_engine(settings.database_url)
    factory = session_factory(engine)
    try:
        with write_session(factory) as session:
            contents = [row for row, _ in register_planned(session, hashed)]
            owners = _connect_owners(session, contents, settings.viewer_secret())
            session.commit()
        indexer = ContentIndexer(factory, settings)
        try:
            while indexer.tick():
                pass
        finally:
            indexer.close()
        keys = _keys(settings, factory)
        with write_session(factory) as session:
            organisation = session.scalars(
                select(Organisation).where(Organisation.slug == ORGANISATION)
            ).one()
            titles = {row.title: row.id for row in contents}
            exists = session.scalars(
                select(Campaign.name).where(Campaign.organisation_id == organisation.id)
            ).all()
            for campaign in _campaigns(titles, organisation.id):
                if campaign.name not in exists:
                    session.add(campaign)
                    session.flush()
                    record_created(session, campaign)
            session.commit()
            states = {
                row.title: row.status
                for row in session.scalars(
                    select(Content).where(Content.id.in_([row.id for row in contents]))
                )
            }
    finally:
        engine.dispose()
    not_ready = [title for title, status in states.items() if status != "ready"]
    if not_ready:
        raise RuntimeError(f"demo contents failed to index: {', '.join(not_ready)}")
    living_room = samples[0][0]
    curl = " ".join(
        [
            "curl -s",
            f"-H {shlex.quote('Authorization: Bearer ' + keys['viewer_app'])}",
            "-F viewer_id=demo-viewer",
            f"-F sample=@{shlex.quote(str(living_room))}",
            f"{base_url}/v1/match",
        ]
    )
    return "\n".join(
        [
            f"Demo ready ({datetime.now().astimezone():%Y-%m-%d %H:%M %Z}): "
            f"{len(states)} contents indexed from {manifest}; their revenue goes to "
            f"{owners} connected accounts (GET /v1/accounts with the admin key)",
            f"API keys (kept in {settings.data_dir / KEYS_FILE}):",
            *(f"  {role:<17} {secret}" for role, secret in keys.items()),
            f"Service: {base_url}  (interactive OpenAPI docs at {base_url}/docs)",
            "",
            f"Match a phone recording of '{samples[0][1]}' and get its campaign:",
            f"  {curl}",
            f"Other samples in {living_room.parent}/: "
            + ", ".join(path.name for path, _ in samples[1:]),
            "",
        ]
    )
