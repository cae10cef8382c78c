"""``/v1/keys``, authentication, and errors every route shares."""

from __future__ import annotations

from fastapi.testclient import TestClient

from acr.auth import KeyCache, Role, create_key, revoke_key
from acr.db.session import write_session
from api.services import Services
from tests.conftest import Keys


def test_admin_issues_a_key_that_works_until_revoked(client: TestClient, keys: Keys) -> None:
    created = client.post(
        "/v1/keys", headers=keys.admin, json={"role": "campaign_manager", "organisation": "initech"}
    )
    assert created.status_code == 201, created.text
    key = created.json()
    headers = {"Authorization": f"Bearer {key['secret']}"}
    assert client.get("/v1/campaigns", headers=headers).status_code == 200
    listed = client.get("/v1/keys", headers=keys.admin).json()
    assert key["id"] in [k["id"] for k in listed]
    assert all("secret" not in k for k in listed)
    assert client.delete(f"/v1/keys/{key['id']}", headers=keys.admin).status_code == 200
    refused = client.get("/v1/campaigns", headers=headers)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert client.delete(f"/v1/keys/{key['id']}", headers=keys.admin).status_code == 404


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_revoked_elsewhere_stops_working_within_the_cache_ttl(
    client: TestClient, services: Services
) -> None:
    clock = FakeClock()
    services.keys = KeyCache(ttl_s=5.0, clock=clock)
    with write_session(services.sessions) as session:
        created = create_key(session, Role.CAMPAIGN_MANAGER, organisation="initech")
        session.commit()
    headers = {"Authorization": f"Bearer {created.secret}"}
    assert client.get("/v1/campaigns", headers=headers).status_code == 200
    # Revoked by another process (another worker, `acr keys revoke`): this one still
    # trusts what it checked until the entry expires, then asks the database again.
    with write_session(services.sessions) as session:
        assert revoke_key(session, created.key_id)
        session.commit()
    clock.now += 4.9
    assert client.get("/v1/campaigns", headers=headers).status_code == 200
    clock.now += 0.2
    assert client.get("/v1/campaigns", headers=headers).status_code == 401


def test_the_key_cache_keeps_only_keys_that_passed(services: Services) -> None:
    cache = KeyCache(max_keys=2)
    with write_session(services.sessions) as session:
        made = [create_key(session, Role.VIEWER_APP, app=f"app-{n}") for n in range(3)]
        session.commit()
    with services.sessions() as session:
        for key in made:
            assert cache.authenticate(session, key.secret) == key.principal
    assert cache.get(made[0].secret) is None  # it was full of live keys: they were dropped
    assert cache.get(made[2].secret) == made[2].principal
    assert cache.get(made[2].secret + "x") is None
    cache.forget(made[2].key_id)
    assert cache.get(made[2].secret) is None


def test_only_admins_manage_keys(client: TestClient, keys: Keys) -> None:
    for headers in (keys.acme, keys.tv_app):
        assert client.get("/v1/keys", headers=headers).status_code == 403
        attempt = client.post("/v1/keys", headers=headers, json={"role": "admin"})
        assert attempt.status_code == 403 and attempt.json()["code"] == "forbidden"
    assert client.get("/v1/keys").status_code == 401


def test_a_key_needs_the_scope_of_its_role(client: TestClient, keys: Keys) -> None:
    for body in (
        {"role": "campaign_manager"},
        {"role": "viewer_app", "organisation": "acme"},
        {"role": "admin", "app": "tv"},
        {"role": "campaign_manager", "organisation": "Not A Slug!"},
    ):
        response = client.post("/v1/keys", headers=keys.admin, json=body)
        assert response.status_code == 422, body
        assert response.json()["code"] == "invalid_scope"


def test_errors_are_problem_documents(client: TestClient, keys: Keys) -> None:
    malformed = client.post(
        "/v1/keys",
        headers={**keys.admin, "Content-Type": "application/json"},
        content=b'{"role": "admin",',
    )
    assert malformed.status_code == 400
    assert malformed.headers["content-type"] == "application/problem+json"
    assert malformed.json()["code"] == "malformed_json"
    invalid = client.post("/v1/keys", headers=keys.admin, json={"role": "owner"})
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["loc"] == ["body", "role"]
    missing = client.get("/v1/nothing-here", headers=keys.admin)
    assert missing.status_code == 404 and missing.json()["type"] == "/problems/not_found"
    wrong_method = client.put("/v1/keys", headers=keys.admin)
    assert wrong_method.status_code == 405
    for response in (malformed, invalid, missing, wrong_method):
        assert response.json()["request_id"] == response.headers["x-request-id"]


def test_probes_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/v1/match", "/v1/content", "/v1/campaigns", "/v1/keys"} <= set(schema["paths"])
