"""Events and webhooks: signing (checked by stripe-python as a receiver would), endpoints,
``/v1/events``, and the persistent delivery queue against a real local HTTP receiver.

Time is controlled by passing ``now`` to the worker's ticks rather than by sleeping; the
signature's own timestamp is the wall clock, as a receiver checks it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
import stripe
from sqlalchemy import select

from acr.db.models import Event, Organisation, WebhookDelivery, utcnow
from acr.db.session import make_engine, session_factory
from acr.events import emit
from acr.webhooks.delivery import RetryPolicy, WebhookWorker, claim_due, fan_out
from acr.webhooks.signing import SIGNATURE_HEADER, SignatureVerificationError, sign, verify

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from api.services import Services
    from tests.conftest import Keys

SECRET = "whsec_test_0123456789abcdef"
PAYLOAD = b'{"id":"evt_1","object":"event","type":"payout.paid","data":{"object":{}}}'
FAST = RetryPolicy(max_attempts=3, base_s=60, cap_s=3600, jitter=0.2, timeout_s=3)
"""Three attempts, the second 48-60 s after the first, the third 96-120 s after that."""


# -- signing -------------------------------------------------------------------------------


def test_signature_round_trip_is_accepted_by_stripe() -> None:
    header = sign(PAYLOAD, SECRET)
    event = stripe.Webhook.construct_event(PAYLOAD, header, SECRET)
    assert event["id"] == "evt_1" and event["type"] == "payout.paid"
    assert verify(PAYLOAD, header, SECRET) == int(header.split(",")[0][2:])
    assert verify(PAYLOAD.decode(), header, SECRET)  # str bodies too


@pytest.mark.parametrize(
    ("body", "secret", "age_s"),
    [
        (PAYLOAD.replace(b"paid", b"fail"), SECRET, 0),  # tampered body
        (PAYLOAD, "whsec_someone_else", 0),  # wrong secret
        (PAYLOAD, SECRET, 301),  # outside the 300 s tolerance
    ],
)
def test_tampering_and_stale_signatures_are_refused_by_both(
    body: bytes, secret: str, age_s: int
) -> None:
    header = sign(PAYLOAD, SECRET, int(time.time()) - age_s)
    with pytest.raises(SignatureVerificationError):
        verify(body, header, secret)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, header, secret)


def test_tolerance_and_malformed_headers() -> None:
    old = sign(PAYLOAD, SECRET, 1_000_000)
    assert verify(PAYLOAD, old, SECRET, tolerance_s=None) == 1_000_000
    assert verify(PAYLOAD, old, SECRET, now=1_000_100)
    for header in (None, "", "t=abc,v1=00", "v1=00", "t=1", "t=1,v1=é"):
        with pytest.raises(SignatureVerificationError):
            verify(PAYLOAD, header, SECRET)


def test_several_v1_signatures_while_a_secret_rolls() -> None:
    header = sign(PAYLOAD, [SECRET, "whsec_old"])
    assert header.count("v1=") == 2
    for secret in (SECRET, "whsec_old"):
        verify(PAYLOAD, header, secret)
        stripe.Webhook.construct_event(PAYLOAD, header, secret)
    with pytest.raises(SignatureVerificationError):
        verify(PAYLOAD, header, "whsec_other")


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def api(services: Services) -> Iterator[TestClient]:
    """The app without its background work: the tests tick the webhook worker themselves."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.routers import events, webhooks

    app = create_app(services, background=False)
    paths = {getattr(route, "path", "") for route in app.routes}
    for router, path in ((events.router, "/v1/events"), (webhooks.router, "/v1/webhook_endpoints")):
        if path not in paths:  # until api/app.py includes them
            app.include_router(router)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def org_id(services: Services, slug: str) -> str:
    with services.sessions() as session:
        return session.scalars(select(Organisation.id).where(Organisation.slug == slug)).one()


def emit_event(
    services: Services,
    type: str,
    organisation_id: str | None,
    created_at: datetime | None = None,
    **data: Any,
) -> str:
    with services.sessions() as session:
        event = emit(session, type, {"object": {"object": type.split(".")[0], **data}},
                     organisation_id=organisation_id)  # fmt: skip
        if created_at is not None:
            event.created_at = created_at
        session.commit()
        return event.id


