"""Django's Redis cache with one connection pool per process (settings.CACHES's
"throttle", where the throttles count: accounts/throttle.py).

Django keeps a cache object per thread and per context (`caches` is an asgiref `Local`
that is not thread-critical), and each of its Redis cache objects builds its own
connection pool. The web server runs every synchronous view in a context copied afresh
for the request (a2wsgi, config/asgi.py), so each request got a new cache object, a new
pool and a new Redis connection, with its handshake: every API call paid that, because
the bad-token throttle looks at its counter first, and the abandoned connections stayed
open until the garbage collector found them (docs/benchmarks.md, "Cost per image": 492
new connections for 500 submissions). Here every cache object of the same servers and
options shares one client and so one thread-safe pool, as the queue's Redis client is
shared (generator/queue.py). redis-py's pools notice a fork and start afresh in the
child.
"""

import threading

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property

_clients: dict[tuple, RedisCacheClient] = {}
_lock = threading.Lock()


class SharedRedisCache(RedisCache):
    @cached_property
    def _cache(self) -> RedisCacheClient:
        key = (tuple(self._servers), repr(sorted(self._options.items())))
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = self._class(self._servers, **self._options)
        return client
