"""``/v1/content``: the reference library campaigns are attached to.

Managers and admins upload media with metadata; the background indexer
fingerprints it (``processing`` → ``ready`` or ``failed``). The catalogue is
shared — every manager may list and read all of it, so campaigns can target any
content — but a manager may change or delete only what their organisation
registered. Admins may also register files already on the server, in place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.orm import Session

from acr.auth import Principal
from acr.db.models import Content
from acr.db.session import write_session
from acr.errors import AcrError, EmptyMediaError, MediaTooLargeError
from acr.library.contents import (
    Kind,
    NewContent,
    Status,
    delete_content,
    list_query,
    register_content,
    to_resource,
    update_content,
)
from acr.library.imports import (
    ImportPathError,
    PathNotAllowedError,
    PlannedImport,
    hash_planned,
    manifest_imports,
    register_planned,
    resolve_import_path,
)
from acr.library.uploads import StoredMedia
from api.deps import AdminDep, ManagerDep, ServicesDep, SessionDep
from api.multipart_upload import StreamedForm, receive_upload
from api.pagination import newest_first, unknown_cursor
from api.problems import Problem, not_found, responses
from api.services import Services

router = APIRouter(prefix="/v1/content", tags=["content"], responses=responses(401, 403))

MAX_IMPORT_ITEMS = 1000
TitleField = Annotated[str, Field(min_length=1, max_length=500)]
OwnerField = Annotated[
    str, Field(max_length=64, description="Connected account paid the content's revenue share")
]


# -- shapes ------------------------------------------------------------------------------------


class ContentView(BaseModel):
    """A reference recording of the library."""

    id: str
    object: Literal["content"] = "content"
    title: str
    kind: str
    status: Status
    failure_reason: str | None = Field(description="`<code>: <message>` when status is failed")
    owner_account_id: str | None
    external_ids: dict[str, Any]
    metadata: dict[str, Any]
    duration_s: float | None = Field(description="Set once indexed")
    sha256: str | None
    size_bytes: int | None
    original_filename: str | None
    organisation_id: str | None = Field(description="Organisation that registered it")
    created_at: datetime
    updated_at: datetime
    indexed_at: datetime | None
    deleted_at: datetime | None


class ContentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ContentView]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as starting_after for the next page")


class ContentUpdate(BaseModel):
    """Fields to change; those left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    title: TitleField | None = None
    kind: Kind | None = None
    owner_account_id: OwnerField | None = None
    external_ids: dict[str, str] | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> ContentUpdate:
        # Only the owner may be cleared; a content always has a title, a kind and maps.
        for name in ("title", "kind", "external_ids", "metadata"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class ImportItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Absolute server path inside one of the import roots")
    title: TitleField | None = Field(default=None, description="Defaults to the file name stem")
    kind: Kind
    owner_account_id: OwnerField | None = None
    external_ids: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ImportRequest(BaseModel):
    """Either ``items`` or a ``manifest`` (the batch indexer's CSV or JSON Lines format)."""

    model_config = ConfigDict(extra="forbid")

    items: list[ImportItem] | None = Field(default=None, max_length=MAX_IMPORT_ITEMS)
    manifest: str | None = Field(
        default=None, description="Absolute server path of a .csv or .jsonl manifest"
    )
    kind: Kind | None = Field(
        default=None, description="Kind of the manifest's rows that have no `kind` column"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ImportRequest:
        if (self.items is None) == (self.manifest is None):
            raise ValueError("give either items or manifest")
        return self


class ImportResult(BaseModel):
    object: Literal["content_import"] = "content_import"
    created: list[ContentView] = Field(description="Contents registered and queued for indexing")
    existing: list[ContentView] = Field(description="Files whose bytes were already in the library")


# -- helpers -----------------------------------------------------------------------------------


def _view(row: Content) -> ContentView:
    return ContentView.model_validate(to_resource(row))


def _wake_indexer(request: Request) -> None:
    """Start indexing now rather than at the worker's next poll, if the app says how."""
    wake: Callable[[], None] | None = getattr(request.app.state, "wake_indexer", None)
    if wake is not None:
        wake()


def _field_error(name: str, message: str, kind: str = "value_error") -> Problem:
    return Problem(
        422,
        "validation_error",
        f"{name}: {message}",
        errors=[{"loc": ["body", name], "msg": message, "type": kind}],
    )


def _json_object(name: str, raw: str | None) -> dict[str, Any]:
    """A form field holding a JSON object (absent or blank: empty)."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise _field_error(name, f"not valid JSON: {error.msg}", "json_invalid") from None
    if not isinstance(value, dict):
        raise _field_error(name, "must be a JSON object", "dict_type")
    return value


def _string_map(name: str, value: dict[str, Any]) -> dict[str, str]:
    if not all(isinstance(v, str) for v in value.values()):
        raise _field_error(name, "values must be strings", "string_type")
    return value


def _writable(session: Session, principal: Principal, content_id: str) -> Content:
    """The content if the caller may change it; others' content is not found (no oracle)."""
    row = session.get(Content, content_id)
    if row is None or not (principal.is_admin or row.organisation_id == principal.organisation_id):
        raise not_found("content", content_id)
    return row


# -- routes ------------------------------------------------------------------------------------


class UploadFields(BaseModel):
    """The text fields of the upload form, validated as FastAPI validates form fields."""

    kind: Kind
    title: Annotated[str | None, Field(max_length=500, description="Default: file name")] = None
    owner_account_id: Annotated[str | None, Field(max_length=64)] = None
    external_ids: Annotated[str | None, Field(description="A JSON object of strings")] = None
    metadata: Annotated[str | None, Field(description="A JSON object")] = None


def _upload_body_schema() -> dict[str, Any]:
    """The OpenAPI request body of ``POST /v1/content``: the form the route parses itself.

    The route reads the body as a stream, so FastAPI sees no body parameter;
    this says what it still expects, generated from :class:`UploadFields` plus
    the file, in the shape FastAPI gives an ``UploadFile`` form.
    """
    fields = UploadFields.model_json_schema()
    media = {
        "type": "string",
        "contentMediaType": "application/octet-stream",
        "title": "File",
        "description": "The reference media (any common format)",
    }
    schema = {
        "type": "object",
        "title": "UploadForm",
        "properties": {"file": media, **fields["properties"]},
        "required": ["file", *fields["required"]],
    }
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def _body_errors(error: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors on the form's fields, located as FastAPI locates them."""
    return [
        {"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()
    ]


def _upload_fields(form: StreamedForm) -> UploadFields:
    """The form's text fields, or the 422 FastAPI would answer for them (file first)."""
    errors: list[dict[str, Any]] = []
    if form.file is None:
        errors.append({"loc": ("body", "file"), "msg": "Field required", "type": "missing"})
    try:
        # FastAPI reads an empty form field as one not sent.
        fields = UploadFields.model_validate({k: v for k, v in form.fields.items() if v})
    except ValidationError as error:
        errors += _body_errors(error)
    if errors:
        raise RequestValidationError(errors)
    return fields


def _new_content(fields: UploadFields, filename: str | None, principal: Principal) -> NewContent:
    """The content an upload registers; its JSON maps are checked before any bytes are kept."""
    return NewContent(
        title=(fields.title or "").strip()
        or (Path(filename).stem if filename else "")
        or "untitled",
        kind=fields.kind,
        owner_account_id=fields.owner_account_id or None,
        external_ids=_string_map("external_ids", _json_object("external_ids", fields.external_ids)),
        metadata=_json_object("metadata", fields.metadata),
        organisation_id=principal.organisation_id,
    )


def _plain_name(filename: str | None) -> str | None:
    """The client's file name without any directories it came with."""
    return Path(filename).name if filename else None


def _stored(store: Callable[[], StoredMedia]) -> StoredMedia:
    """Run ``store``, answering its refusals as the upload's problems."""
    try:
        return store()
    except EmptyMediaError as error:
        raise Problem(400, error.code, error.message) from None
    except MediaTooLargeError as error:
        raise Problem(413, "payload_too_large", error.message) from None


def _register_upload(
    request: Request,
    response: Response,
    services: Services,
    stored: StoredMedia,
    new: NewContent,
    filename: str | None,
) -> ContentView:
    """Register stored bytes as a content (202), or answer the content that has them (200)."""
    with write_session(services.sessions) as session:
        row, created = register_content(
            session,
            new,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            media_path=str(stored.path),
            original_filename=filename[:500] if filename else None,
        )
        session.commit()
        view = _view(row)
    if created:
        _wake_indexer(request)
        return view
    if stored.created and row.media_path != str(stored.path):
        # The bytes were in the library under another file (imported in place): keep one copy.
        stored.path.unlink(missing_ok=True)
    response.status_code = 200
    return view


@router.post(
    "",
    name="upload",
    status_code=202,
    responses={
        200: {"model": ContentView, "description": "The same bytes are already in the library"},
        **responses(400, 413, 415, 422),
    },
    openapi_extra={"requestBody": _upload_body_schema()},
)
async def upload_streamed(
    request: Request, response: Response, principal: ManagerDep, services: ServicesDep
) -> ContentView:
    """Upload reference media; it is indexed in the background (poll until `ready`).

    Answers 202 with the new content in `processing`, or 200 with the existing
    content if the same bytes were uploaded before (nothing is stored twice).
    """
    # The body is parsed here, as it arrives, rather than by FastAPI: its form parsing would
    # spool the file to a temporary file of its own before it could be stored (see
    # api.multipart_upload). The caller's key is checked before any of the body is read.
    form = await received_upload(request, services, UploadFields.model_fields)
    try:
        return await register_received(
            request, response, principal, services, form, _upload_fields(form)
        )
    finally:
        form.discard()  # a no-op once committed


async def received_upload(
    request: Request, services: Services, text_fields: Collection[str]
) -> StreamedForm:
    """An upload form, its file received into the library's intake (not yet committed).

    Raises
    ------
    Problem
        413 (the file or a field is too large), 415 (not a form), 400 (malformed).
    """
    try:
        return await receive_upload(
            request,
            services.settings.media_path,
            max_file_bytes=services.settings.max_upload_bytes,
            file_field="file",
            text_fields=text_fields,
        )
    except MediaTooLargeError as error:
        raise Problem(413, "payload_too_large", error.message) from None


async def register_received(
    request: Request,
    response: Response,
    principal: Principal,
    services: Services,
    form: StreamedForm,
    fields: UploadFields,
) -> ContentView:
    """Commit a received upload's file to the library and register it (202, or 200 if known).

    Shared by ``POST /v1/content`` and the dashboard's upload form. The caller
    discards ``form`` afterwards (a no-op once committed).

    Raises
    ------
    Problem
        400 (the file is empty), 422 (malformed JSON maps).
    """
    if form.file is None:
        raise RequestValidationError(
            [{"loc": ("body", "file"), "msg": "Field required", "type": "missing"}]
        )
    filename = _plain_name(form.filename)
    new = _new_content(fields, filename, principal)
    # fsync and rename: disk work, off the event loop.
    stored = await run_in_threadpool(_stored, partial(form.file.commit, filename))
    return await run_in_threadpool(
        _register_upload, request, response, services, stored, new, filename
    )


@router.get("", responses=responses(422))
def list_content(
    _principal: ManagerDep,
    session: SessionDep,
    status: Status | None = None,
    kind: Kind | None = None,
    owner_account_id: str | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Words of the title")] = None,
    include_deleted: bool = False,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    starting_after: Annotated[
        str | None, Query(description="Id of the last content of the previous page")
    ] = None,
) -> ContentList:
    """The library, newest first, a page at a time (`has_more` says if there is another)."""
    after = session.get(Content, starting_after) if starting_after is not None else None
    if starting_after is not None and after is None:
        raise unknown_cursor("content", starting_after)
    query = list_query(
        status=status,
        kind=kind,
        owner_account_id=owner_account_id,
        q=q,
        include_deleted=include_deleted,
    )
    page = newest_first(session, query, Content, limit=limit, after=after)
    return ContentList(
        data=[_view(row) for row in page.rows],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.post(
    "/import",
    status_code=202,
    responses={
        200: {"model": ImportResult, "description": "Every file was already in the library"},
        **responses(403, 422),
    },
)
def import_files(
    body: ImportRequest,
    request: Request,
    response: Response,
    _admin: AdminDep,
    services: ServicesDep,
) -> ImportResult:
    """Register media files already on the server, in place (admins; inside the import roots).

    Every path is checked before anything is registered: one path outside the
    import roots refuses the whole request (403), one missing file too (422).
    """
    roots = services.settings.import_roots
    planned: list[PlannedImport] = []
    errors: list[tuple[list[str | int], AcrError]] = []
    if body.items is not None:
        for number, item in enumerate(body.items):
            try:
                path = resolve_import_path(item.path, roots)
            except AcrError as error:
                errors.append((["body", "items", number, "path"], error))
                continue
            content = NewContent(
                title=item.title or path.stem,
                kind=item.kind,
                owner_account_id=item.owner_account_id,
                external_ids=item.external_ids,
                metadata=item.metadata,
            )
            planned.append(PlannedImport(path, content))
    else:
        assert body.manifest is not None
        try:
            planned, row_errors = manifest_imports(body.manifest, roots, default_kind=body.kind)
        except AcrError as error:
            errors.append((["body", "manifest"], error))
        else:
            errors.extend((["body", "manifest"], error) for error in row_errors)
    if errors:
        forbidden = any(isinstance(error, PathNotAllowedError) for _, error in errors)
        status, code = (403, "path_not_allowed") if forbidden else (422, "invalid_import")
        raise Problem(
            status,
            code,
            errors[0][1].message if len(errors) == 1 else f"{len(errors)} paths cannot be imported",
            errors=[{"loc": loc, "msg": e.message, "type": e.code} for loc, e in errors],
        )
    try:
        hashed = hash_planned(planned)
    except ImportPathError as error:
        raise Problem(422, error.code, error.message) from None
    created: list[ContentView] = []
    existing: list[ContentView] = []
    with write_session(services.sessions) as session:
        for row, is_new in register_planned(session, hashed):
            (created if is_new else existing).append(_view(row))
        session.commit()
    if created:
        _wake_indexer(request)
    else:
        response.status_code = 200
    return ImportResult(created=created, existing=existing)


@router.get("/{content_id}", responses=responses(404))
def get_content(content_id: str, _principal: ManagerDep, session: SessionDep) -> ContentView:
    """One content, deleted ones included (with `deleted_at`)."""
    row = session.get(Content, content_id)
    if row is None:
        raise not_found("content", content_id)
    return _view(row)


@router.patch("/{content_id}", responses=responses(404, 409, 422))
def update(
    content_id: str, body: ContentUpdate, principal: ManagerDep, services: ServicesDep
) -> ContentView:
    """Change a content's metadata (your organisation's content; admins: any)."""
    with write_session(services.sessions) as session:
        row = _writable(session, principal, content_id)
        if row.deleted_at is not None:
            raise Problem(409, "content_deleted", f"content {content_id!r} was deleted")
        update_content(session, row, body.model_dump(exclude_unset=True))
        session.commit()
        return _view(row)


@router.delete("/{content_id}", responses=responses(404))
def delete(
    content_id: str, request: Request, principal: ManagerDep, services: ServicesDep
) -> ContentView:
    """Delete a content: it stops matching soon; its record stays for history (`deleted_at`)."""
    with write_session(services.sessions) as session:
        row = _writable(session, principal, content_id)
        deleted = delete_content(session, row)
        session.commit()
        view = _view(row)
    if deleted:
        _wake_indexer(request)  # the worker takes it out of the index
    return view
