"""``GET /v1/match/stream`` (WebSocket): stream audio, get the match as soon as it is sure.

Protocol
--------
* Connect with an API key (viewer app or admin) as ``Authorization: Bearer acr_…``
  or, for browsers, which cannot set headers on a WebSocket, the ``token`` query
  parameter. Query parameters: ``sample_rate`` (Hz, required), ``viewer_id``
  (required, stored hashed), ``country``, ``platform``, ``max_campaigns`` (0–10,
  default 3) and ``max_seconds`` (when to give up, default 10).
* Send binary messages of 16-bit little-endian mono PCM at ``sample_rate``, in
  chunks of any size (100–250 ms is typical). A text message ``{"type": "end"}``
  says the recording stopped.
* The server answers once, then closes normally (1000):
  ``{"type": "match", ...}`` as soon as the evidence passes the calibrated
  threshold (corrected for the repeated looks, see ``docs/matching.md``), or
  ``{"type": "no_match", "reason": ...}`` at ``max_seconds`` or after ``end``.
  Both carry the body of ``POST /v1/match`` (``matched``, ``match``,
  ``campaigns``, ``no_match_reason``, ...) plus ``heard_s``, the audio used, and
  ``looks``. ``match.offset_s`` is where the stream's first sample sits in the
  content, so the viewer is now at about ``offset_s + heard_s · speed``. A stream
  played faster or slower, time-stretched or pitch-shifted (up to about 10 %) is
  searched under speed, pitch and tempo warps where a look is unsure, and its
  ``match.speed`` and ``match.pitch`` say how it was played; from the second or
  so of audio of an early answer they are coarse (see ``docs/matching.md``). A
  match serves and records campaigns exactly as ``POST /v1/match`` does.
* Errors are ``{"type": "error", "code", "status", "detail"}`` followed by a
  close: 1008 (policy violation) for authentication, role, rate limit and
  parameters, 1003 (unsupported data) for a malformed message, 1009 for a
  message that is too large.
"""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from acr.auth import AuthError, Principal, Role, authenticate
from acr.matching import DEFAULT_MIN_CONFIDENCE
from acr.results import Match
from acr.streaming import MAX_SECONDS, LookPlan, StreamMatcher
from api.observability import observe_engagement, observe_match
from api.problems import Problem
from api.ratelimiting import enforce
from api.routers.match import (
    MAX_CANDIDATES,
    LiveContent,
    NoMatchReason,
    Viewer,
    first_live,
    respond,
    viewer_hash,
)
from api.services import Services

router = APIRouter(prefix="/v1", tags=["match"])

CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011

MAX_MESSAGE_SECONDS = 5.0
"""Longest audio accepted in one message; clients send 100–250 ms chunks."""


class StreamParams(BaseModel):
    """The query parameters of a stream."""

    sample_rate: int = Field(ge=8000, le=192_000)
    viewer_id: str = Field(min_length=1, max_length=256)
    country: str | None = Field(default=None, pattern="^[A-Za-z]{2}$")
    platform: str | None = Field(default=None, min_length=1, max_length=32)
    max_campaigns: int = Field(default=3, ge=0, le=10)
    max_seconds: float = Field(default=MAX_SECONDS, ge=1.0, le=60.0)


class StreamError(Exception):
    """End the stream with an error message and a close code."""

    def __init__(self, code: str, status: int, detail: str, close: int) -> None:
        super().__init__(detail)
        self.code = code
        self.status = status
        self.detail = detail
        self.close = close

    @classmethod
    def from_problem(cls, problem: Problem) -> StreamError:
        return cls(problem.code, problem.status, problem.detail, CLOSE_POLICY)


@router.websocket("/match/stream")
async def match_stream(websocket: WebSocket) -> None:
    """Identify streamed PCM as early as the evidence allows; serve that moment's campaigns."""
    services: Services = websocket.app.state.services
    await websocket.accept()
    try:
        await _run(websocket, services)
    except WebSocketDisconnect:
        return
    except StreamError as error:
        await _send_error(websocket, error)
    except Exception:
        observe_match("error", 0.0)
        await _send_error(
            websocket,
            StreamError("internal_error", 500, "the stream failed on the server", CLOSE_INTERNAL),
        )
        raise


