"""Cursor pagination, newest first, the same for every list: ``{object, data, has_more,
next_cursor}``; ``starting_after`` names the last item of the previous page.

The cursor is an id; the page after it is found by keyset on ``(created_at, id)``
(or another sort column and id), so that pages stay stable while new rows arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from api.problems import Problem

Row = TypeVar("Row")


@dataclass(frozen=True)
class Page(Generic[Row]):
    rows: list[Row]
    has_more: bool

    @property
    def next_cursor(self) -> str | None:
        last: Any = self.rows[-1] if self.has_more else None
        return None if last is None else str(last.id)


def sorted_page(
    session: Session,
    query: Select[Any],
    model: type[Row],
    *,
    column: Any,
    descending: bool,
    limit: int,
    after: Row | None,
) -> Page[Row]:
    """One page of ``query`` (rows of ``model``) by ``column`` then id, after the row ``after``.

    ``column`` is an attribute of ``model``; ties are broken by id, in the same direction.
    """
    columns: Any = model  # a mapped class: its attributes are columns
    ids = columns.id
    anchor: Any = after
    if anchor is not None:
        value, last = getattr(anchor, column.key), anchor.id
        query = query.where(
            or_(column < value, and_(column == value, ids < last))
            if descending
            else or_(column > value, and_(column == value, ids > last))
        )
    order = [column.desc(), ids.desc()] if descending else [column.asc(), ids.asc()]
    rows: list[Row] = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    return Page(rows[:limit], len(rows) > limit)


def newest_first(
    session: Session, query: Select[Any], model: type[Row], *, limit: int, after: Row | None
) -> Page[Row]:
    """One page of ``query`` (rows of ``model``), newest first, after the row ``after``."""
    columns: Any = model
    return sorted_page(
        session, query, model, column=columns.created_at, descending=True, limit=limit, after=after
    )


def unknown_cursor(what: str, cursor: str) -> Problem:
    """The one answer for a ``starting_after`` that names nothing the caller can see."""
    message = f"no {what} {cursor!r}"
    return Problem(
        422,
        "validation_error",
        f"query.starting_after: {message}",
        errors=[{"loc": ["query", "starting_after"], "msg": message, "type": "value_error"}],
    )
