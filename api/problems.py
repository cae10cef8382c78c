"""Errors as data: every failure is an RFC 9457 ``application/problem+json`` document.

A problem has ``type`` (``/problems/<code>``), ``title``, ``status``, ``detail``,
plus ``code`` (stable, machine-readable), ``request_id`` and, for invalid input,
``errors`` (one entry per field: ``loc``, ``msg``, ``type``).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from acr import errors as core

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("acr.api")


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ProblemDocument(BaseModel):
    """RFC 9457 problem details (the OpenAPI shape of every error response)."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = None
    errors: list[FieldError] | None = None


class Problem(Exception):  # noqa: N818 - the RFC's word; it is raised as a response
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers


def not_found(what: str, identifier: str) -> Problem:
    return Problem(404, "not_found", f"no {what} {identifier!r}")


# Core errors by HTTP status: the media was refused for its size, its format, or its content.
_CORE_STATUS: dict[type[core.AcrError], int] = {
    core.MediaTooLargeError: 413,
    core.MediaTooLongError: 413,
    core.UnsupportedFormatError: 415,
    core.EmptyMediaError: 400,
    core.CorruptMediaError: 422,
    core.NoAudioStreamError: 422,
    core.NoVideoStreamError: 422,
    core.SilentMediaError: 422,
    core.MediaTooShortError: 422,
    core.FingerprintFormatError: 422,
    core.UnknownContentError: 404,
    core.IndexStoreError: 503,
}


def from_core_error(error: core.AcrError) -> Problem:
    """The problem for an error raised by the ``acr`` core."""
    status = next(
        (code for kind, code in _CORE_STATUS.items() if isinstance(error, kind)),
        400,
    )
    return Problem(status, error.code, error.message)


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{problem.code}",
        "title": HTTPStatus(problem.status).phrase,
        "status": problem.status,
        "detail": problem.detail,
        "code": problem.code,
        "request_id": getattr(request.state, "request_id", None),
    }
    if problem.errors is not None:
        body["errors"] = problem.errors
    return JSONResponse(
        jsonable_encoder(body),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


_HTTP_CODES = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def install(app: FastAPI) -> None:
    """Answer every error raised in ``app`` as a problem document."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(request, exc)

    async def on_core(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, core.AcrError)
        return problem_response(request, from_core_error(exc))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "loc": [str(part) if not isinstance(part, int) else part for part in e["loc"]],
                "msg": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else None
        detail = (
            f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
            if first
            else "invalid request"
        )
        problem = Problem(422, "validation_error", detail, errors=errors)
        # A body that is not JSON at all is a malformed request, not an invalid one.
        if any(e["type"] == "json_invalid" for e in errors):
            problem = Problem(400, "malformed_json", detail, errors=errors)
        return problem_response(request, problem)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(
            request, Problem(exc.status_code, code, str(exc.detail), headers=headers)
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(
            request, Problem(500, "internal_error", "the server failed; the request id says where")
        )

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(core.AcrError, on_core)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problem statuses a route can answer."""
    return {
        status: {
            "model": ProblemDocument,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDocument"}}},
            "description": HTTPStatus(status).phrase,
        }
        for status in statuses
    }