async def _run(websocket: WebSocket, services: Services) -> None:
    settings = services.settings
    principal = await run_in_threadpool(_authorize, services, websocket)
    params = _params(websocket)
    if params.max_seconds > settings.max_sample_seconds:
        raise StreamError(
            "validation_error",
            422,
            f"max_seconds is at most {settings.max_sample_seconds:g}",
            CLOSE_POLICY,
        )
    viewer = Viewer(
        viewer_hash(services.viewer_secret, principal.app_id, params.viewer_id),
        principal.app_id,
        params.country.upper() if params.country else None,
        params.platform,
    )
    matcher = StreamMatcher(
        services.index,
        params.sample_rate,
        min_confidence=max(DEFAULT_MIN_CONFIDENCE, settings.min_confidence),
        plan=LookPlan(max_s=params.max_seconds),
        top_k=MAX_CANDIDATES,
    )
    max_bytes = 2 * round(MAX_MESSAGE_SECONDS * params.sample_rate)
    started = time.perf_counter()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", CLOSE_NORMAL))
        data: bytes | None = message.get("bytes")
        text: str | None = message.get("text")
        if data is not None:
            pcm = _pcm(data, max_bytes)
            best = await services.match_lane.run(partial(matcher.push, pcm))
        elif text is not None and _is_end(text):
            best = await services.match_lane.run(matcher.finish)
        else:
            raise StreamError(
                "bad_message",
                400,
                'send binary 16-bit PCM messages, or the text message {"type": "end"}',
                CLOSE_UNSUPPORTED,
            )
        if best is not None:
            found, content = await run_in_threadpool(first_live, services, matcher.candidates)
            if found is not None and content is not None:
                serving = partial(
                    _serve, services, found, content, viewer, params.max_campaigns, matcher, started
                )
                body = await services.match_lane.run(serving)
                observe_match("match", body["elapsed_ms"] / 1000)
                observe_engagement(len(body["campaigns"]))
                await _send_and_close(websocket, {"type": "match", **body})
                return
        if matcher.done:
            reason: NoMatchReason = (
                "too_short"
                if matcher.heard_s < matcher.plan.first_s
                else "silence"
                if matcher.silent
                else "no_match"
            )
            body = {
                **respond(
                    services,
                    None,
                    None,
                    reason,
                    viewer=viewer,
                    max_campaigns=0,
                    query_duration_s=matcher.heard_s,
                    started=started,
                ),
                "heard_s": round(matcher.heard_s, 3),
                "looks": len(matcher.looks),
            }
            observe_match("no_match", body["elapsed_ms"] / 1000)
            await _send_and_close(websocket, {"type": "no_match", "reason": reason, **body})
            return


def _authorize(services: Services, websocket: WebSocket) -> Principal:
    """The caller's key, from the header or the ``token`` parameter; one match spent."""
    header = websocket.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    token = (
        credentials.strip()
        if scheme.lower() == "bearer" and credentials.strip()
        else websocket.query_params.get("token")
    )
    if not token:
        raise StreamError(
            "unauthenticated",
            401,
            "send an API key as `Authorization: Bearer acr_…` or the `token` query parameter",
            CLOSE_POLICY,
        )
    with services.sessions() as session:
        try:
            principal = authenticate(session, token)
        except AuthError as error:
            raise StreamError("unauthenticated", 401, str(error), CLOSE_POLICY) from None
    if principal.role not in (Role.ADMIN, Role.VIEWER_APP):
        raise StreamError(
            "forbidden", 403, "this needs a key with role admin, viewer_app", CLOSE_POLICY
        )
    try:
        # A stream is one match for the rate limit, as a POST /v1/match is.
        enforce(services.rate_limiter, f"match:{principal.key_id}")
    except Problem as problem:
        raise StreamError.from_problem(problem) from None
    return principal


def _params(websocket: WebSocket) -> StreamParams:
    raw = {k: v for k, v in websocket.query_params.items() if k in StreamParams.model_fields}
    try:
        return StreamParams.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise StreamError(
            "validation_error", 422, f"query parameter {where}: {first['msg']}", CLOSE_POLICY
        ) from None


def _pcm(data: bytes, max_bytes: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    if len(data) > max_bytes:
        raise StreamError(
            "message_too_large",
            413,
            f"a message holds at most {MAX_MESSAGE_SECONDS:g} s of audio ({max_bytes} bytes)",
            CLOSE_TOO_BIG,
        )
    if len(data) % 2:
        raise StreamError(
            "bad_message", 400, "PCM messages hold whole 16-bit samples", CLOSE_UNSUPPORTED
        )
    samples: np.ndarray[Any, np.dtype[np.float32]] = np.frombuffer(data, dtype="<i2").astype(
        np.float32
    ) / np.float32(32768.0)
    return samples


def _is_end(text: str) -> bool:
    try:
        message = json.loads(text)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("type") == "end"


def _serve(
    services: Services,
    found: Match,
    content: LiveContent,
    viewer: Viewer,
    max_campaigns: int,
    matcher: StreamMatcher,
    started: float,
) -> dict[str, Any]:
    """Serve and record the campaigns of the matched moment, as ``POST /v1/match`` does."""
    body = respond(
        services,
        found,
        content,
        None,
        viewer=viewer,
        max_campaigns=max_campaigns,
        query_duration_s=matcher.heard_s,
        started=started,
    )
    return {**body, "heard_s": round(matcher.heard_s, 3), "looks": len(matcher.looks)}


async def _send_and_close(websocket: WebSocket, message: dict[str, Any]) -> None:
    await websocket.send_json(message)
    await websocket.close(CLOSE_NORMAL)


async def _send_error(websocket: WebSocket, error: StreamError) -> None:
    try:
        await websocket.send_json(
            {"type": "error", "code": error.code, "status": error.status, "detail": error.detail}
        )
        await websocket.close(error.close)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client is gone
