"""Request body size limits, by route, enforced before and while the body arrives.

:class:`BodySizeLimitMiddleware` answers ``413`` (problem ``payload_too_large``)

- at once, without running the app, when ``Content-Length`` announces too much;
- as soon as a body without one (chunked, streamed) passes the limit: reading
  more raises :class:`PayloadTooLarge`, which FastAPI's body parsing and the
  problem handlers turn into the 413. Nothing is buffered here; bytes are only
  counted as the app reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import Problem, problem_response

if TYPE_CHECKING:
    from acr.settings import Settings

MIB: Final = 1024 * 1024
DEFAULT_LIMIT: Final = 1 * MIB
"""Bodies of every route not listed: JSON documents, forms."""
ENVELOPE_BYTES: Final = 64 * 1024
"""Allowance for the multipart envelope (boundaries, part headers, small form fields)
around a file of the configured size: the route checks the file's own size exactly."""

Limits = Callable[[str, str], int]
"""``(method, path) -> largest body in bytes``."""


def _describe(limit: int) -> str:
    if limit >= MIB:
        return f"{limit} bytes ({limit / MIB:.1f} MiB)"
    return f"{limit} bytes"


class PayloadTooLarge(HTTPException):
    """Raised by ``receive`` when a streamed body passes its limit.

    An :class:`HTTPException`, so FastAPI's body parsing lets it through as is and
    the app's handlers answer it as the ``payload_too_large`` problem.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {_describe(limit)}")
        self.limit = limit


def route_limits(routes: Mapping[tuple[str, str], int], default: int = DEFAULT_LIMIT) -> Limits:
    """A :data:`Limits` from ``{(method, path): bytes}``, ``default`` for the rest.

    Paths match exactly, but for a trailing slash.
    """
    table = {
        (method.upper(), path.rstrip("/") or "/"): limit for (method, path), limit in routes.items()
    }

    def limit_for(method: str, path: str) -> int:
        return table.get((method.upper(), path.rstrip("/") or "/"), default)

    return limit_for


def settings_limits(settings: Settings) -> Limits:
    """Uploads (API and dashboard) and samples to ``POST /v1/match`` by the settings."""
    return route_limits(
        {
            ("POST", "/v1/content"): settings.max_upload_bytes + ENVELOPE_BYTES,
            ("POST", "/dashboard/content"): settings.max_upload_bytes + ENVELOPE_BYTES,
            ("POST", "/v1/match"): settings.max_sample_bytes + ENVELOPE_BYTES,
        }
    )


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


class BodySizeLimitMiddleware:
    """Refuse request bodies larger than ``limits(method, path)`` with a 413 problem."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits(str(scope.get("method", "GET")), str(scope.get("path", "")))

        def too_large() -> Problem:  # built when needed: most requests never are
            return Problem(
                413,
                "payload_too_large",
                f"the request body is larger than the limit of {_describe(limit)}",
            )

        length = _content_length(scope)
        if length is not None and length > limit:
            # Answered before the app (and its key lookup) runs; the body is never read,
            # and the server closes the connection rather than keep it alive.
            await problem_response(Request(scope), too_large())(scope, receive, send)
            return

        received = 0
        exceeded = False
        started = False
        replaced = False

        async def receive_counted() -> Message:
            nonlocal received, exceeded
            if exceeded:  # the app read on after being told: it gets nothing more
                raise PayloadTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise PayloadTooLarge(limit)
            return message

        async def send_checked(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                started = True
                if exceeded and message["status"] != 413:
                    # The app swallowed PayloadTooLarge and answered something else; the
                    # client is owed the 413. Raising here instead would reach the app's
                    # exception handlers after it started its response, a 500.
                    replaced = True
                    await problem_response(Request(scope), too_large())(scope, receive, send)
                    return
            await send(message)

        try:
            await self.app(scope, receive_counted, send_checked)
        except PayloadTooLarge:
            if started:
                raise
            await problem_response(Request(scope), too_large())(scope, receive, send)


def install(app: FastAPI, settings: Settings) -> None:
    """Limit request bodies of ``app`` by route, per ``settings``.

    The middleware goes innermost of the added ones, whatever the call order, so
    that the request-id and telemetry middlewares also see the 413s.
    """
    app.user_middleware.append(
        Middleware(BodySizeLimitMiddleware, limits=settings_limits(settings))
    )
