"""Request ids, JSON logs, an access log and Prometheus metrics.

:func:`install` wraps the app in two pure-ASGI middlewares (no ``BaseHTTPMiddleware``,
so streamed bodies and responses pass through untouched) and serves ``GET /metrics``:

- :class:`RequestIdMiddleware` (outermost) gives each request an id, taken from a
  sane ``X-Request-ID`` or made up, kept in ``request.state.request_id`` and in
  :data:`request_id_var` for the logs, and echoed in the ``X-Request-ID`` header.
- :class:`TelemetryMiddleware` times each request, counts it in
  ``acr_http_requests_total`` / ``acr_http_request_duration_seconds`` by its
  route *template*, and writes one access-log line.

:func:`configure_logging` makes the process log one JSON object per line. With
several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory,
wiped before the server starts) and ``/metrics`` aggregates every worker.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import Problem, problem_response

REQUEST_ID_HEADER: Final = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request being handled, for log lines written anywhere below it."""

access_log = logging.getLogger("acr.access")

# -- metrics -------------------------------------------------------------------------------

UNMATCHED: Final = "unmatched"
"""Route label of requests no route matched (any raw path would blow up the label set)."""
MATCH_OUTCOMES: Final = ("match", "no_match", "error")

HTTP_REQUESTS = Counter(
    "acr_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "acr_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
)
MATCHES = Counter("acr_matches", "Match requests by outcome.", ["outcome"])
MATCH_DURATION = Histogram(
    "acr_match_duration_seconds",
    "Time to match one sample (decode, fingerprint, look up), by outcome.",
    ["outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
ENGAGEMENTS = Counter("acr_engagements", "Campaign engagements recorded.")

for _outcome in MATCH_OUTCOMES:  # every outcome shows from the start, at 0
    MATCHES.labels(_outcome)
    MATCH_DURATION.labels(_outcome)


def observe_match(outcome: str, elapsed_s: float) -> None:
    """Count one match request and its duration.

    Parameters
    ----------
    outcome : str
        ``match``, ``no_match`` or ``error``.
    elapsed_s : float
        Seconds spent matching.
    """
    if outcome not in MATCH_OUTCOMES:
        raise ValueError(f"outcome must be one of {MATCH_OUTCOMES}, not {outcome!r}")
    MATCHES.labels(outcome).inc()
    MATCH_DURATION.labels(outcome).observe(elapsed_s)


def observe_engagement(count: int = 1) -> None:
    """Count recorded campaign engagements."""
    ENGAGEMENTS.inc(count)


def render_metrics() -> tuple[bytes, str]:
    """The metrics in the Prometheus text format, and its content type.

    With ``PROMETHEUS_MULTIPROC_DIR`` set, every worker process writes its values
    to files there and this sums them; otherwise this process's registry is read.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def metrics_endpoint() -> Response:
    """``GET /metrics``: Prometheus scrapes this."""
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)


# -- request ids ---------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def request_id_from(value: str | None) -> str:
    """``value`` if it is a sane request id (≤ 128 of ``[A-Za-z0-9._-]``), else a new one.

    Ids end up in logs and headers: anything else could forge log lines or headers.
    """
    if value is not None and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Give every HTTP request an id; see :func:`request_id_from`.

    It is stored in ``scope["state"]["request_id"]`` (``request.state.request_id``,
    which problem documents quote) and in :data:`request_id_var`, and sent back
    in ``X-Request-ID``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(_header(scope, b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [
                    (k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Starlette's ServerErrorMiddleware, outside every added middleware, would
            # answer this 500 without our header; answer it here, with the header and
            # the same document as the app's handler. The variable stays set so the
            # handler's log line, written after we re-raise, still carries the id.
            if not started:
                problem = Problem(
                    500, "internal_error", "the server failed; the request id says where"
                )
                await problem_response(Request(scope), problem)(scope, receive, send_with_id)
            raise
        request_id_var.reset(token)


# -- access log and HTTP metrics -----------------------------------------------------------


def route_template(scope: Scope) -> str:
    """The path template of the route that handled ``scope``, or :data:`UNMATCHED`."""
    # FastAPI (≥ 0.13x) keeps routes of nested routers unflattened: the matched route's own
    # path can lack the outer prefixes, which its effective context carries.
    context = scope.get("fastapi", {}).get("effective_route_context")
    template = getattr(context, "path_format", None)
    if isinstance(template, str):
        return template
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED


class TelemetryMiddleware:
    """Count and time each HTTP request by route template, and log it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app answers: an exception escaping it becomes a 500

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            elapsed = time.perf_counter() - started
            method = str(scope.get("method", ""))
            route = route_template(scope)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(elapsed)
            state = scope.get("state", {})
            principal = state.get("principal")
            access_log.info(
                "%s %s %d",
                method,
                scope.get("path", ""),
                status,
                extra={
                    "method": method,
                    "path": scope.get("path", ""),
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "request_id": state.get("request_id"),
                    "key_id": getattr(principal, "key_id", None),
                },
            )


def install(app: FastAPI) -> None:
    """Add the request-id and telemetry middlewares to ``app`` and serve ``GET /metrics``.

    Call after the other middlewares are added: Starlette runs the last added
    first, and these two must see every request, including ones refused early.
    """
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    app.add_middleware(TelemetryMiddleware)
    app.add_middleware(RequestIdMiddleware)


# -- JSON logs -----------------------------------------------------------------------------

# Attributes every LogRecord has: whatever else a record carries came in `extra=`.
_RECORD_FIELDS: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    # uvicorn's terminal-coloured copy of the message adds nothing to a JSON line.
    | {"message", "asctime", "color_message"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message``,
    ``request_id``, the record's extras, and ``exc`` for a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str, ensure_ascii=False)


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler :func:`configure_logging` installs, so a second call replaces it."""


def configure_logging(level: str | int = "INFO", stream: Any = None) -> None:
    """Make the root logger write JSON lines, and uvicorn's loggers go through it.

    Other handlers on the root logger (pytest's, for one) are left in place.
    uvicorn's own access log is silenced: :class:`TelemetryMiddleware` writes a
    richer one (route template, duration, request id, key id). Call it after
    uvicorn has configured logging, or run uvicorn with ``log_config=None``,
    since uvicorn's ``dictConfig`` would otherwise replace these settings.

    Parameters
    ----------
    level : str or int
        Level of the root logger, e.g. ``settings.log_level``.
    stream : file, optional
        Where to write; standard error by default.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _JsonHandler)]:
        root.removeHandler(handler)
    handler = _JsonHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
    uvicorn_access.disabled = True
