"""The limiter under many concurrent callers on real Redis, as workers on several
machines would call it."""

import threading
import time

import pytest

from generator.resilience.clock import SystemClock
from generator.resilience.limiter import Limiter, LimiterConfig, Quotas
from generator.resilience.stores import RedisStore
from tests.unit.resilience.test_limiter import PRO, replay


class StampingClock(SystemClock):
    """The system clock, remembering per thread the time it last gave the limiter: the
    time a grant was logged at, whatever the thread's scheduling did after."""

    def __init__(self):
        self.local = threading.local()

    def now(self) -> float:
        self.local.last = super().now()
        return self.local.last


def _hammer(limiter, quotas, threads, seconds):
    grants: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def work():
        while time.monotonic() < stop:
            if limiter.take(PRO, quotas)[0]:
                with lock:
                    grants.append(limiter.clock.local.last)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sorted(grants)


@pytest.mark.slow
def test_it_many_workers_together_never_exceed_the_upstream_quota(redis_conn):
    """16 threads, each with its own connection, as workers on several machines would:
    an upstream token bucket of the full quota would never have answered 429."""
    minute = 1.0  # a scaled minute
    quota = 60
    config = LimiterConfig(safety=0.85, minute_s=minute, margin_s=0.01)
    limiter = Limiter(RedisStore(redis_conn), StampingClock(), config)
    grants = _hammer(limiter, Quotas(rpm=quota, rpd=10_000), threads=16, seconds=2.5)
    assert replay(grants, quota, minute) == dict.fromkeys(
        ("token bucket", "fixed minute", "sliding minute"), True
    )
    elapsed = grants[-1] - grants[0]
    # 60 calls in any window of minute / 0.85 + margin: 85 % of the quota, no more.
    assert len(grants) <= quota * (1 + elapsed // config.window_s)
    assert len(grants) >= quota  # and it does not starve the workers either


@pytest.mark.slow
def test_it_many_workers_take_exactly_the_daily_quota(redis_conn):
    limiter = Limiter(RedisStore(redis_conn), StampingClock(), LimiterConfig(safety=1.0))
    grants = _hammer(limiter, Quotas(rpd=25), threads=12, seconds=0.5)
    assert len(grants) == 25


@pytest.mark.slow
def test_it_many_workers_book_future_slots_that_the_upstream_accepts(redis_conn):
    """Waiting requests on 16 connections book slots far into the future at once: each
    gets its own, first come first served, and calls made at those times would never
    have been answered 429."""
    minute, quota = 1.0, 60
    config = LimiterConfig(safety=0.85, minute_s=minute, margin_s=0.01)
    limiter = Limiter(RedisStore(redis_conn), SystemClock(), config)
    slots: list[float] = []
    lock = threading.Lock()

    def work(n):
        for i in range(20):
            holder = f"w{n}-{i}"
            booked, slot = limiter.book(PRO, Quotas(rpm=quota), holder, time.time() + 3600)
            assert booked
            with lock:
                slots.append(slot)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort()
    assert len(slots) == 320
    assert replay(slots, quota, minute) == dict.fromkeys(
        ("token bucket", "fixed minute", "sliding minute"), True
    )
    # Nothing wasted either: 60 slots in each window of minute / 0.85 + margin.
    assert slots[-1] - slots[0] == pytest.approx((320 // quota) * config.window_s, rel=0.05)
