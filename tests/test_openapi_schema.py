"""Property-based tests of every operation of the service's OpenAPI schema (schemathesis).

Schemathesis reads ``/openapi.json`` from the app (through ASGI, no server),
generates requests for each operation and checks that the app never answers
with a server error and that every answer matches the response schema the
app publishes. The calls carry real keys: an admin key, and a viewer-app key
for ``/v1/match``. SQLite only: the PostgreSQL run would double the time and
the contract does not depend on the database.

Bounded so that the whole module stays well under a minute and a half on two
cores: :data:`MAX_EXAMPLES` examples per operation, no deadline, no example
database (runs are reproducible with ``derandomize``).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402 - schemathesis brings hypothesis
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

if TYPE_CHECKING:
    from api.services import Services

MAX_EXAMPLES = 12
"""Examples generated per operation."""

VIEWER_PATHS = frozenset({"/v1/match"})
"""Operations called with the viewer-app key (every other one gets the admin key)."""


SEEDED_FRACTION = 2
"""One generated path id in this many is replaced by the id of a seeded object, so that the
operations on one content, campaign or trigger also run past their 404 (key ids are never
replaced: a generated DELETE must not revoke the test's own keys)."""


@dataclass(frozen=True)
class SchemaKeys:
    admin: dict[str, str]
    viewer: dict[str, str]
    ids: dict[str, str]
    """Path parameter name → id of a seeded object (content_id, campaign_id, trigger_id)."""


@pytest.fixture(scope="module")
def schema_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Services on a fresh SQLite database and an empty index."""
    from acr.db.session import migrate
    from acr.index.store import Index
    from acr.settings import Settings
    from api.services import build_services

    root = tmp_path_factory.mktemp("openapi")
    built_settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=root / "data",
        database_url=f"sqlite:///{root / 'acr.db'}",
        secret_key="schema-test-secret",
        import_roots=[root / "imports"],
    )
    (root / "imports").mkdir()
    migrate(built_settings.database_url)
    Index.open(built_settings.index_path, create=True).close()
    services = build_services(built_settings)
    yield services
    services.close()


@pytest.fixture(scope="module")
def schema_keys(schema_services: Services) -> SchemaKeys:
    from acr.auth import Role, create_key

    def bearer(role: Role, **scope: str) -> dict[str, str]:
        with schema_services.sessions() as session:
            created = create_key(session, role, name="schemathesis", **scope)
            session.commit()
        return {"Authorization": f"Bearer {created.secret}"}

    admin = bearer(Role.ADMIN)
    viewer = bearer(Role.VIEWER_APP, app="schema-app")
    return SchemaKeys(admin=admin, viewer=viewer, ids=_seed(schema_services, admin))


def _seed(services: Services, admin: dict[str, str]) -> dict[str, str]:
    """A ready content and a draft campaign of organisation ``acme`` with a trigger on it."""
    from fastapi.testclient import TestClient

    from acr.auth import Role, create_key
    from acr.db.models import Content, utcnow
    from api.app import create_app

    with services.sessions() as session:
        organisation = create_key(session, Role.CAMPAIGN_MANAGER, organisation="acme")
        content = Content(
            title="Seeded programme",
            kind="programme",
            status="ready",
            sha256="0" * 64,
            duration_s=600.0,
            indexed_at=utcnow(),
        )
        session.add(content)
        session.commit()
        content_id = content.id
    with TestClient(create_app(services, background=False)) as client:
        created = client.post(
            "/v1/campaigns",
            headers=admin,
            json={
                "organisation_id": organisation.principal.organisation_id,
                "name": "Seeded campaign",
                "advertiser": "Acme",
                "triggers": [{"content_id": content_id, "start_s": 10.0, "end_s": 20.0}],
                "payload": {"title": "Hello"},
            },
        )
    assert created.status_code == 201, created.text
    campaign = created.json()
    return {
        "content_id": content_id,
        "campaign_id": campaign["id"],
        "trigger_id": campaign["triggers"][0]["id"],
    }


@pytest.fixture(scope="module")
def schema_app(schema_services: Services) -> Any:
    """The app the generated requests go to (through ASGI, in process)."""
    from api.app import create_app

    return create_app(schema_services, background=False)


def published_schema() -> dict[str, Any]:
    """The app's OpenAPI document, built without touching any disk or database.

    The schema is needed when the tests are collected, before any fixture runs
    (schemathesis' lazy ``from_fixture`` loader does not work with pytest 9),
    so it comes from an app whose services are never used; the requests go to
    :func:`schema_app`, built by the same code on a real database.
    """
    from acr.settings import Settings
    from api.app import create_app
    from api.services import build_services

    services = build_services(
        Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=Path("/nonexistent/acr-openapi-schema"),
            database_url="sqlite:///:memory:",
            secret_key="schema-only",
        )
    )
    try:
        document: dict[str, Any] = create_app(services, background=False).openapi()
    finally:
        services.close()
    return document


schema = schemathesis.openapi.from_dict(published_schema())


@schema.parametrize()  # type: ignore[untyped-decorator]
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_operation_conforms_to_its_schema(
    case: Any, schema_app: Any, schema_keys: SchemaKeys
) -> None:
    """No 5xx, and every answer's body matches the schema the app publishes."""
    headers = schema_keys.viewer if case.path in VIEWER_PATHS else schema_keys.admin
    for name, value in list((case.path_parameters or {}).items()):
        if name in schema_keys.ids and zlib.crc32(repr(value).encode()) % SEEDED_FRACTION == 0:
            case.path_parameters[name] = schema_keys.ids[name]
    case.call_and_validate(
        app=schema_app,
        headers=headers,
        checks=[not_a_server_error, response_schema_conformance],
    )


def test_schema_covers_the_service(schema_app: Any) -> None:
    """The schema generated from is the one the app serves, with the service's routes."""
    assert schema_app.openapi() == schema.raw_schema
    paths = set(schema.raw_schema["paths"])
    assert {"/v1/match", "/healthz"} <= paths
