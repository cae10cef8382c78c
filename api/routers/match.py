"""``POST /v1/match``: what is the viewer watching, and which campaigns go with that moment."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, Field
from sqlalchemy import select

from acr import idempotency
from acr.campaigns.serving import Moment, ServedCampaign, serve
from acr.db.models import Content, utcnow
from acr.db.session import write_session
from acr.errors import MediaTooShortError, SilentMediaError
from acr.results import Match
from acr.signals.base import Fingerprints
from api.deps import ServicesDep
from api.idempotent import IdempotencyKey, IdempotentPost, replayed_header
from api.observability import observe_engagement, observe_match
from api.problems import Problem, responses
from api.ratelimiting import RateLimitedViewerAppDep
from api.services import Services

router = APIRouter(prefix="/v1", tags=["match"])

NoMatchReason = Literal["silence", "too_short", "no_match"]
MAX_CANDIDATES = 5
"""Alternatives looked at when the best match names content the library no longer serves."""


class MatchedContent(BaseModel):
    content_id: str
    title: str
    kind: str
    offset_s: float = Field(description="Where in the content the sample starts, in seconds")
    confidence: float = Field(description="Calibrated probability that the match is right")
    speed: float = Field(description="Playback speed of the sample relative to the content")
    duration_s: float = Field(description="Duration of the content")


class ServedCampaignView(BaseModel):
    id: str
    name: str
    advertiser: str
    trigger_id: str
    engagement_id: str
    payload: dict[str, Any]


class MatchResponse(BaseModel):
    object: Literal["match_result"] = "match_result"
    matched: bool
    match: MatchedContent | None
    no_match_reason: NoMatchReason | None = Field(
        description="Why there is no match: silence, a sample too short, or nothing recognised"
    )
    campaigns: list[ServedCampaignView] = Field(
        description="Running campaigns for this moment, best first; each served one is engaged"
    )
    query_duration_s: float
    elapsed_ms: float


@dataclass(frozen=True)
class Viewer:
    """Who sent the sample, as the campaigns' targeting and frequency caps see them."""

    hash: str
    app_id: str | None
    country: str | None
    platform: str | None


def viewer_hash(secret: bytes, app_id: str | None, viewer_id: str) -> str:
    """The stored form of a viewer id: keyed, so it cannot be reversed by guessing ids."""
    message = f"{app_id or ''}\x00{viewer_id}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _read(upload: UploadFile, limit: int) -> bytes:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise Problem(413, "payload_too_large", f"the sample is larger than {limit} bytes")
    return data


