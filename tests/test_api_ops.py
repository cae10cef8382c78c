"""Operations: request ids, JSON logs, metrics, body limits, rate limits, probes."""

from __future__ import annotations

import io
import json
import logging
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import create_engine

from acr.auth import Principal, Role
from acr.ratelimit import InProcessRateLimiter, RedisRateLimiter, redis_client
from acr.settings import Settings
from api import limits, observability, problems
from api.app import create_app
from api.ratelimiting import RateLimitedViewerAppDep
from api.routers import health
from api.services import Services
from tests.conftest import Keys

SAMPLE_BYTES = 1000
SAMPLE_LIMIT = SAMPLE_BYTES + limits.ENVELOPE_BYTES
"""What the middleware lets through to ``POST /v1/match`` with these settings."""

calls: list[str] = []
"""Routes of the test app that ran, to tell an early refusal from a late one."""

routes = APIRouter()


@routes.get("/items/{item_id}")
def get_item(item_id: str) -> dict[str, str]:
    calls.append("items")
    logging.getLogger("acr.test").info("fetching %s", item_id, extra={"item": item_id})
    return {"id": item_id}


@routes.get("/whoami")
def whoami(request: Request) -> dict[str, str]:
    request.state.principal = Principal(key_id="key_123", role=Role.VIEWER_APP, app_id="tv")
    return {"key": "key_123"}


@routes.get("/boom")
def boom() -> None:
    raise RuntimeError("boom")


@routes.post("/v1/match")
async def match(request: Request) -> dict[str, int]:
    calls.append("match")
    return {"size": len(await request.body())}


@routes.post("/swallow")
async def swallow(request: Request) -> dict[str, int]:
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
    except Exception:  # a careless route: answers 200 whatever happened
        pass
    return {"size": size}


@routes.post("/limited")
def limited(principal: RateLimitedViewerAppDep) -> dict[str, str]:
    return {"key": principal.key_id}


