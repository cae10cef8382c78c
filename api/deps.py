"""Dependencies injected into routes: services, a database session, the caller.

The ones that do no I/O are coroutines: FastAPI runs a plain function dependency
in a worker thread, a hop that costs more than what most of these do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from acr.auth import AuthError, Principal, Role
from api.problems import Problem
from api.services import Services

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer acr_…`")


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with services.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_principal(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Problem(
            401,
            "unauthenticated",
            "send an API key as `Authorization: Bearer acr_…`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = services.keys.get(credentials.credentials)
    if principal is None:  # not checked lately: the database, off the event loop
        principal = await run_in_threadpool(_authenticate, services, credentials.credentials)
    request.state.principal = principal
    return principal


def _authenticate(services: Services, presented: str) -> Principal:
    with services.sessions() as session:
        try:
            return services.keys.authenticate(session, presented)
        except AuthError as error:
            raise Problem(
                401, "unauthenticated", str(error), headers={"WWW-Authenticate": "Bearer"}
            ) from None


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """A check that admits only keys with one of ``roles`` (the dashboard calls it directly)."""

    def check(principal: Principal) -> Principal:
        if principal.role not in roles:
            allowed = ", ".join(role.value for role in roles)
            raise Problem(403, "forbidden", f"this needs a key with role {allowed}")
        return principal

    return check


def _admitting(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """:func:`require` as a route dependency."""
    check = require(*roles)

    async def admit(principal: PrincipalDep) -> Principal:
        return check(principal)

    return admit


AdminDep = Annotated[Principal, Depends(_admitting(Role.ADMIN))]
ManagerDep = Annotated[Principal, Depends(_admitting(Role.ADMIN, Role.CAMPAIGN_MANAGER))]
ViewerAppDep = Annotated[Principal, Depends(_admitting(Role.ADMIN, Role.VIEWER_APP))]
