"""``POST /v1/match``: what is the viewer watching, and which campaigns go with that moment."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile
from pydantic import BaseModel, Field
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from acr import idempotency
from acr.auth import Principal
from acr.campaigns.serving import Moment, ServedCampaign, serve
from acr.db.models import Content, utcnow
from acr.db.session import write_session
from acr.errors import MediaError, MediaTooShortError, NoVideoStreamError, SilentMediaError
from acr.results import Match, MatchResult
from acr.signals.base import Fingerprints
from acr.signals.video import DEFAULT_FPS, VideoHashes, hash_stills
from acr.video_matching import DEFAULT_MIN_CONFIDENCE, FUSION_FLOOR, fuse
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
MAX_FRAMES = 64
"""Still frames accepted in one request: sixteen seconds at four frames a second."""


class MatchedContent(BaseModel):
    content_id: str
    title: str
    kind: str
    offset_s: float = Field(description="Where in the content the sample starts, in seconds")
    confidence: float = Field(description="Calibrated probability that the match is right")
    speed: float = Field(
        description="Tempo of the sample relative to the content (1.05: 5 % fast); "
        "the offset is in the content's own time"
    )
    pitch: float = Field(
        description="Frequency factor of the sample's sound relative to the content's "
        "(equal to speed for a sample played fast, 1.0 when only the tempo changed)"
    )
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


class _Budget:
    """Reads uploads, refusing the request once they add up to more than `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.limit = limit

    def read(self, upload: UploadFile) -> bytes:
        data = upload.file.read(self.left + 1)
        if len(data) > self.left:
            raise Problem(413, "payload_too_large", f"the sample is larger than {self.limit} bytes")
        self.left -= len(data)
        return data


def _one_of(message: str) -> Problem:
    return Problem(
        422,
        "validation_error",
        message,
        errors=[{"loc": ["body", "sample"], "msg": message, "type": "value_error"}],
    )


@dataclass(frozen=True)
class _Query:
    """What a viewer app sent: media, or client-side evidence of sound and/or pictures."""

    media: bytes | None
    fingerprints: bytes | None
    video_hashes: bytes | None
    frames: list[bytes]
    frame_interval_s: float

    def identity(self) -> list[bytes | str | None]:
        """The parts that decide the outcome, for the idempotency check."""
        if self.media is not None:
            return ["sample", self.media]
        parts: list[bytes | str | None] = []
        if self.fingerprints is not None:
            parts += ["fingerprints", self.fingerprints]
        if self.video_hashes is not None:
            parts += ["video_hashes", self.video_hashes]
        if self.frames:
            parts += ["frames", repr(self.frame_interval_s), *self.frames]
        return parts


# The form's fields: the route documents and checks them.
ViewerIdForm = Annotated[
    str, Form(min_length=1, max_length=256, description="Opaque viewer id; stored hashed")
]
SampleFile = Annotated[
    UploadFile | None, File(description="Audio or video media in any common format")
]
FingerprintsFile = Annotated[
    UploadFile | None,
    File(description="Query fingerprints computed on the client (acr wire format)"),
]
VideoHashesFile = Annotated[
    UploadFile | None,
    File(
        description="Frame hashes computed on the client (acr video wire format, "
        "about 2.5 KB per second of picture): a smart TV's own frame buffer"
    ),
]
FramesFiles = Annotated[
    list[UploadFile] | None,
    File(description=f"A handful of still frames (images), in time order; at most {MAX_FRAMES}"),
]
FrameIntervalForm = Annotated[
    float, Form(gt=0, le=10, description="Seconds between consecutive `frames`")
]
CountryForm = Annotated[str | None, Form(pattern="^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2")]
PlatformForm = Annotated[str | None, Form(min_length=1, max_length=32)]
MaxCampaignsForm = Annotated[int, Form(ge=0, le=10)]
DEFAULT_FRAME_INTERVAL_S = 1.0 / DEFAULT_FPS
DEFAULT_MAX_CAMPAIGNS = 3


@router.post(
    "/match",
    response_model=MatchResponse,
    responses={**replayed_header(200), **responses(400, 401, 403, 409, 413, 415, 422, 429, 503)},
)
async def match(
    services: ServicesDep,
    principal: RateLimitedViewerAppDep,
    response: Response,
    viewer_id: ViewerIdForm,
    sample: SampleFile = None,
    fingerprints: FingerprintsFile = None,
    video_hashes: VideoHashesFile = None,
    frames: FramesFiles = None,
    frame_interval_s: FrameIntervalForm = DEFAULT_FRAME_INTERVAL_S,
    country: CountryForm = None,
    platform: PlatformForm = None,
    max_campaigns: MaxCampaignsForm = DEFAULT_MAX_CAMPAIGNS,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Identify a sample and serve the campaigns attached to that content at that moment.

    Send either ``sample`` (media: sound, pictures or both, each matched on
    what it has) or client-side evidence: ``fingerprints`` (sound) and/or
    ``video_hashes`` or ``frames`` (pictures). Evidence of both kinds is fused
    into one answer. With an ``Idempotency-Key``, a retry returns the first
    answer and records nothing again; the same key with a different request
    is refused with 409.
    """
    # One hop to a worker thread for all of it: reading the uploads, matching, the database.
    work = partial(
        _match,
        services,
        principal,
        response,
        viewer_id=viewer_id,
        sample=sample,
        fingerprints=fingerprints,
        video_hashes=video_hashes,
        frames=frames,
        frame_interval_s=frame_interval_s,
        country=country,
        platform=platform,
        max_campaigns=max_campaigns,
        idempotency_key=idempotency_key,
    )
    return await services.match_lane.run(work)


def _match(
    services: Services,
    principal: Principal,
    response: Response,
    *,
    viewer_id: str,
    sample: UploadFile | None,
    fingerprints: UploadFile | None,
    video_hashes: UploadFile | None,
    frames: list[UploadFile] | None,
    frame_interval_s: float,
    country: str | None,
    platform: str | None,
    max_campaigns: int,
    idempotency_key: str | None,
) -> dict[str, Any]:
    """All of a match request's blocking work, in the match lane."""
    pictures = [p for p in (video_hashes, *(frames or [])) if p is not None]
    if sample is not None and (fingerprints is not None or pictures):
        raise _one_of("`sample` (media) comes alone, without client-side evidence")
    if sample is None and fingerprints is None and not pictures:
        raise _one_of("send `sample` (media), or `fingerprints` and/or `video_hashes` or `frames`")
    if video_hashes is not None and frames:
        raise _one_of("send `video_hashes` or `frames`, not both")
    if frames and len(frames) > MAX_FRAMES:
        raise Problem(413, "too_many_frames", f"at most {MAX_FRAMES} frames per request")
    settings = services.settings
    budget = _Budget(settings.max_sample_bytes)
    query = _Query(
        media=budget.read(sample) if sample is not None else None,
        fingerprints=budget.read(fingerprints) if fingerprints is not None else None,
        video_hashes=budget.read(video_hashes) if video_hashes is not None else None,
        frames=[budget.read(frame) for frame in frames or []],
        frame_interval_s=frame_interval_s,
    )
    country = country.upper() if country else None
    request_hash = idempotency.request_fingerprint(
        *query.identity(), viewer_id, country, platform, str(max_campaigns)
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
                query,
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
    query: _Query,
    *,
    viewer: Viewer,
    max_campaigns: int,
    post: IdempotentPost,
) -> dict[str, Any]:
    started = time.perf_counter()
    settings = services.settings
    found: Match | None = None
    content: LiveContent | None = None
    heard = _hear(services, query)
    seen = _see(services, query, sound_failed=heard.failure)
    reason: NoMatchReason | None = None
    if heard.result is None and seen.result is None:
        reason = heard.reason or seen.reason or "no_match"
    else:
        result = (
            # Each signal reported down to the fusion floor; the threshold applies to the fusion.
            fuse(
                heard.result,
                seen.result,
                top_k=MAX_CANDIDATES,
                min_confidence=max(settings.min_confidence, DEFAULT_MIN_CONFIDENCE),
            )
            if _pictures_in_play(services, query)
            else heard.result
        )
        assert result is not None
        candidates = [m for m in result.matches if m.confidence >= settings.min_confidence]
        if candidates and (max_campaigns > 0 or post.key is not None):
            # The library lookup inside the transaction that records the answer: one
            # connection, BEGIN and COMMIT for both.
            with write_session(services.sessions) as session:
                found, content = _live_candidate(session, candidates)
                return _recorded(
                    session,
                    found,
                    content,
                    None if found else "no_match",
                    viewer=viewer,
                    max_campaigns=max_campaigns,
                    query_duration_s=max(heard.duration_s, seen.duration_s),
                    started=started,
                    post=post,
                )
        found, content = first_live(services, candidates)
        reason = None if found else "no_match"
    return respond(
        services,
        found,
        content,
        reason,
        viewer=viewer,
        max_campaigns=max_campaigns,
        query_duration_s=max(heard.duration_s, seen.duration_s),
        started=started,
        post=post,
    )


@dataclass(frozen=True)
class _Evidence:
    """One signal's part of the answer."""

    result: MatchResult | None = None
    reason: NoMatchReason | None = None
    duration_s: float = 0.0
    failure: MediaError | None = None
    """Why the sample's sound could not be used at all (it has none, or is damaged)."""


def _pictures_in_play(services: Services, query: _Query) -> bool:
    if query.media is not None:
        return services.video_index.available()
    return query.video_hashes is not None or bool(query.frames)


def _hear(services: Services, query: _Query) -> _Evidence:
    """Match the sample's sound, if it has any."""
    settings = services.settings
    if query.media is None and query.fingerprints is None:
        return _Evidence()
    fused = _pictures_in_play(services, query)
    try:
        fingerprints = (
            services.index.fingerprint_query(
                query.media,
                max_seconds=settings.max_sample_seconds,
                max_bytes=settings.max_sample_bytes,
            )
            if query.media is not None
            else _client_fingerprints(query.fingerprints or b"", settings.max_sample_seconds)
        )
    except SilentMediaError:
        return _Evidence(reason="silence")
    except MediaTooShortError:
        return _Evidence(reason="too_short")
    except MediaError as error:
        if not fused or query.media is None:
            raise
        return _Evidence(failure=error)
    options: dict[str, Any] = {"min_confidence": FUSION_FLOOR} if fused else {}
    result = services.index.match_fingerprints(fingerprints, top_k=MAX_CANDIDATES, **options)
    return _Evidence(result=result, duration_s=fingerprints.duration_s)


def _see(services: Services, query: _Query, *, sound_failed: MediaError | None) -> _Evidence:
    """Match the sample's pictures, if it has any and there is a video index."""
    if not _pictures_in_play(services, query):
        if sound_failed is not None:
            raise sound_failed
        return _Evidence()
    try:
        hashes = _video_hashes(services, query)
    except NoVideoStreamError:
        if sound_failed is not None:
            raise sound_failed from None  # neither sound nor pictures: the sound's reason
        return _Evidence()
    except MediaError:
        if sound_failed is not None or query.media is None:
            raise
        return _Evidence()  # damaged pictures beside usable sound: the sound answers
    if len(hashes) == 0:
        return _Evidence(reason="no_match", duration_s=hashes.duration_s)
    if not services.video_index.available():
        return _Evidence(reason="no_match", duration_s=hashes.duration_s)
    result = services.video_index.match_hashes(
        hashes, top_k=MAX_CANDIDATES, min_confidence=FUSION_FLOOR
    )
    return _Evidence(result=result, duration_s=hashes.duration_s)


def _video_hashes(services: Services, query: _Query) -> VideoHashes:
    settings = services.settings
    if query.media is not None:
        return services.video_index.hash_query(
            query.media,
            max_seconds=settings.max_sample_seconds,
            max_bytes=settings.max_sample_bytes,
        )
    if query.video_hashes is not None:
        hashes = VideoHashes.from_bytes(query.video_hashes)
        if hashes.duration_s > settings.max_sample_seconds:
            raise Problem(
                413,
                "media_too_long",
                f"the video hashes cover {hashes.duration_s:.1f} s; "
                f"the limit is {settings.max_sample_seconds:g} s",
            )
        return hashes
    return hash_stills(
        query.frames, interval_s=query.frame_interval_s, max_bytes=settings.max_sample_bytes
    )


def respond(
    services: Services,
    found: Match | None,
    content: LiveContent | None,
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
    if _moment(found, content, viewer, max_campaigns) is None and (
        post is None or post.key is None
    ):
        # Nothing to record: no write transaction, which on SQLite would take the write lock.
        return _body(found, content, reason, [], query_duration_s, started)
    with write_session(services.sessions) as session:
        return _recorded(
            session,
            found,
            content,
            reason,
            viewer=viewer,
            max_campaigns=max_campaigns,
            query_duration_s=query_duration_s,
            started=started,
            post=post,
        )


def _moment(
    found: Match | None, content: LiveContent | None, viewer: Viewer, max_campaigns: int
) -> Moment | None:
    """The moment campaigns are served for, if there is one and campaigns are wanted."""
    if found is None or content is None or max_campaigns <= 0:
        return None
    return Moment(
        content_id=content.id,
        offset_s=found.offset_s,
        confidence=found.confidence,
        viewer_hash=viewer.hash,
        app_id=viewer.app_id,
        country=viewer.country,
        platform=viewer.platform,
    )


def _recorded(
    session: Session,
    found: Match | None,
    content: LiveContent | None,
    reason: NoMatchReason | None,
    *,
    viewer: Viewer,
    max_campaigns: int,
    query_duration_s: float,
    started: float,
    post: IdempotentPost | None,
) -> dict[str, Any]:
    """:func:`respond` in the caller's write session: serve, store the answer, commit."""
    moment = _moment(found, content, viewer, max_campaigns)
    served = serve(session, moment, limit=max_campaigns, now=utcnow()) if moment else []
    body = _body(found, content, reason, served, query_duration_s, started)
    if post is not None:
        post.complete(session, 200, body)
    session.commit()
    return body


def _body(
    found: Match | None,
    content: LiveContent | None,
    reason: NoMatchReason | None,
    served: list[ServedCampaign],
    query_duration_s: float,
    started: float,
) -> dict[str, Any]:
    return MatchResponse(
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
    ).model_dump(mode="json")


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


@dataclass(frozen=True)
class LiveContent:
    """What an answer tells of a matched content the library serves."""

    id: str
    title: str
    kind: str


_LIVE = select(Content.id, Content.title, Content.kind).where(
    Content.id.in_(bindparam("ids", expanding=True)),
    Content.deleted_at.is_(None),
    Content.status == "ready",
)
"""Contents among ``ids`` that the library serves; built once, so compiled once. Three
columns through the session's connection: no ORM entities to build for a lookup."""


def first_live(
    services: Services, candidates: list[Match]
) -> tuple[Match | None, LiveContent | None]:
    """The best candidate whose content the library still serves (not deleted, indexed)."""
    if not candidates:
        return None, None
    with services.sessions() as session:
        return _live_candidate(session, candidates)


def _live_candidate(
    session: Session, candidates: list[Match]
) -> tuple[Match | None, LiveContent | None]:
    """:func:`first_live` in the caller's session."""
    ids = [m.content_id for m in candidates]
    rows = {row.id: LiveContent(*row) for row in session.connection().execute(_LIVE, {"ids": ids})}
    for candidate in candidates:
        if candidate.content_id in rows:
            return candidate, rows[candidate.content_id]
    return None, None


def _matched(found: Match, content: LiveContent) -> MatchedContent:
    return MatchedContent(
        content_id=content.id,
        title=content.title,
        kind=content.kind,
        offset_s=round(found.offset_s, 3),
        confidence=round(found.confidence, 4),
        speed=round(found.speed, 4),
        pitch=round(found.pitch, 4),
        duration_s=round(found.duration_s, 3),
    )