def ops_app(services: Services | None = None) -> FastAPI:
    """A small app with the service's error handling and the middlewares under test."""
    app = FastAPI()
    problems.install(app)
    if services is not None:
        app.state.services = services
    app.include_router(health.router)
    app.include_router(routes)
    settings = Settings(_env_file=None, max_sample_bytes=SAMPLE_BYTES)  # type: ignore[call-arg]
    limits.install(app, settings)
    observability.install(app)
    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    """Overrides conftest's: no database needed."""
    calls.clear()
    with TestClient(ops_app(), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """What :func:`configure_logging` writes, as JSON lines; logging restored afterwards."""
    root = logging.getLogger()
    level = root.level
    access = logging.getLogger("uvicorn.access")
    stream = io.StringIO()
    observability.configure_logging("INFO", stream=stream)
    yield stream
    for handler in [h for h in root.handlers if isinstance(h, observability._JsonHandler)]:
        root.removeHandler(handler)
    root.setLevel(level)
    access.disabled = False
    access.propagate = True


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# -- request ids ---------------------------------------------------------------------------


def test_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/items/1", headers={"X-Request-ID": "abc.DEF_123-x"})
    assert response.headers["X-Request-ID"] == "abc.DEF_123-x"


@pytest.mark.parametrize("sent", [None, "", "has space", "x" * 129, "semi;colon", "new\\nline"])
def test_request_id_is_made_when_missing_or_insane(client: TestClient, sent: str | None) -> None:
    headers = {} if sent is None else {"X-Request-ID": sent}
    response = client.get("/items/1", headers=headers)
    made = response.headers["X-Request-ID"]
    assert made != sent and len(made) == 32 and made.isalnum()


def test_problems_quote_the_request_id(client: TestClient) -> None:
    response = client.get("/nowhere", headers={"X-Request-ID": "req-404"})
    assert response.status_code == 404
    assert response.json()["request_id"] == "req-404"
    assert response.headers["X-Request-ID"] == "req-404"


def test_unhandled_errors_keep_the_request_id(client: TestClient) -> None:
    response = client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.headers["content-type"] == problems.PROBLEM_JSON
    assert response.headers["X-Request-ID"] == "req-500"
    assert response.json()["code"] == "internal_error"
    assert response.json()["request_id"] == "req-500"


# -- logs ----------------------------------------------------------------------------------


def test_log_lines_are_json_with_the_request_id(
    client: TestClient, log_stream: io.StringIO
) -> None:
    client.get("/items/42", headers={"X-Request-ID": "req-log"})
    lines = json_lines(log_stream)
    app_line = next(line for line in lines if line["logger"] == "acr.test")
    assert app_line["message"] == "fetching 42"
    assert app_line["level"] == "INFO"
    assert app_line["request_id"] == "req-log"
    assert app_line["item"] == "42"  # extras come along
    assert str(app_line["ts"]).endswith("+00:00")


def test_one_access_line_per_request(client: TestClient, log_stream: io.StringIO) -> None:
    client.get("/whoami", headers={"X-Request-ID": "req-access"})
    client.post("/nowhere")
    access = [line for line in json_lines(log_stream) if line["logger"] == "acr.access"]
    assert len(access) == 2
    first, second = access
    assert first["method"] == "GET"
    assert first["path"] == "/whoami"
    assert first["route"] == "/whoami"
    assert first["status"] == 200
    assert first["request_id"] == "req-access"
    assert first["key_id"] == "key_123"
    assert isinstance(first["duration_ms"], float)
    assert second["route"] == observability.UNMATCHED
    assert second["status"] == 404
    assert second["key_id"] is None


def test_exceptions_are_logged_with_the_traceback(log_stream: io.StringIO) -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("acr.test").exception("it failed")
    (line,) = json_lines(log_stream)
    assert "ValueError: bad" in str(line["exc"])
    assert line["request_id"] is None


# -- metrics -------------------------------------------------------------------------------


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    labels = {"method": "GET", "route": "/items/{item_id}"}
    before = _sample("acr_http_requests_total", status="200", **labels)
    timed = _sample("acr_http_request_duration_seconds_count", **labels)
    client.get("/items/1")
    client.get("/items/2")
    assert _sample("acr_http_requests_total", status="200", **labels) == before + 2
    assert _sample("acr_http_request_duration_seconds_count", **labels) == timed + 2

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'acr_http_requests_total{method="GET",route="/items/{item_id}",status="200"}' in text
    assert "/items/1" not in text  # raw paths never become labels
    assert 'acr_matches_total{outcome="no_match"}' in text
    assert "acr_engagements_total" in text


def test_unmatched_routes_share_one_label(client: TestClient) -> None:
    labels = {"method": "GET", "route": "unmatched", "status": "404"}
    before = _sample("acr_http_requests_total", **labels)
    client.get("/random/path/1")
    client.get("/random/path/2")
    assert _sample("acr_http_requests_total", **labels) == before + 2


def test_match_and_engagement_metrics() -> None:
    before = _sample("acr_matches_total", outcome="match")
    timed = _sample("acr_match_duration_seconds_sum", outcome="match")
    observability.observe_match("match", 0.25)
    assert _sample("acr_matches_total", outcome="match") == before + 1
    assert _sample("acr_match_duration_seconds_sum", outcome="match") == pytest.approx(timed + 0.25)
    with pytest.raises(ValueError):
        observability.observe_match("maybe", 0.1)
    engaged = _sample("acr_engagements_total")
    observability.observe_engagement()
    assert _sample("acr_engagements_total") == engaged + 1


def test_metrics_are_not_in_the_schema(client: TestClient) -> None:
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_multiprocess_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Values written by worker processes are read back from the directory.
    from prometheus_client import CollectorRegistry, Counter, values

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: 4242))
    counter = Counter("acr_test_worker", "test", registry=CollectorRegistry())
    counter.inc(3)
    body, _ = observability.render_metrics()
    assert b"acr_test_worker_total 3.0" in body


# -- body limits ---------------------------------------------------------------------------


