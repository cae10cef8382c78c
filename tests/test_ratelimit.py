"""Token-bucket rate limits: in-process, and shared through a real Redis."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from acr.ratelimit import (
    InProcessRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    build_rate_limiter,
    redis_client,
)
from acr.settings import Settings

REDIS_URL = "redis://127.0.0.1:6379/15"
"""Database 15 of the local Redis; tests touch only keys under their own prefix."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _hammer(limiter: RateLimiter, key: str, threads: int, hits: int) -> int:
    """Hit ``key`` from ``threads`` threads at once, ``hits`` times each: how many passed."""
    allowed = 0
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def worker() -> None:
        nonlocal allowed
        barrier.wait()
        mine = sum(limiter.hit(key).allowed for _ in range(hits))
        with lock:
            allowed += mine

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return allowed


# -- in-process ----------------------------------------------------------------------------


def test_burst_up_to_the_limit_then_refused() -> None:
    limiter = InProcessRateLimiter(5, 60.0, clock=FakeClock())
    decisions = [limiter.hit("k") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert all(d.limit == 5 for d in decisions)
    assert decisions[0].retry_after_s == 0
    # 5 a minute refill one token every 12 s.
    assert decisions[-1].retry_after_s == pytest.approx(12.0)


def test_refill_is_gradual_and_capped() -> None:
    clock = FakeClock()
    limiter = InProcessRateLimiter(5, 60.0, clock=clock)
    for _ in range(5):
        limiter.hit("k")
    clock.now += 6.0  # half a token
    refused = limiter.hit("k")
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(6.0)
    clock.now += 6.0
    assert limiter.hit("k").allowed
    clock.now += 3600.0  # a long rest fills the bucket, no more
    assert [limiter.hit("k").allowed for _ in range(6)] == [True] * 5 + [False]


def test_keys_and_costs() -> None:
    limiter = InProcessRateLimiter(10, 60.0, clock=FakeClock())
    assert limiter.hit("a", cost=10).allowed
    assert not limiter.hit("a").allowed
    assert limiter.hit("b").remaining == 9  # another key has its own bucket
    peek = limiter.hit("b", cost=0)
    assert peek.allowed and peek.remaining == 9
    with pytest.raises(ValueError):
        limiter.hit("a", cost=11)
    with pytest.raises(ValueError):
        InProcessRateLimiter(0)


def test_idle_buckets_are_forgotten() -> None:
    clock = FakeClock()
    limiter = InProcessRateLimiter(5, 60.0, clock=clock)
    for n in range(limiter._PRUNE_EVERY - 1):
        limiter.hit(f"key-{n}")
    clock.now += 60.0
    limiter.hit("last")  # the sweeping hit
    assert list(limiter._buckets) == ["last"]


def test_concurrent_hits_never_exceed_the_budget() -> None:
    limiter = InProcessRateLimiter(100, 1e9)  # no refill worth a token during the test
    assert _hammer(limiter, "k", threads=8, hits=50) == 100


def test_build_without_redis_is_in_process() -> None:
    settings = Settings(_env_file=None, rate_limit_per_minute=7)  # type: ignore[call-arg]
    limiter = build_rate_limiter(settings)
    assert isinstance(limiter, InProcessRateLimiter)
    assert limiter.limit == 7 and limiter.period_s == 60.0


# -- Redis ---------------------------------------------------------------------------------


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.skip(f"no Redis at {REDIS_URL} ({error})")
    yield client
    client.close()


@pytest.fixture
def make_redis_limiter(
    redis_db: redis.Redis,
) -> Iterator[Callable[..., RedisRateLimiter]]:
    """Factory of limiters under one unique key prefix, whose keys are deleted afterwards."""
    prefix = f"acr-test:{secrets.token_hex(6)}:"

    def make(limit: int, period_s: float = 60.0, **kwargs: object) -> RedisRateLimiter:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        return RedisRateLimiter(client, limit, period_s, prefix=prefix, **kwargs)  # type: ignore[arg-type]

    yield make
    keys = list(redis_db.scan_iter(match=f"{prefix}*"))
    if keys:
        redis_db.delete(*keys)


def test_redis_burst_and_retry_after(make_redis_limiter: Callable[..., RedisRateLimiter]) -> None:
    limiter = make_redis_limiter(5, 50.0)  # a token every 10 s
    decisions = [limiter.hit("k") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert 9.0 < decisions[-1].retry_after_s <= 10.0
    assert limiter.healthy()


def test_redis_refill(make_redis_limiter: Callable[..., RedisRateLimiter]) -> None:
    limiter = make_redis_limiter(10, 1.0)  # a token every 0.1 s
    assert all(limiter.hit("k").allowed for _ in range(10))
    assert not limiter.hit("k").allowed
    time.sleep(0.35)
    assert [limiter.hit("k").allowed for _ in range(2)] == [True, True]


def test_redis_keys_expire_once_the_bucket_would_be_full(
    make_redis_limiter: Callable[..., RedisRateLimiter], redis_db: redis.Redis
) -> None:
    limiter = make_redis_limiter(10, 60.0)
    limiter.hit("k", cost=5)
    ttl_ms = redis_db.pttl(f"{limiter.prefix}k")
    # 5 tokens to refill at 10 a minute: 30 s, plus a second's margin.
    assert 29_000 < ttl_ms <= 31_000


def test_redis_budget_is_shared_between_processes(
    make_redis_limiter: Callable[..., RedisRateLimiter],
) -> None:
    first, second = make_redis_limiter(4, 1e6), make_redis_limiter(4, 1e6)
    assert [limiter.hit("k").allowed for limiter in (first, second, first, second)] == [True] * 4
    assert not first.hit("k").allowed
    assert not second.hit("k").allowed


def test_redis_concurrent_hits_never_exceed_the_budget(
    make_redis_limiter: Callable[..., RedisRateLimiter],
) -> None:
    limiter = make_redis_limiter(100, 1e9)
    assert _hammer(limiter, "k", threads=8, hits=40) == 100


def test_redis_down_falls_back_in_process(caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on port 1: every call fails at once.
    client = redis_client("redis://127.0.0.1:1/0")
    clock = FakeClock()
    limiter = RedisRateLimiter(client, 2, 60.0, retry_s=5.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="acr.ratelimit"):
        decisions = [limiter.hit("k") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]  # the fallback still limits
    assert len([r for r in caplog.records if "fall back" in r.message]) == 1
    assert limiter._down_until == pytest.approx(clock.now + 5.0)
    assert not limiter.healthy()


def test_redis_recovers_after_the_retry_pause(
    make_redis_limiter: Callable[..., RedisRateLimiter], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    limiter = make_redis_limiter(3, 60.0, clock=clock, retry_s=5.0)
    limiter._went_down(redis.ConnectionError("simulated"))
    limiter.hit("k")  # taken from the fallback bucket, not Redis
    assert limiter._fallback._buckets
    clock.now += 5.0
    with caplog.at_level(logging.WARNING, logger="acr.ratelimit"):
        assert limiter.hit("k").remaining == 2  # Redis's bucket is untouched so far
    assert limiter._down_until is None
    assert any("again" in r.message for r in caplog.records)


def test_build_with_redis_url(redis_db: redis.Redis) -> None:
    settings = Settings(_env_file=None, redis_url=REDIS_URL)  # type: ignore[call-arg]
    limiter = build_rate_limiter(settings)
    try:
        assert isinstance(limiter, RedisRateLimiter)
        assert limiter.limit == settings.rate_limit_per_minute
        assert limiter.healthy()
    finally:
        limiter.close()
