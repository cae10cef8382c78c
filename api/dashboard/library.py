"""The content library: what is in it, its indexing status, uploads and deletions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, UploadFile
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile as FormFile
from starlette.responses import RedirectResponse, Response

from acr.auth import Principal
from acr.library.contents import Kind
from api.dashboard.pages import PREFIX, PageRoute, render
from api.dashboard.session import FormDep, VisitorDep
from api.deps import ServicesDep, SessionDep
from api.problems import Problem
from api.routers import accounts as accounts_api
from api.routers import content as content_api

router = APIRouter(route_class=PageRoute)

PAGE_SIZE = 25
STATUSES = ("processing", "ready", "failed")
NOTICES = {"uploaded": "Uploaded: it is being indexed.", "deleted": "Deleted: it stops matching."}


class UploadFields(BaseModel):
    """The upload form's fields, with the limits ``POST /v1/content`` puts on its form."""

    kind: Kind
    title: Annotated[str, Field(max_length=500)] = ""
    owner_account_id: Annotated[str, Field(max_length=64)] = ""


def _library_page(
    request: Request,
    principal: Principal,
    session: Session,
    *,
    status: str | None,
    after: str | None,
    notice: str = "",
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    page = content_api.list_content(
        principal,
        session,
        status=status if status in STATUSES else None,  # type: ignore[arg-type] # checked
        kind=None,
        owner_account_id=None,
        q=None,
        include_deleted=False,
        limit=PAGE_SIZE,
        starting_after=after or None,
    )
    accounts = accounts_api.list_accounts(
        principal, session, organisation_id=None, limit=100, starting_after=None
    )["data"]
    return render(
        request,
        "library.html",
        {
            "contents": page.data,
            "next_cursor": page.next_cursor,
            "status": status or "",
            "statuses": STATUSES,
            "accounts": accounts,
            "notice": notice,
            "errors": errors or {},
        },
        status_code=status_code,
    )


@router.get("/content")
def library(
    request: Request,
    visitor: VisitorDep,
    session: SessionDep,
    status: str | None = None,
    after: str | None = None,
    notice: str = "",
) -> Response:
    return _library_page(
        request,
        visitor.principal,
        session,
        status=status,
        after=after,
        notice=NOTICES.get(notice, ""),
    )


@router.post("/content")
def upload(request: Request, visitor: VisitorDep, services: ServicesDep, form: FormDep) -> Response:
    errors: dict[str, str] = {}
    given = form.get("file")
    if not isinstance(given, FormFile) or not given.filename:
        errors["file"] = "Choose a media file to upload."
    try:
        fields = UploadFields.model_validate(
            {key: form.get(key) or "" for key in ("kind", "title", "owner_account_id")}
        )
    except ValidationError as error:
        errors.update({str(e["loc"][0]): e["msg"] for e in error.errors()})
    if not errors:
        assert isinstance(given, FormFile)
        try:
            content_api.upload(
                request,
                Response(),
                visitor.principal,
                services,
                UploadFile(
                    given.file, size=given.size, filename=given.filename, headers=given.headers
                ),
                fields.kind,
                fields.title or None,
                fields.owner_account_id or None,
                None,
                None,
            )
        except Problem as problem:
            if problem.status not in (400, 413, 415, 422):
                raise
            errors["file"] = problem.detail
    if errors:
        with services.sessions() as session:
            return _library_page(
                request,
                visitor.principal,
                session,
                status=None,
                after=None,
                errors=errors,
                status_code=422,
            )
    return RedirectResponse(f"{PREFIX}/content?notice=uploaded", status_code=303)


@router.post("/content/{content_id}/delete")
def delete(
    request: Request,
    content_id: str,
    visitor: VisitorDep,
    services: ServicesDep,
    _posted: FormDep,
) -> Response:
    content_api.delete(content_id, request, visitor.principal, services)
    return RedirectResponse(f"{PREFIX}/content?notice=deleted", status_code=303)
