"""Cursor pagination, newest first, the same for every list: ``{object, data, has_more,
next_cursor}``; ``starting_after`` names the last item of the previous page.

The cursor is an id; the page after it is found by keyset on ``(created_at, id)``,
so that pages stay stable while new rows arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, or_
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


def before(model: Any, after: Any) -> ColumnElement[bool]:
    """Rows of ``model`` that come after ``after`` in newest-first order."""
    condition: ColumnElement[bool] = or_(
        model.created_at < after.created_at,
        and_(model.created_at == after.created_at, model.id < after.id),
    )
    return condition


def newest_first(
    session: Session, query: Select[Any], model: type[Row], *, limit: int, after: Row | None
) -> Page[Row]:
    """One page of ``query`` (rows of ``model``), newest first, after the row ``after``."""
    columns: Any = model  # a mapped class: its attributes are columns
    if after is not None:
        query = query.where(before(columns, after))
    ordered = query.order_by(columns.created_at.desc(), columns.id.desc()).limit(limit + 1)
    rows: list[Row] = list(session.scalars(ordered))
    return Page(rows[:limit], len(rows) > limit)


def unknown_cursor(what: str, cursor: str) -> Problem:
    """The one answer for a ``starting_after`` that names nothing the caller can see."""
    message = f"no {what} {cursor!r}"
    return Problem(
        422,
        "validation_error",
        f"query.starting_after: {message}",
        errors=[{"loc": ["query", "starting_after"], "msg": message, "type": "value_error"}],
    )
