"""``/v1/keys``: admins issue and revoke API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from acr.auth import KeyScopeError, Role, create_key, revoke_key
from acr.db.models import ApiKey
from acr.db.session import write_session
from api.deps import AdminDep, ServicesDep, SessionDep
from api.problems import Problem, not_found, responses

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=responses(401, 403))


class KeyCreate(BaseModel):
    role: Literal["admin", "campaign_manager", "viewer_app"]
    organisation: str | None = Field(
        default=None, description="Slug of the advertiser (campaign_manager); created if new"
    )
    app: str | None = Field(default=None, description="Slug of the viewer app; created if new")
    name: str = Field(default="", max_length=200)


class KeyView(BaseModel):
    id: str
    name: str
    role: str
    organisation_id: str | None
    app_id: str | None
    created_at: datetime
    revoked_at: datetime | None


class CreatedKeyView(KeyView):
    secret: str = Field(description="The key itself. Shown only in this response.")


def _view(row: ApiKey) -> KeyView:
    return KeyView(
        id=row.id,
        name=row.name,
        role=row.role,
        organisation_id=row.organisation_id,
        app_id=row.app_id,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


@router.post("", status_code=201, responses=responses(422))
def create(body: KeyCreate, _admin: AdminDep, services: ServicesDep) -> CreatedKeyView:
    """Issue a key; its secret is in this response and nowhere else, ever."""
    with write_session(services.sessions) as session:
        try:
            created = create_key(
                session,
                Role(body.role),
                organisation=body.organisation,
                app=body.app,
                name=body.name,
            )
        except KeyScopeError as error:
            raise Problem(422, "invalid_scope", str(error)) from None
        session.commit()
        row = session.get(ApiKey, created.key_id)
        assert row is not None
        return CreatedKeyView(**_view(row).model_dump(), secret=created.secret)


@router.get("")
def list_keys(_admin: AdminDep, session: SessionDep) -> list[KeyView]:
    """Every key, newest first (without secrets)."""
    rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at.desc())).all()
    return [_view(row) for row in rows]


@router.delete("/{key_id}", responses=responses(404))
def revoke(key_id: str, _admin: AdminDep, services: ServicesDep) -> KeyView:
    """Revoke a key: it stops working at once (within seconds on a server's other processes)."""
    with write_session(services.sessions) as session:
        if not revoke_key(session, key_id):
            raise not_found("live key", key_id)
        session.commit()
        services.keys.forget(key_id)
        row = session.get(ApiKey, key_id)
        assert row is not None
        return _view(row)