@dataclass
class Received:
    path: str
    event: dict[str, Any]
    attempt: str
    content_type: str


@dataclass
class Receiver:
    """A real HTTP server that checks each delivery with stripe-python, as a receiver would."""

    base_url: str
    secrets: dict[str, str] = field(default_factory=dict)
    """Path → the endpoint's secret."""
    script: dict[str, list[int]] = field(default_factory=dict)
    """Path → statuses to answer in turn (then 200)."""
    received: list[Received] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                secret = state.secrets.get(self.path, "")
            try:
                event = stripe.Webhook.construct_event(body, self.headers[SIGNATURE_HEADER], secret)
            except stripe.SignatureVerificationError as error:
                with state.lock:
                    state.refused.append(str(error))
                self.send_response(400)
                self.end_headers()
                return
            with state.lock:
                state.received.append(
                    Received(
                        self.path,
                        event.to_dict(),
                        self.headers["Acr-Delivery-Attempt"],
                        self.headers["Content-Type"],
                    )
                )
                queue = state.script.get(self.path)
                status = queue.pop(0) if queue else 200
            reply = b'{"received": true}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = Receiver(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def add_endpoint(
    api: TestClient,
    key: dict[str, str],
    receiver: Receiver,
    path: str,
    events: list[str],
    **extra: Any,
) -> dict[str, Any]:
    answer = api.post(
        "/v1/webhook_endpoints",
        headers=key,
        json={"url": receiver.base_url + path, "enabled_events": events, **extra},
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    receiver.secrets[path] = created["secret"]
    return created


def deliveries(api: TestClient, key: dict[str, str], endpoint_id: str) -> list[dict[str, Any]]:
    answer = api.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries", headers=key)
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


def worker(services: Services, policy: RetryPolicy = FAST) -> WebhookWorker:
    return WebhookWorker(services.sessions, policy=policy)


# -- endpoints -----------------------------------------------------------------------------


def test_endpoint_crud_shows_the_secret_once_and_keeps_tenants_apart(
    api: TestClient, keys: Keys
) -> None:
    created = api.post(
        "/v1/webhook_endpoints",
        headers=keys.acme,
        json={"url": "https://hooks.example/acr", "enabled_events": ["payout.*", "payout.paid"],
              "description": "payouts", "metadata": {"team": "finance"}},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_") and endpoint["status"] == "enabled"
    assert endpoint["enabled_events"] == ["payout.*", "payout.paid"]
    path = f"/v1/webhook_endpoints/{endpoint['id']}"

    shown = api.get(path, headers=keys.acme).json()
    assert "secret" not in shown and shown["url"] == "https://hooks.example/acr"
    listed = api.get("/v1/webhook_endpoints", headers=keys.acme).json()
    assert [e["id"] for e in listed["data"]] == [endpoint["id"]]
    assert all("secret" not in e for e in listed["data"])

    # Another organisation sees nothing of it; an admin sees it; a viewer app is refused.
    assert api.get(path, headers=keys.globex).status_code == 404
    assert api.patch(path, headers=keys.globex, json={"status": "disabled"}).status_code == 404
    assert api.delete(path, headers=keys.globex).status_code == 404
    assert api.get(f"{path}/deliveries", headers=keys.globex).status_code == 404
    assert api.get("/v1/webhook_endpoints", headers=keys.globex).json()["data"] == []
    assert api.get(path, headers=keys.admin).status_code == 200
    assert api.get("/v1/webhook_endpoints", headers=keys.tv_app).status_code == 403

    for body, field_ in (
        ({"url": "ftp://hooks.example/x", "enabled_events": ["*"]}, "url"),
        ({"url": "https://", "enabled_events": ["*"]}, "url"),
        ({"url": "https://hooks.example/x", "enabled_events": ["payout.exploded"]},
         "enabled_events"),
        ({"url": "https://hooks.example/x", "enabled_events": []}, "enabled_events"),
    ):  # fmt: skip
        refused = api.post("/v1/webhook_endpoints", headers=keys.acme, json=body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["loc"][-1] == field_

    changed = api.patch(
        path, headers=keys.acme, json={"status": "disabled", "enabled_events": ["*"]}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["status"] == "disabled" and changed.json()["enabled_events"] == ["*"]
    assert "secret" not in changed.json()

    rolled = api.post(f"{path}/roll_secret", headers=keys.acme, json={"expires_in_s": 3600})
    assert rolled.status_code == 200
    assert rolled.json()["secret"] != endpoint["secret"]

    deleted = api.delete(path, headers=keys.acme)
    assert deleted.json() == {"id": endpoint["id"], "object": "webhook_endpoint", "deleted": True}
    assert api.get(path, headers=keys.acme).status_code == 404

    # An admin's endpoint may belong to no organisation (it gets every event).
    platform = api.post(
        "/v1/webhook_endpoints",
        headers=keys.admin,
        json={"url": "http://127.0.0.1:9/hook", "enabled_events": ["*"]},
    )
    assert platform.status_code == 201 and platform.json()["organisation_id"] is None


# -- /v1/events ----------------------------------------------------------------------------


def test_events_are_listed_with_filters_pages_and_tenancy(
    api: TestClient, services: Services, keys: Keys
) -> None:
    acme, globex = org_id(services, "acme"), org_id(services, "globex")
    base = datetime(2030, 1, 1, tzinfo=utcnow().tzinfo)
    kinds = [
        "payout.created",
        "payout.paid",
        "account.updated",
        "payout.failed",
        "balance.available",
    ]
    ids = [
        emit_event(services, kind, acme, base + timedelta(minutes=i), n=i)
        for i, kind in enumerate(kinds)
    ]
    theirs = emit_event(services, "payout.paid", globex, base + timedelta(minutes=10))

    def listed(key: dict[str, str], **params: Any) -> list[str]:
        found: list[str] = []
        cursor = None
        while True:
            query = {**params, "limit": 2, **({"starting_after": cursor} if cursor else {})}
            page = api.get("/v1/events", headers=key, params=query)
            assert page.status_code == 200, page.text
            body = page.json()
            assert body["object"] == "list" and len(body["data"]) <= 2
            found += [event["id"] for event in body["data"]]
            if not body["has_more"]:
                return found
            cursor = body["next_cursor"]

    after = int(base.timestamp()) - 1
    assert listed(keys.acme, **{"created[gt]": after}) == ids[::-1]  # newest first, all pages
    assert listed(keys.acme, type="payout.*", **{"created[gt]": after}) == [ids[3], ids[1], ids[0]]
    assert listed(keys.acme, type="payout.paid") == [ids[1]]
    window = {
        "created[gte]": int(base.timestamp()) + 60,
        "created[lt]": int(base.timestamp()) + 180,
    }
    assert listed(keys.acme, **window) == [ids[2], ids[1]]
    assert theirs not in listed(keys.acme)
    assert listed(keys.globex, type="payout.*") == [theirs]
    assert set(listed(keys.admin, **{"created[gt]": after})) == {*ids, theirs}

    one = api.get(f"/v1/events/{ids[1]}", headers=keys.acme).json()
    assert one["object"] == "event" and one["type"] == "payout.paid" and one["livemode"] is False
    assert one["created"] == int(base.timestamp()) + 60 and one["data"]["object"]["n"] == 1
    assert api.get(f"/v1/events/{ids[1]}", headers=keys.globex).status_code == 404
    assert api.get("/v1/events", headers=keys.tv_app).status_code == 403
    refused = api.get("/v1/events", headers=keys.acme, params={"starting_after": theirs})
    assert refused.status_code == 422


# -- delivery ------------------------------------------------------------------------------


def test_a_failed_delivery_is_retried_with_backoff_and_logged(
    api: TestClient, services: Services, keys: Keys, receiver: Receiver
) -> None:
    acme, globex = org_id(services, "acme"), org_id(services, "globex")
    endpoint = add_endpoint(api, keys.acme, receiver, "/acme", ["payout.*"])
    receiver.script["/acme"] = [500, 200]
    paid = emit_event(services, "payout.paid", acme, amount=1000)
    emit_event(services, "payout.paid", globex)  # another organisation's
    emit_event(services, "account.updated", acme)  # not subscribed to
    now = utcnow()
    hooks = worker(services)
    try:
        hooks.tick(now)
        assert [r.attempt for r in receiver.received] == ["1"]
        hooks.tick(now + timedelta(seconds=30))  # not due yet (48-60 s backoff)
        assert len(receiver.received) == 1
        hooks.tick(now + timedelta(seconds=61))
    finally:
        hooks.close()
    assert [r.attempt for r in receiver.received] == ["1", "2"]
    assert receiver.refused == []
    first = receiver.received[0]
    assert first.content_type == "application/json"
    assert first.event["id"] == paid and first.event["type"] == "payout.paid"
    assert first.event["object"] == "event" and first.event["data"]["object"]["amount"] == 1000
    assert isinstance(first.event["created"], int) and first.event["livemode"] is False

    (log,) = deliveries(api, keys.acme, endpoint["id"])
    assert log["event_id"] == paid and log["status"] == "succeeded" and log["attempts"] == 2
    assert [a["status_code"] for a in log["attempt_log"]] == [500, 200]
    first_at, second_at = (datetime.fromisoformat(a["attempted_at"]) for a in log["attempt_log"])
    assert timedelta(seconds=48) <= second_at - first_at <= timedelta(seconds=61)
    assert log["attempt_log"][0]["error"] == "HTTP 500"
    assert log["attempt_log"][1]["response_excerpt"] == '{"received": true}'


def test_an_unreachable_endpoint_fails_after_the_last_attempt(
    api: TestClient, services: Services, keys: Keys
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    created = api.post(
        "/v1/webhook_endpoints",
        headers=keys.acme,
        json={"url": f"http://127.0.0.1:{port}/down", "enabled_events": ["*"]},
    ).json()
    emit_event(services, "payout.failed", org_id(services, "acme"))
    now = utcnow()
    hooks = worker(services)
    try:
        for minutes in (0, 1, 3, 10):
            hooks.tick(now + timedelta(minutes=minutes))
    finally:
        hooks.close()
    (log,) = deliveries(api, keys.acme, created["id"])
    assert log["status"] == "failed" and log["attempts"] == FAST.max_attempts
    assert log["next_attempt_at"] is None
    assert [a["status_code"] for a in log["attempt_log"]] == [None, None, None]
    assert all(a["error"].startswith("ConnectError") for a in log["attempt_log"])

    retried = api.post(
        f"/v1/webhook_endpoints/{created['id']}/deliveries/{log['id']}/retry", headers=keys.acme
    )
    assert retried.status_code == 200 and retried.json()["status"] == "pending"


def test_the_queue_survives_a_restart_and_a_worker_dying_mid_send(
    api: TestClient, services: Services, keys: Keys, receiver: Receiver
) -> None:
    acme = org_id(services, "acme")
    endpoint = add_endpoint(api, keys.acme, receiver, "/acme", ["payout.paid", "payout.created"])
    receiver.script["/acme"] = [503, 200]
    first = emit_event(services, "payout.paid", acme)
    now = utcnow()
    policy = RetryPolicy(max_attempts=3, base_s=10, jitter=0, timeout_s=10)
    assert policy.lease == timedelta(seconds=50)

    def process() -> tuple[WebhookWorker, Any]:
        """A worker as another server process has it: its own engine and connections."""
        engine = make_engine(services.settings.database_url)
        return WebhookWorker(session_factory(engine), policy=policy), engine

    before, engine = process()
    before.tick(now)  # the first attempt fails
    before.close()
    engine.dispose()

    # A second event is claimed by a worker that then dies without a word.
    second = emit_event(services, "payout.created", acme)
    engine = make_engine(services.settings.database_url)
    sessions = session_factory(engine)
    fan_out(sessions, now)
    (lost,) = claim_due(sessions, now, 1, policy.lease)
    assert lost.event_id == second
    engine.dispose()

    after, engine = process()
    try:
        after.tick(now + timedelta(seconds=20))  # the first is due again; the second is leased
        assert [(r.event["id"], r.attempt) for r in receiver.received] == [
            (first, "1"),
            (first, "2"),
        ]
        after.tick(now + policy.lease + timedelta(seconds=1))
    finally:
        after.close()
        engine.dispose()
    assert [(r.event["id"], r.attempt) for r in receiver.received][2:] == [(second, "2")]
    logs = {log["event_id"]: log for log in deliveries(api, keys.acme, endpoint["id"])}
    assert logs[first]["status"] == logs[second]["status"] == "succeeded"
    # The attempt lost with its worker left no log line; the one after it did.
    assert [a["number"] for a in logs[second]["attempt_log"]] == [2]


def test_two_workers_deliver_each_event_once_per_endpoint(
    api: TestClient, services: Services, keys: Keys, receiver: Receiver
) -> None:
    acme = org_id(services, "acme")
    add_endpoint(api, keys.acme, receiver, "/acme", ["payout.*"])
    add_endpoint(api, keys.admin, receiver, "/platform", ["*"])
    disabled = add_endpoint(api, keys.acme, receiver, "/disabled", ["*"])
    api.patch(
        f"/v1/webhook_endpoints/{disabled['id']}", headers=keys.acme, json={"status": "disabled"}
    )
    events = [emit_event(services, "payout.paid", acme, n=i) for i in range(15)]
    events += [emit_event(services, "balance.available", None, n=i) for i in range(5)]

    now = utcnow()
    engines = [make_engine(services.settings.database_url) for _ in range(2)]
    workers = [WebhookWorker(session_factory(e), policy=FAST, concurrency=4) for e in engines]
    start = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def run(hooks: WebhookWorker) -> None:
        try:
            start.wait()
            for _ in range(30):
                hooks.tick(now)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(hooks,)) for hooks in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for hooks, engine in zip(workers, engines, strict=True):
        hooks.close()
        engine.dispose()
    assert errors == []
    got = [(r.path, r.event["id"]) for r in receiver.received]
    expected = [("/acme", e) for e in events[:15]] + [("/platform", e) for e in events]
    assert sorted(got) == sorted(expected)  # each once: no duplicate, nothing missing
    assert all(r.attempt == "1" for r in receiver.received)
    with services.sessions() as session:
        rows = session.scalars(select(WebhookDelivery)).all()
        assert len(rows) == len(expected) and {row.status for row in rows} == {"succeeded"}
        assert session.scalars(select(Event.id)).all()  # the events themselves stay


def test_a_rolled_secret_keeps_signing_and_a_deleted_endpoint_stops(
    api: TestClient, services: Services, keys: Keys, receiver: Receiver
) -> None:
    acme = org_id(services, "acme")
    endpoint = add_endpoint(api, keys.acme, receiver, "/acme", ["payout.paid"])
    old_secret = receiver.secrets["/acme"]
    path = f"/v1/webhook_endpoints/{endpoint['id']}"
    rolled = api.post(f"{path}/roll_secret", headers=keys.acme, json={"expires_in_s": 3600})
    new_secret = rolled.json()["secret"]
    emit_event(services, "payout.paid", acme)
    now = utcnow()
    hooks = worker(services)
    try:
        hooks.tick(now)  # the receiver still checks with the old secret: it is signed with both
        assert len(receiver.received) == 1 and receiver.refused == []
        receiver.secrets["/acme"] = new_secret
        receiver.script["/acme"] = [500]
        emit_event(services, "payout.paid", acme)
        hooks.tick(now)
        assert len(receiver.received) == 2 and receiver.refused == []
        assert old_secret != new_secret

        # Deleting the endpoint cancels the retry that was due.
        assert api.delete(path, headers=keys.acme).status_code == 200
        hooks.tick(now + timedelta(hours=1))
    finally:
        hooks.close()
    assert len(receiver.received) == 2
    with services.sessions() as session:
        statuses = sorted(session.scalars(select(WebhookDelivery.status)).all())
    assert statuses == ["canceled", "succeeded"]
