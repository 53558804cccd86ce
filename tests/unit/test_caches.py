"""The throttles' Redis cache keeps one connection pool per process (config/caches.py)."""

import contextvars
from concurrent.futures import ThreadPoolExecutor

from django.core.cache import caches


def _pool_in_a_request():
    """What a view does through the throttle: find its Redis pool (none is connected)."""
    return caches["throttle"]._cache.get_client(write=True).connection_pool


def _as_the_web_server_runs_a_view(executor):
    # a2wsgi runs each synchronous view in a copy of the event loop's context, which has
    # never held a cache object (config/asgi.py): an empty context here.
    return executor.submit(contextvars.Context().run, _pool_in_a_request).result()


def test_it_gives_every_request_of_a_process_the_same_redis_pool():
    with ThreadPoolExecutor(2) as executor:
        pools = [_as_the_web_server_runs_a_view(executor) for _ in range(6)]
    pools.append(contextvars.Context().run(_pool_in_a_request))

    assert all(pool is pools[0] for pool in pools)


def test_it_keeps_caches_with_other_servers_apart(settings):
    settings.CACHES = {
        **settings.CACHES,
        "elsewhere": {**settings.CACHES["throttle"], "LOCATION": "redis://127.0.0.1:9/5"},
    }
    elsewhere = contextvars.Context().run(lambda: caches["elsewhere"]._cache)

    assert elsewhere is not contextvars.Context().run(lambda: caches["throttle"]._cache)
