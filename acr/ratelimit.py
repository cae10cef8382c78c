"""Token-bucket rate limits, kept in-process or shared between servers through Redis.

A bucket holds up to ``limit`` tokens and refills at ``limit / period_s`` tokens
a second; a request takes ``cost`` tokens or is refused. A caller may therefore
burst up to ``limit`` requests at once, then goes at the refill rate.

:class:`InProcessRateLimiter` keeps the buckets in this process's memory.
:class:`RedisRateLimiter` keeps them in Redis, updated by one Lua script so that
any number of server processes (and hosts) take from one budget per key. When
Redis fails it falls back to an in-process bucket for a while (see its docstring).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from acr.settings import Settings

log = logging.getLogger("acr.ratelimit")

Clock = Callable[[], float]


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one :meth:`RateLimiter.hit`.

    Attributes
    ----------
    allowed : bool
        Whether the request may go ahead (its cost was taken from the bucket).
    remaining : int
        Whole tokens left in the bucket after this hit.
    retry_after_s : float
        When refused, seconds until the bucket holds enough tokens; 0 when allowed.
    limit : int
        The bucket's capacity (requests per period).
    """

    allowed: bool
    remaining: int
    retry_after_s: float
    limit: int


class RateLimiter(ABC):
    """A token bucket per key: ``limit`` tokens, refilled evenly over ``period_s``.

    Parameters
    ----------
    limit : int
        Bucket capacity, and tokens added per ``period_s``.
    period_s : float
        Seconds to refill an empty bucket.
    """

    waits: bool = False
    """Whether :meth:`hit` may wait for I/O (a network store): async callers then run it
    in a worker thread, and call it inline otherwise."""

    def __init__(self, limit: int, period_s: float = 60.0) -> None:
        if limit <= 0 or period_s <= 0:
            raise ValueError("limit and period_s must be positive")
        self.limit = limit
        self.period_s = period_s
        self.rate = limit / period_s
        """Tokens added per second."""

    def _check_cost(self, cost: float) -> None:
        # A cost above the capacity could never be paid: a caller bug, not a refusal.
        if not 0 <= cost <= self.limit:
            raise ValueError(f"cost must be between 0 and the limit {self.limit}, not {cost}")

    @abstractmethod
    def hit(self, key: str, cost: float = 1) -> RateDecision:
        """Take ``cost`` tokens from the bucket of ``key`` if it holds that many.

        Parameters
        ----------
        key : str
            Whose budget: e.g. an API key id.
        cost : float
            Tokens this request takes (0 asks without taking).

        Returns
        -------
        RateDecision
        """

    def healthy(self) -> bool:
        """Whether the limiter's backing store is reachable (always, in-process)."""
        return True

    def close(self) -> None:  # noqa: B027 - most limiters hold nothing to release
        """Release connections; the limiter is not used afterwards."""


def _decide(tokens: float, cost: float, rate: float, limit: int) -> tuple[float, RateDecision]:
    """Take ``cost`` from ``tokens`` (already refilled): the new level and the decision."""
    if tokens >= cost:
        tokens -= cost
        return tokens, RateDecision(True, math.floor(tokens), 0.0, limit)
    return tokens, RateDecision(False, math.floor(tokens), (cost - tokens) / rate, limit)


