"""Dependencies injected into routes: services, a database session, the caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from acr.auth import AuthError, Principal, Role, authenticate
from api.problems import Problem
from api.services import Services

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer acr_…`")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with services.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_principal(
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
    with services.sessions() as session:
        try:
            principal = authenticate(session, credentials.credentials)
        except AuthError as error:
            raise Problem(
                401, "unauthenticated", str(error), headers={"WWW-Authenticate": "Bearer"}
            ) from None
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency that admits only keys with one of ``roles``."""

    def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            allowed = ", ".join(role.value for role in roles)
            raise Problem(403, "forbidden", f"this needs a key with role {allowed}")
        return principal

    return check


AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]
ManagerDep = Annotated[Principal, Depends(require(Role.ADMIN, Role.CAMPAIGN_MANAGER))]
ViewerAppDep = Annotated[Principal, Depends(require(Role.ADMIN, Role.VIEWER_APP))]
