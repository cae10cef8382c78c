"""The dashboard's session: a signed cookie naming the API key, and CSRF tokens for forms.

Choices:

* The cookie holds the key's id, never its secret, with a per-session CSRF
  token and an expiry, signed with HMAC-SHA256 under a key derived from the
  service's secret. It is ``HttpOnly`` (scripts cannot read it), ``SameSite=Lax``
  (other sites' forms do not carry it), limited to ``/dashboard`` and
  ``Secure`` when the page came over HTTPS.
* Every request looks the key up again: a revoked key signs its sessions out
  at once. The role check is the JSON API's own (:func:`api.deps.require`).
* Every POST carries the session's CSRF token in a hidden field
  (``csrf_token``); visitors get a session without a key before they sign in,
  so that the sign-in form is protected too, and a new token at sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from starlette.datastructures import FormData
from starlette.responses import Response

from acr.auth import Principal, Role, principal_of_key
from acr.db.models import Organisation
from api.dashboard.pages import PREFIX, SignInRequired
from api.deps import ServicesDep, require
from api.problems import Problem
from api.services import Services

COOKIE = "acr_dashboard"
LIFETIME_S = 8 * 3600
"""A session lasts a working day; then the key is asked for again."""
DASHBOARD_ROLES = (Role.ADMIN, Role.CAMPAIGN_MANAGER)
_check_role = require(*DASHBOARD_ROLES)


@dataclass(frozen=True)
class SessionState:
    """What the cookie says: the signed-in key (None before sign-in) and the CSRF token."""

    key_id: str | None
    csrf: str
    expires: int


@dataclass(frozen=True)
class Visitor:
    """The signed-in key, as the pages see it."""

    principal: Principal
    csrf: str
    organisation: str | None
    """Name of the key's organisation (None for admins)."""

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin


def _signing_key(services: Services) -> bytes:
    # Derived, so that a session signature can never stand for a viewer-id hash.
    return hmac.new(services.viewer_secret, b"acr dashboard session v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_state(state: SessionState, key: bytes) -> str:
    body = _b64(json.dumps({"k": state.key_id, "c": state.csrf, "e": state.expires}).encode())
    signature = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"{body}.{signature}"


def decode_state(value: str, key: bytes, now: float) -> SessionState | None:
    """The state in a cookie value; None if it is forged, malformed or expired."""
    body, _, signature = value.partition(".")
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not signature or not hmac.compare_digest(signature, expected):
        return None
    try:
        raw = json.loads(_unb64(body))
        state = SessionState(raw["k"], str(raw["c"]), int(raw["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return state if state.expires > now else None


def read_state(request: Request, services: Services) -> SessionState | None:
    value = request.cookies.get(COOKIE)
    return None if value is None else decode_state(value, _signing_key(services), time.time())


def new_state(key_id: str | None = None) -> SessionState:
    return SessionState(key_id, secrets.token_urlsafe(32), int(time.time()) + LIFETIME_S)


def write_state(
    response: Response, request: Request, services: Services, state: SessionState
) -> None:
    response.set_cookie(
        COOKIE,
        encode_state(state, _signing_key(services)),
        max_age=LIFETIME_S,
        path=PREFIX,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="lax",
    )


def current_visitor(request: Request, services: ServicesDep) -> Visitor:
    """The signed-in key, checked again now; otherwise off to the sign-in page."""
    state = read_state(request, services)
    if state is None or state.key_id is None:
        raise SignInRequired()
    with services.sessions() as session:
        principal = principal_of_key(session, state.key_id)
        if principal is None:
            raise SignInRequired("Your API key has been revoked: sign in with another one.")
        _check_role(principal)
        organisation = (
            session.scalar(
                select(Organisation.name).where(Organisation.id == principal.organisation_id)
            )
            if principal.organisation_id
            else None
        )
    visitor = Visitor(principal, state.csrf, organisation)
    request.state.visitor = visitor
    request.state.principal = principal  # for the request log, as the API's routes do
    return visitor


VisitorDep = Annotated[Visitor, Depends(current_visitor)]


def form_session(request: Request, services: Services) -> SessionState:
    """The session a form is posted in, checked before its body is read."""
    state = read_state(request, services)
    if state is None:
        raise SignInRequired("Your session has expired: sign in again.")
    return state


def check_csrf(state: SessionState, token: object) -> None:
    """Refuse a form whose CSRF token is not its session's."""
    if not isinstance(token, str) or not hmac.compare_digest(token, state.csrf):
        raise Problem(
            403,
            "csrf_failed",
            "This form was not sent from your current dashboard session: reload the page "
            "and try again.",
        )


async def posted_form(request: Request, services: ServicesDep) -> FormData:
    """The POSTed form, once its CSRF token has been checked against the session's."""
    state = form_session(request, services)
    form = await request.form()
    check_csrf(state, form.get("csrf_token"))
    return form


FormDep = Annotated[FormData, Depends(posted_form)]
