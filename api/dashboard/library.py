"""The content library: what is in it, its indexing status, uploads and deletions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from acr.auth import Principal
from acr.library.contents import Kind
from api.dashboard.pages import PREFIX, PageRoute, render
from api.dashboard.session import FormDep, VisitorDep, check_csrf, form_session
from api.deps import ServicesDep, SessionDep
from api.problems import Problem
from api.routers import accounts as accounts_api
from api.routers import content as content_api
from api.services import Services

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
async def upload(request: Request, visitor: VisitorDep, services: ServicesDep) -> Response:
    # Streamed as POST /v1/content streams it: the file is written once, into the library.
    state = form_session(request, services)
    errors: dict[str, str] = {}
    try:
        form = await content_api.received_upload(
            request, services, (*UploadFields.model_fields, "csrf_token")
        )
    except Problem as problem:
        if problem.status not in (400, 413, 415):
            raise
        form, errors["file"] = None, problem.detail
    try:
        if form is not None:
            check_csrf(state, form.fields.get("csrf_token"))
            if form.file is None or not form.filename:
                errors["file"] = "Choose a media file to upload."
            try:
                fields = UploadFields.model_validate(
                    {key: form.fields.get(key) or "" for key in UploadFields.model_fields}
                )
            except ValidationError as error:
                errors.update({str(e["loc"][0]): e["msg"] for e in error.errors()})
        if not errors:
            assert form is not None
            try:
                await content_api.register_received(
                    request,
                    Response(),
                    visitor.principal,
                    services,
                    form,
                    content_api.UploadFields(
                        kind=fields.kind,
                        title=fields.title or None,
                        owner_account_id=fields.owner_account_id or None,
                    ),
                )
            except Problem as problem:
                if problem.status not in (400, 413, 415, 422):
                    raise
                errors["file"] = problem.detail
    finally:
        if form is not None:
            form.discard()  # a no-op once committed
    if errors:
        return await run_in_threadpool(_refused, request, visitor.principal, services, errors)
    return RedirectResponse(f"{PREFIX}/content?notice=uploaded", status_code=303)


def _refused(
    request: Request, principal: Principal, services: Services, errors: dict[str, str]
) -> Response:
    """The library page again, with the upload form's errors."""
    with services.sessions() as session:
        return _library_page(
            request, principal, session, status=None, after=None, errors=errors, status_code=422
        )


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