def _assert_too_large(response_status: int, body: dict[str, object], limit: int) -> None:
    assert response_status == 413
    assert body["code"] == "payload_too_large"
    assert str(limit) in str(body["detail"])


def test_body_limit_by_content_length(client: TestClient) -> None:
    response = client.post("/v1/match", content=b"x" * (SAMPLE_LIMIT + 1))
    _assert_too_large(response.status_code, response.json(), SAMPLE_LIMIT)
    assert response.headers["content-type"] == problems.PROBLEM_JSON
    assert response.headers["X-Request-ID"]
    assert calls == []  # refused before the app ran
    assert client.post("/v1/match", content=b"x" * SAMPLE_LIMIT).json() == {"size": SAMPLE_LIMIT}


def test_body_limit_of_a_streamed_body(client: TestClient) -> None:
    def chunks(total: int, size: int = 8192) -> Iterator[bytes]:
        for start in range(0, total, size):
            yield b"x" * min(size, total - start)

    # A generator is sent chunked, without Content-Length: the bytes are counted.
    response = client.post("/v1/match", content=chunks(SAMPLE_LIMIT + 1))
    _assert_too_large(response.status_code, response.json(), SAMPLE_LIMIT)
    assert calls == ["match"]
    ok = client.post("/v1/match", content=chunks(SAMPLE_LIMIT))
    assert ok.json() == {"size": SAMPLE_LIMIT}


def test_body_limit_default_and_a_route_that_swallows_the_error(client: TestClient) -> None:
    body = (b"x" * limits.DEFAULT_LIMIT for _ in range(2))
    response = client.post("/swallow", content=body)
    _assert_too_large(response.status_code, response.json(), limits.DEFAULT_LIMIT)


def test_body_limits_by_route() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, max_upload_bytes=5000, max_sample_bytes=300
    )
    limit_for = limits.settings_limits(settings)
    assert limit_for("POST", "/v1/content") == 5000 + limits.ENVELOPE_BYTES
    assert limit_for("post", "/v1/match/") == 300 + limits.ENVELOPE_BYTES
    assert limit_for("GET", "/v1/match") == limits.DEFAULT_LIMIT
    assert limit_for("PUT", "/v1/content/abc") == limits.DEFAULT_LIMIT


