"""Per-key rate limits for routes: a dependency that spends a token or answers 429.

Use :data:`RateLimitedViewerAppDep` in place of ``ViewerAppDep`` on ``POST /v1/match``::

    def match(principal: RateLimitedViewerAppDep, ...) -> MatchResponse: ...

Every answer then carries ``RateLimit-Limit`` and ``RateLimit-Remaining`` (when the
route returns data, not a ``Response`` of its own, which FastAPI would not add them
to); a refusal is the problem ``rate_limited`` with ``Retry-After`` in whole seconds.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Response
from fastapi.concurrency import run_in_threadpool

from acr.auth import Principal
from acr.ratelimit import RateDecision, RateLimiter
from api.deps import ServicesDep, ViewerAppDep
from api.problems import Problem


def rate_limit_headers(decision: RateDecision) -> dict[str, str]:
    """``RateLimit-Limit`` and ``RateLimit-Remaining`` (the IETF draft's header pair)."""
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(max(0, decision.remaining)),
    }


def enforce(
    limiter: RateLimiter, key: str, response: Response | None = None, cost: float = 1
) -> RateDecision:
    """Spend ``cost`` from the budget of ``key``, or raise the 429 problem.

    Parameters
    ----------
    limiter : RateLimiter
    key : str
        Whose budget, e.g. ``f"match:{principal.key_id}"``.
    response : Response, optional
        FastAPI's response of the route, to carry the ``RateLimit-*`` headers.
    cost : float
        Tokens this request takes.

    Raises
    ------
    Problem
        429 ``rate_limited``, with ``Retry-After`` (seconds, rounded up).
    """
    decision = limiter.hit(key, cost)
    headers = rate_limit_headers(decision)
    if not decision.allowed:
        retry_after = max(1, math.ceil(decision.retry_after_s))
        raise Problem(
            429,
            "rate_limited",
            f"the rate limit of {decision.limit} requests per {limiter.period_s:g} s "
            f"is used up; retry in {retry_after} s",
            headers={**headers, "Retry-After": str(retry_after)},
        )
    if response is not None:
        response.headers.update(headers)
    return decision


async def limit_viewer_app(
    principal: ViewerAppDep, services: ServicesDep, response: Response
) -> Principal:
    """A viewer-app (or admin) key with budget left for one more match."""
    limiter = services.rate_limiter
    key = f"match:{principal.key_id}"
    if limiter.waits:
        await run_in_threadpool(enforce, limiter, key, response)
    else:  # a few arithmetic operations: cheaper than a hop to a worker thread
        enforce(limiter, key, response)
    return principal


RateLimitedViewerAppDep = Annotated[Principal, Depends(limit_viewer_app)]
"""``ViewerAppDep`` that also spends one match from the key's rate-limit budget."""
