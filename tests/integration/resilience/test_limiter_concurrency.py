"""The limiter under many concurrent callers on real Redis, as workers on several
machines would call it."""

import threading
import time

import pytest

from generator.resilience.clock import SystemClock
from generator.resilience.limiter import Limiter, LimiterConfig, Quotas
from generator.resilience.stores import RedisStore
from tests.unit.resilience.test_limiter import PRO


def _hammer(limiter, quotas, threads, seconds):
    grants: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def work():
        while time.monotonic() < stop:
            if limiter.reserve(PRO, quotas)[0]:
                with lock:
                    grants.append(time.time())

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sorted(grants)


@pytest.mark.slow
def test_many_workers_together_never_exceed_the_upstream_quota(redis_conn):
    """16 threads, each with its own connection, as workers on several machines would:
    an upstream token bucket of the full quota would never have answered 429."""
    minute = 1.0  # a scaled minute
    quota = 60
    config = LimiterConfig(safety=0.85, minute_s=minute)
    limiter = Limiter(RedisStore(redis_conn), SystemClock(), config)
    grants = _hammer(limiter, Quotas(rpm=quota, rpd=10_000), threads=16, seconds=2.5)
    # Replay the grants against the upstream's bucket: capacity `quota`, refill quota/min.
    tokens, last = float(quota), grants[0]
    for t in grants:
        tokens = min(quota, tokens + (t - last) * quota / minute)
        last = t
        assert tokens >= 1, "the upstream would have answered 429"
        tokens -= 1
    effective = 51
    elapsed = grants[-1] - grants[0]
    assert len(grants) <= effective + effective * elapsed / minute + 1
    assert len(grants) >= effective  # and it does not starve the workers either


@pytest.mark.slow
def test_many_workers_take_exactly_the_daily_quota(redis_conn):
    limiter = Limiter(RedisStore(redis_conn), SystemClock(), LimiterConfig(safety=1.0))
    grants = _hammer(limiter, Quotas(rpd=25), threads=12, seconds=0.5)
    assert len(grants) == 25