@pytest.fixture
def live_server() -> Iterator[int]:
    """The test app served by uvicorn in a thread: its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(ops_app(), log_config=None, lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)
    sock.close()


def _read_response(connection: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_streamed_body_is_refused_as_soon_as_it_passes_the_limit(live_server: int) -> None:
    with socket.create_connection(("127.0.0.1", live_server), timeout=10) as connection:
        connection.sendall(
            b"POST /v1/match HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        chunk = b"x" * 16384
        for _ in range(SAMPLE_LIMIT // len(chunk) + 1):
            connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        # The body is not finished (no last chunk), yet the answer comes.
        reply = _read_response(connection)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"x-request-id" in head.lower()
    assert b"payload_too_large" in body


def test_content_length_is_refused_before_the_body_is_sent(live_server: int) -> None:
    with socket.create_connection(("127.0.0.1", live_server), timeout=10) as connection:
        connection.sendall(
            b"POST /v1/match HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000000\r\n\r\n"
        )
        reply = _read_response(connection)
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"payload_too_large" in reply


# -- rate limits (through the database: real keys) -----------------------------------------


def test_rate_limited_route(services: Services, keys: Keys) -> None:
    services.rate_limiter = InProcessRateLimiter(2, 60.0)  # type: ignore[attr-defined]
    with TestClient(ops_app(services), raise_server_exceptions=False) as client:
        first, second, third = (client.post("/limited", headers=keys.tv_app) for _ in range(3))
        other = client.post("/limited", headers=keys.other_app)
        manager = client.post("/limited", headers=keys.acme)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["RateLimit-Limit"] == "2"
    assert [first.headers["RateLimit-Remaining"], second.headers["RateLimit-Remaining"]] == [
        "1",
        "0",
    ]
    assert third.status_code == 429
    assert third.headers["content-type"] == problems.PROBLEM_JSON
    assert third.json()["code"] == "rate_limited"
    assert third.headers["Retry-After"] == "30"  # 2 a minute: a token every 30 s
    assert third.headers["RateLimit-Remaining"] == "0"
    assert other.status_code == 200  # each key has its own budget
    assert manager.status_code == 403  # the role is checked before any budget is spent


def test_rate_limited_route_through_redis(services: Services, keys: Keys) -> None:
    """A limiter that waits for Redis is asked from a worker thread: same answers."""
    limiter = RedisRateLimiter(
        redis_client("redis://127.0.0.1:6379/15"), 1, 60.0, prefix=f"test:{secrets.token_hex(8)}:"
    )
    if not limiter.healthy():
        pytest.skip("no Redis at 127.0.0.1:6379")
    services.rate_limiter = limiter  # type: ignore[attr-defined]
    with TestClient(ops_app(services), raise_server_exceptions=False) as client:
        first, second = (client.post("/limited", headers=keys.tv_app) for _ in range(2))
    assert first.status_code == 200 and first.headers["RateLimit-Remaining"] == "0"
    assert second.status_code == 429 and second.headers["Retry-After"] == "60"


# -- probes --------------------------------------------------------------------------------


@pytest.fixture
def probe(services: Services) -> Iterator[TestClient]:
    services.rate_limiter = InProcessRateLimiter(10)  # type: ignore[attr-defined]
    with TestClient(ops_app(services), raise_server_exceptions=False) as test_client:
        yield test_client


def test_healthz(probe: TestClient) -> None:
    response = probe.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_ok(probe: TestClient) -> None:
    response = probe.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "checks": {
            "database": {"ok": True, "critical": True},
            "index": {"ok": True, "critical": True},
        },
    }


def test_readyz_without_the_index(probe: TestClient, services: Services) -> None:
    shutil.rmtree(services.settings.index_path)
    services.index.close()  # forget an index opened earlier
    response = probe.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == problems.PROBLEM_JSON
    document = response.json()
    assert document["code"] == "not_ready"
    assert "index" in document["detail"]
    assert [e["loc"] for e in document["errors"]] == [["checks", "index"]]


def test_readyz_without_the_database(probe: TestClient, services: Services) -> None:
    services.engine = create_engine("sqlite:////nonexistent/dir/acr.db")
    response = probe.get("/readyz")
    assert response.status_code == 503
    assert [e["loc"] for e in response.json()["errors"]] == [["checks", "database"]]


def test_readyz_with_redis_down_is_degraded_not_down(probe: TestClient, services: Services) -> None:
    services.settings.redis_url = "redis://127.0.0.1:1/0"
    services.rate_limiter = RedisRateLimiter(  # type: ignore[attr-defined]
        redis_client(services.settings.redis_url), 10
    )
    response = probe.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["redis"] == {"ok": False, "critical": False}


# -- in the real app -----------------------------------------------------------------------


def test_install_on_the_service_app(services: Services) -> None:
    app = create_app(services, background=False)
    installed = {middleware.cls for middleware in app.user_middleware}
    if limits.BodySizeLimitMiddleware not in installed:  # until create_app does it
        limits.install(app, services.settings)
    if observability.RequestIdMiddleware not in installed:
        observability.install(app)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/healthz", headers={"X-Request-ID": "req-app"})
        assert response.status_code == 200
        assert response.headers["X-Request-ID"] == "req-app"
        assert "acr_http_requests_total" in client.get("/metrics").text


def test_the_index_is_opened_at_start_up_not_by_the_first_viewer(services: Services) -> None:
    opened = threading.Event()
    index = services.index

    class Spy:
        def __getattr__(self, name: str) -> object:
            return getattr(index, name)

        def ready(self) -> bool:
            ready = index.ready()
            opened.set()
            return ready

    services.index = Spy()  # type: ignore[assignment]
    with TestClient(create_app(services), raise_server_exceptions=False):
        assert opened.wait(timeout=30)
