"""The campaign managers' dashboard: server-rendered pages under ``/dashboard``.

The pages are another face of the JSON API, not a second implementation: each
page calls the same route functions (:mod:`api.routers`) and domain functions
(:mod:`acr`) with the signed-in key's :class:`~acr.auth.Principal`, so tenancy,
validation and state changes are exactly the API's. Only the presentation is
here: forms in, HTML out, Jinja2 templates, inline SVG charts and a few lines of
JavaScript that the pages do not need in order to work.

* :mod:`api.dashboard.session` — the signed session cookie, CSRF, the signed-in key;
* :mod:`api.dashboard.signin` — sign in and out;
* :mod:`api.dashboard.campaigns` — the three lists, a campaign's page and its actions;
* :mod:`api.dashboard.campaign_forms` — create and edit forms;
* :mod:`api.dashboard.reports` — a campaign's report, charts and CSV;
* :mod:`api.dashboard.library` — the content library;
* :mod:`api.dashboard.payouts` — connected accounts, balances and payouts.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from api.dashboard import campaign_forms, campaigns, library, payouts, reports, signin
from api.dashboard.pages import PREFIX, STATIC_DIR, PageRoute

router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=PageRoute)
# The forms first: /campaigns/new is not a campaign id.
for _pages in (signin, campaign_forms, reports, campaigns, library, payouts):
    router.include_router(_pages.router)


@router.get("")
def home() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/campaigns", status_code=303)


def install(app: FastAPI) -> None:
    """Serve the dashboard's pages and its static files (CSS, JavaScript) from ``app``."""
    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")


__all__ = ["install", "router"]
