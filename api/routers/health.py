"""Probes for the orchestrator: ``/healthz`` (alive) and ``/readyz`` (can serve). No auth."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text

from api.deps import ServicesDep
from api.problems import Problem, responses
from api.services import Services

router = APIRouter(tags=["ops"])
log = logging.getLogger("acr.api.health")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Check(BaseModel):
    ok: bool
    critical: bool
    """A failing critical check makes the instance not ready; others are only reported."""


class Readiness(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, Check]


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    # Async on purpose: answered on the event loop, it stays up while the worker
    # threads are all busy matching, which is load, not death.
    return Health()


def _database(services: Services) -> bool:
    with services.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return True


def _index(services: Services) -> bool:
    return services.index.ready()


def _redis(request: Request) -> bool:
    limiter = getattr(request.app.state.services, "rate_limiter", None)
    return limiter is None or bool(limiter.healthy())


def _run(name: str, check: Callable[[], bool]) -> bool:
    try:
        return check()
    except Exception:  # a probe reports failures, it does not raise them
        log.warning("readiness check %s failed", name, exc_info=True)
        return False


@router.get(
    "/readyz",
    summary="Readiness: database, index and (if configured) Redis are usable",
    responses=responses(503),
)
def readyz(request: Request, services: ServicesDep) -> Readiness:
    """200 with each check's result, or 503 ``not_ready`` naming the failed checks.

    Redis is checked when ``redis_url`` is set but is not critical: without it
    rate limits fall back to each process, and taking every instance out of the
    load balancer because a shared Redis is down would turn a degraded service
    into an outage. The database and the index are needed to answer at all.
    """
    checks = {
        "database": Check(ok=_run("database", lambda: _database(services)), critical=True),
        "index": Check(ok=_run("index", lambda: _index(services)), critical=True),
    }
    if services.settings.redis_url:
        checks["redis"] = Check(ok=_run("redis", lambda: _redis(request)), critical=False)
    failed = [name for name, check in checks.items() if check.critical and not check.ok]
    if failed:
        raise Problem(
            503,
            "not_ready",
            f"not ready: {', '.join(failed)} unavailable",
            errors=[
                {"loc": ["checks", name], "msg": f"the {name} check failed", "type": "check_failed"}
                for name in failed
            ],
            headers={"Retry-After": "5"},
        )
    degraded = any(not check.ok for check in checks.values())
    return Readiness(status="degraded" if degraded else "ok", checks=checks)
