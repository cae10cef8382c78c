"""What every dashboard page shares: templates, formatting, and errors shown as pages.

Route functions of :mod:`api.routers` raise :class:`~api.problems.Problem`; on a
dashboard route, :class:`PageRoute` turns one into an HTML page with the same
status and message (a 401 into the sign-in page), so that the pages can call
the API's functions as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from api.problems import Problem

PREFIX = "/dashboard"
HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"

ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
     "xaf", "xof", "xpf"}
)  # fmt: skip
"""Currencies without a minor unit (Stripe's list): their amounts are whole units."""


class SignInRequired(Exception):  # noqa: N818 - an outcome, as Problem is
    """No valid session: the visitor is sent to the sign-in page (with why, if known)."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


def minor_digits(currency: str) -> int:
    """Decimal places of ``currency``'s amounts as people write them."""
    return 0 if currency.lower() in ZERO_DECIMAL else 2


def money(amount: int | None, currency: str) -> str:
    """Minor units as people read them: ``money(1250, "usd") == "12.50 USD"``."""
    if amount is None:
        return "—"
    digits = minor_digits(currency)
    major = Decimal(amount).scaleb(-digits)
    return f"{major:,.{digits}f} {currency.upper()}"


def major_units(amount: int | None, currency: str) -> str:
    """Minor units as a form field shows them (no grouping, no currency)."""
    if amount is None:
        return ""
    digits = minor_digits(currency)
    return f"{Decimal(amount).scaleb(-digits):.{digits}f}"


def parse_amount(raw: str, currency: str) -> int:
    """An amount as people type it (``"1,250.50"``) in minor units.

    Raises
    ------
    ValueError
        Not a number, or finer than the currency's minor unit.
    """
    try:
        amount = Decimal(raw.strip().replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"{raw!r} is not an amount, e.g. 1.50") from None
    minor = amount.scaleb(minor_digits(currency))
    if not minor.is_finite() or minor != minor.to_integral_value():
        raise ValueError(f"{currency.upper()} has no amounts finer than that")
    return int(minor)


def when(value: datetime | str | None) -> str:
    """A time as ``2026-11-26 12:40 UTC`` (API documents carry ISO 8601 strings)."""
    if value is None or value == "":
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname() or ''}".rstrip()


def clock(seconds: float | None) -> str:
    """An offset into a content as ``m:ss.s``."""
    if seconds is None:
        return "—"
    minutes, rest = divmod(float(seconds), 60)
    return f"{int(minutes)}:{rest:04.1f}"


SECURITY_HEADERS = {
    # Only this site's own files; style attributes carry the bars' widths; never framed.
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""Sent with every page: they show an organisation's figures and hold its CSRF token."""

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(money=money, major_units=major_units, when=when, clock=clock)
templates.env.globals.update(prefix=PREFIX)


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    *,
    status_code: int = 200,
) -> Response:
    """The page ``name`` with ``context`` and, when signed in, the visitor and CSRF token."""
    full = {"visitor": getattr(request.state, "visitor", None), **context}
    return templates.TemplateResponse(
        request, name, full, status_code=status_code, headers=SECURITY_HEADERS
    )


def sign_in_redirect(request: Request, reason: str = "") -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = f"next={quote(target)}" + (f"&reason={quote(reason)}" if reason else "")
    return RedirectResponse(f"{PREFIX}/sign-in?{query}", status_code=303)


def error_page(request: Request, status: int, code: str, detail: str) -> Response:
    return render(
        request,
        "error.html",
        {"status": status, "code": code, "detail": detail},
        status_code=status,
    )


class PageRoute(APIRoute):
    """A dashboard route: problems become error pages, a missing session the sign-in page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired as missing:
                return sign_in_redirect(request, missing.reason)
            except Problem as problem:
                if problem.status == 401:
                    return sign_in_redirect(request, problem.detail)
                return error_page(request, problem.status, problem.code, problem.detail)
            except RequestValidationError as invalid:
                first = invalid.errors()[0] if invalid.errors() else {"loc": (), "msg": "invalid"}
                where = ".".join(str(part) for part in first["loc"])
                return error_page(request, 400, "bad_request", f"{where}: {first['msg']}")

        return page
