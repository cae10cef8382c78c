"""The FastAPI application factory."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from acr import __version__
from acr.campaigns import apply_schedules
from acr.library import ContentIndexer, sync_from_index
from acr.payouts.scheduler import payouts_task
from acr.periodic import PeriodicTask
from acr.settings import Settings
from acr.threads import one_compute_thread
from acr.webhooks.delivery import WebhookWorker
from api import dashboard, limits, observability, problems
from api.routers import (
    accounts,
    campaigns,
    content,
    events,
    health,
    keys,
    match,
    payouts,
    stream,
    stripe_webhooks,
    webhooks,
)
from api.services import Services, build_services

DESCRIPTION = """\
Automatic content recognition for campaigns: viewer apps send what they hear and
get back what it is, where in it they are, and the campaign content attached to
that moment. Campaign managers run campaigns on the content library.

Authenticate with an API key: `Authorization: Bearer acr_…`. Errors are
`application/problem+json` (RFC 9457).
"""


WEBHOOK_POLL_S = 1.0
"""How often new events are fanned out to webhook endpoints and due deliveries sent."""


def create_app(services: Services | None = None, *, background: bool = True) -> FastAPI:
    """The service's ASGI app.

    Parameters
    ----------
    services : Services, optional
        Built from the environment's :class:`~acr.settings.Settings` if not given.
    background : bool
        Run the indexing worker and the schedule in this process.
    """
    one_compute_thread()
    owned = services is None
    services = services or build_services(Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = start_background(app, services) if background else None
        try:
            yield
        finally:
            if stop is not None:
                stop()
            if owned:
                services.close()

    app = FastAPI(
        title="ACR campaign service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.services = services
    problems.install(app)
    for router in (
        health.router,
        match.router,
        stream.router,
        content.router,
        campaigns.router,
        accounts.router,
        payouts.router,
        events.router,
        webhooks.router,
        stripe_webhooks.router,
        keys.router,
    ):
        app.include_router(router)
    dashboard.install(app)
    limits.install(app, services.settings)
    observability.install(app)  # last: the outermost middleware sees every request
    return app


def start_background(app: FastAPI, services: Services) -> Callable[[], None]:
    """Start the service's background work; return what stops it.

    Every server process runs every task: only the one holding the index's writer
    lock indexes uploads; campaign schedules, revenue accrual, payouts and webhook
    deliveries are each safe to run in several processes at once (row locks,
    unique constraints, claimed attempts).
    """
    settings = services.settings
    # Opening the index loads (on a new machine: compiles) the core's kernels and
    # faults its tables into memory, seconds that the first viewer would otherwise wait.
    threading.Thread(target=services.index.ready, name="index-warm-up", daemon=True).start()
    sync_from_index(services.sessions, settings.index_path)
    indexer = ContentIndexer(services.sessions, settings)
    hooks = WebhookWorker(services.sessions)
    tasks = [
        PeriodicTask("indexer", indexer.tick, settings.indexer_poll_s).start(),
        PeriodicTask(
            "schedule", lambda: apply_schedules(services.sessions), settings.scheduler_interval_s
        ).start(),
        payouts_task(services).start(),
        PeriodicTask("webhooks", hooks.tick, WEBHOOK_POLL_S).start(),
    ]
    app.state.wake_indexer = tasks[0].wake

    def stop() -> None:
        for task in tasks:
            task.stop()
        indexer.close()
        hooks.close()

    return stop
