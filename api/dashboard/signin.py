"""Signing in with an API key, and out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from acr.auth import AuthError, authenticate
from api.dashboard.pages import PREFIX, PageRoute, render
from api.dashboard.session import (
    DASHBOARD_ROLES,
    FormDep,
    new_state,
    read_state,
    write_state,
)
from api.deps import ServicesDep

router = APIRouter(route_class=PageRoute)

HOME = f"{PREFIX}/campaigns"


def _safe_next(target: object) -> str:
    """Where to go after signing in: a dashboard page, never another site."""
    if isinstance(target, str) and target.startswith(f"{PREFIX}/") and "//" not in target:
        return target
    return HOME


def _form(
    request: Request, services: ServicesDep, *, next_page: str, error: str, status_code: int
) -> Response:
    state = read_state(request, services)
    if state is None or state.key_id is not None:
        state = new_state()
    response = render(
        request,
        "sign_in.html",
        {
            "csrf": state.csrf,
            "next_page": next_page,
            "error": error,
            "roles": ", ".join(role.value for role in DASHBOARD_ROLES),
        },
        status_code=status_code,
    )
    write_state(response, request, services, state)
    return response


@router.get("/sign-in")
def sign_in_page(
    request: Request, services: ServicesDep, next: str = HOME, reason: str = ""
) -> Response:
    return _form(request, services, next_page=_safe_next(next), error=reason, status_code=200)


@router.post("/sign-in")
def sign_in(request: Request, services: ServicesDep, form: FormDep) -> Response:
    presented = form.get("api_key")
    next_page = _safe_next(form.get("next"))
    with services.sessions() as session:
        try:
            principal = authenticate(session, presented if isinstance(presented, str) else "")
        except AuthError:
            principal = None
    if principal is None:
        return _form(
            request,
            services,
            next_page=next_page,
            error="That API key is not valid (unknown, malformed or revoked).",
            status_code=401,
        )
    if principal.role not in DASHBOARD_ROLES:
        return _form(
            request,
            services,
            next_page=next_page,
            error=(
                f"A {principal.role.value} key cannot sign in to the dashboard: "
                "use a campaign manager's key (or an admin's)."
            ),
            status_code=403,
        )
    response = RedirectResponse(next_page, status_code=303)
    # A new CSRF token with the new identity: a token seen before sign-in is worth nothing.
    write_state(response, request, services, new_state(principal.key_id))
    return response


@router.post("/sign-out")
def sign_out(request: Request, services: ServicesDep, _posted: FormDep) -> Response:
    response = RedirectResponse(f"{PREFIX}/sign-in?reason=You+have+signed+out.", status_code=303)
    write_state(response, request, services, new_state())
    return response