class InProcessRateLimiter(RateLimiter):
    """Buckets in this process's memory, safe to share between threads.

    One lock guards all buckets: a hit is a few arithmetic operations, far
    cheaper than the request it guards, so finer locking would buy nothing.
    Buckets idle long enough to be full again are forgotten, since a full
    bucket and no bucket mean the same; memory stays bounded by the keys active
    within one period.

    Parameters
    ----------
    limit, period_s
        See :class:`RateLimiter`.
    clock : callable, optional
        Monotonic seconds; tests pass a fake one.
    """

    _PRUNE_EVERY = 1024
    """Hits between sweeps for idle buckets."""

    def __init__(
        self, limit: int, period_s: float = 60.0, *, clock: Clock = time.monotonic
    ) -> None:
        super().__init__(limit, period_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        """key -> (tokens, when they were counted)."""
        self._hits = 0

    def hit(self, key: str, cost: float = 1) -> RateDecision:
        self._check_cost(cost)
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(key, (float(self.limit), now))
            tokens = min(float(self.limit), tokens + max(0.0, now - last) * self.rate)
            tokens, decision = _decide(tokens, cost, self.rate, self.limit)
            self._buckets[key] = (tokens, now)
            self._hits += 1
            if self._hits % self._PRUNE_EVERY == 0:
                self._prune(now)
            return decision

    def _prune(self, now: float) -> None:
        full = [
            key
            for key, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.rate >= self.limit
        ]
        for key in full:
            del self._buckets[key]


# One atomic step per hit: refill from the elapsed time, take the cost if it is there,
# store the new level, and let the key expire once the bucket would be full again (a
# missing key reads as a full bucket, so expiry loses nothing and Redis keeps only the
# keys in use). Time is Redis's own clock, so hosts with skewed clocks agree; Redis 5+
# replicates a script's effects, which allows TIME before writes. Numbers go back as
# strings because Redis truncates Lua numbers to integers.
_HIT_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil or last == nil then
  tokens = capacity
  last = now
end
tokens = math.min(capacity, tokens + math.max(0, now - last) * rate)
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return {allowed, tostring(tokens), tostring(retry)}
"""


class RedisRateLimiter(RateLimiter):
    """Buckets in Redis, shared by every process that uses the same Redis and prefix.

    When Redis fails (down, timing out, refusing the script) the limiter does not
    fail the request: it logs once and falls back to an in-process bucket for
    ``retry_s`` seconds before trying Redis again. Falling back rather than
    letting everything through keeps each process's matcher, the expensive part,
    protected during an outage (the effective budget becomes one per process
    instead of one shared); and skipping Redis for a while spares every request
    the connection timeout while it is down.

    Parameters
    ----------
    client : redis.Redis
        Give it short socket timeouts: a hit waits for Redis.
    limit, period_s
        See :class:`RateLimiter`.
    prefix : str
        Prepended to every key, so limiters (and tests) do not share buckets.
    retry_s : float
        How long to stay on the in-process fallback after a Redis error.
    """

    waits = True

    def __init__(
        self,
        client: redis.Redis,
        limit: int,
        period_s: float = 60.0,
        *,
        prefix: str = "acr:ratelimit:",
        retry_s: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(limit, period_s)
        self.client = client
        self.prefix = prefix
        self.retry_s = retry_s
        self._clock = clock
        self._script = client.register_script(_HIT_SCRIPT)
        self._fallback = InProcessRateLimiter(limit, period_s, clock=clock)
        self._lock = threading.Lock()
        self._down_until: float | None = None
        """While set, Redis is skipped until this clock time."""

    def hit(self, key: str, cost: float = 1) -> RateDecision:
        self._check_cost(cost)
        if self._use_fallback():
            return self._fallback.hit(key, cost)
        try:
            reply: Any = self._script(keys=[self.prefix + key], args=[self.limit, self.rate, cost])
            allowed, tokens, retry = int(reply[0]), float(reply[1]), float(reply[2])
        except (redis.RedisError, OSError, IndexError, TypeError, ValueError) as error:
            self._went_down(error)
            return self._fallback.hit(key, cost)
        self._came_back()
        return RateDecision(bool(allowed), math.floor(tokens), retry, self.limit)

    def _use_fallback(self) -> bool:
        with self._lock:
            return self._down_until is not None and self._clock() < self._down_until

    def _went_down(self, error: Exception) -> None:
        with self._lock:
            first = self._down_until is None
            self._down_until = self._clock() + self.retry_s
        if first:  # one line per outage, not one per request
            log.warning(
                "rate limits fall back to this process: redis failed (%s: %s)",
                type(error).__name__,
                error,
            )

    def _came_back(self) -> None:
        with self._lock:
            if self._down_until is None:
                return
            self._down_until = None
        log.warning("rate limits are shared through redis again")

    def healthy(self) -> bool:
        try:
            return bool(self.client.ping())
        except (redis.RedisError, OSError):
            return False

    def close(self) -> None:
        self.client.close()


REDIS_TIMEOUT_S = 0.25
"""Socket timeouts for the limiter's Redis: a slow Redis must not hold up matching."""


def redis_client(url: str) -> redis.Redis:
    """A client for the limiter: short timeouts and no retries, since a request waits for
    it and the limiter falls back on the first failure (redis-py may otherwise retry
    with backoff for seconds)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


def build_rate_limiter(settings: Settings, *, period_s: float = 60.0) -> RateLimiter:
    """The limiter for ``settings``: shared through Redis when ``redis_url`` is set.

    ``settings.rate_limit_per_minute`` is both the burst and the refill per minute.
    """
    limit = settings.rate_limit_per_minute
    if not settings.redis_url:
        return InProcessRateLimiter(limit, period_s)
    return RedisRateLimiter(redis_client(settings.redis_url), limit, period_s)