@router.post(
    "/match",
    response_model=MatchResponse,
    responses={**replayed_header(200), **responses(400, 401, 403, 409, 413, 415, 422, 429, 503)},
)
def match(
    services: ServicesDep,
    principal: RateLimitedViewerAppDep,
    response: Response,
    viewer_id: Annotated[
        str, Form(min_length=1, max_length=256, description="Opaque viewer id; stored hashed")
    ],
    sample: Annotated[
        UploadFile | None, File(description="Audio or video media in any common format")
    ] = None,
    fingerprints: Annotated[
        UploadFile | None,
        File(description="Query fingerprints computed on the client (acr wire format)"),
    ] = None,
    country: Annotated[
        str | None, Form(pattern="^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2")
    ] = None,
    platform: Annotated[str | None, Form(min_length=1, max_length=32)] = None,
    max_campaigns: Annotated[int, Form(ge=0, le=10)] = 3,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Identify a sample and serve the campaigns attached to that content at that moment.

    Send exactly one of ``sample`` (media) or ``fingerprints``. With an
    ``Idempotency-Key``, a retry returns the first answer and records nothing
    again; the same key with a different request is refused with 409.
    """
    if (sample is None) == (fingerprints is None):
        raise Problem(
            422,
            "validation_error",
            "send exactly one of `sample` (media) or `fingerprints`",
            errors=[
                {
                    "loc": ["body", "sample"],
                    "msg": "exactly one of sample, fingerprints",
                    "type": "value_error",
                }
            ],
        )
    settings = services.settings
    upload = sample if sample is not None else fingerprints
    assert upload is not None
    data = _read(upload, settings.max_sample_bytes)
    country = country.upper() if country else None
    request_hash = idempotency.request_fingerprint(
        "sample" if sample is not None else "fingerprints",
        data,
        viewer_id,
        country,
        platform,
        str(max_campaigns),
    )
    post = IdempotentPost(
        services.sessions, principal.key_id, idempotency_key, "/v1/match", request_hash
    )
    if (replayed := post.replay(response)) is not None:
        return replayed
    try:
        with post.released_on_error():
            body = _identify_and_serve(
                services,
                data,
                is_media=sample is not None,
                viewer=Viewer(
                    viewer_hash(services.viewer_secret, principal.app_id, viewer_id),
                    principal.app_id,
                    country,
                    platform,
                ),
                max_campaigns=max_campaigns,
                post=post,
            )
    except BaseException:
        observe_match("error", 0.0)
        raise
    observe_match("match" if body["matched"] else "no_match", body["elapsed_ms"] / 1000)
    observe_engagement(len(body["campaigns"]))
    return body


def _identify_and_serve(
    services: Services,
    data: bytes,
    *,
    is_media: bool,
    viewer: Viewer,
    max_campaigns: int,
    post: IdempotentPost,
) -> dict[str, Any]:
    started = time.perf_counter()
    settings = services.settings
    reason: NoMatchReason | None = None
    found: Match | None = None
    content: Content | None = None
    query_duration_s = 0.0
    try:
        query = (
            services.index.fingerprint_query(
                data, max_seconds=settings.max_sample_seconds, max_bytes=settings.max_sample_bytes
            )
            if is_media
            else _client_fingerprints(data, settings.max_sample_seconds)
        )
    except SilentMediaError:
        reason = "silence"
    except MediaTooShortError:
        reason = "too_short"
    else:
        query_duration_s = query.duration_s
        result = services.index.match_fingerprints(query, top_k=MAX_CANDIDATES, started=started)
        candidates = [m for m in result.matches if m.confidence >= settings.min_confidence]
        found, content = first_live(services, candidates)
        reason = None if found else "no_match"

    return respond(
        services,
        found,
        content,
        reason,
        viewer=viewer,
        max_campaigns=max_campaigns,
        query_duration_s=query_duration_s,
        started=started,
        post=post,
    )


def respond(
    services: Services,
    found: Match | None,
    content: Content | None,
    reason: NoMatchReason | None,
    *,
    viewer: Viewer,
    max_campaigns: int,
    query_duration_s: float,
    started: float,
    post: IdempotentPost | None = None,
) -> dict[str, Any]:
    """The answer to an identified sample: serve and record the moment's campaigns.

    The one way a match becomes engagements, for ``POST /v1/match`` and the stream.
    """
    moment = (
        Moment(
            content_id=content.id,
            offset_s=found.offset_s,
            confidence=found.confidence,
            viewer_hash=viewer.hash,
            app_id=viewer.app_id,
            country=viewer.country,
            platform=viewer.platform,
        )
        if found is not None and content is not None and max_campaigns > 0
        else None
    )
    if moment is None and (post is None or post.key is None):
        # Nothing to record: no write transaction, which on SQLite would take the write lock.
        return _body(found, content, reason, [], query_duration_s, started)
    with write_session(services.sessions) as session:
        served = serve(session, moment, limit=max_campaigns, now=utcnow()) if moment else []
        body = _body(found, content, reason, served, query_duration_s, started)
        if post is not None:
            post.complete(session, 200, body)
        session.commit()
    return body


def _body(
    found: Match | None,
    content: Content | None,
    reason: NoMatchReason | None,
    served: list[ServedCampaign],
    query_duration_s: float,
    started: float,
) -> dict[str, Any]:
    body: dict[str, Any] = jsonable_encoder(
        MatchResponse(
            matched=found is not None,
            match=_matched(found, content) if found and content else None,
            no_match_reason=reason,
            campaigns=[
                ServedCampaignView(
                    id=s.campaign_id,
                    name=s.name,
                    advertiser=s.advertiser,
                    trigger_id=s.trigger_id,
                    engagement_id=s.engagement_id,
                    payload=s.payload,
                )
                for s in served
            ],
            query_duration_s=round(query_duration_s, 3),
            elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
        )
    )
    return body


def _client_fingerprints(data: bytes, max_seconds: float) -> Fingerprints:
    query = Fingerprints.from_bytes(data)
    if query.duration_s > max_seconds:
        raise Problem(
            413,
            "media_too_long",
            f"the fingerprints cover {query.duration_s:.1f} s; the limit is {max_seconds:g} s",
        )
    if len(query) == 0:
        raise MediaTooShortError("the fingerprints hold no codes")
    return query


def first_live(services: Services, candidates: list[Match]) -> tuple[Match | None, Content | None]:
    """The best candidate whose content the library still serves (not deleted, indexed)."""
    if not candidates:
        return None, None
    with services.sessions() as session:
        rows = {
            row.id: row
            for row in session.scalars(
                select(Content).where(
                    Content.id.in_([m.content_id for m in candidates]),
                    Content.deleted_at.is_(None),
                    Content.status == "ready",
                )
            )
        }
    for candidate in candidates:
        if candidate.content_id in rows:
            return candidate, rows[candidate.content_id]
    return None, None


def _matched(found: Match, content: Content) -> MatchedContent:
    return MatchedContent(
        content_id=content.id,
        title=content.title,
        kind=content.kind,
        offset_s=round(found.offset_s, 3),
        confidence=round(found.confidence, 4),
        speed=round(found.speed, 4),
        duration_s=round(found.duration_s, 3),
    )
