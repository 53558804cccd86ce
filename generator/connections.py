"""The database connections of the long-lived processes: the RQ workers and the callers.

Django replaces a connection that outlived CONN_MAX_AGE or had an error when a web
request starts or ends (`close_old_connections`); with CONN_HEALTH_CHECKS that also
costs a round trip (`SELECT 1`) before the next query. A worker runs that around every
job and a caller before every piece of database work, which is up to three health
checks for one image where a web request pays one; `refresh()` does it at most once a
second per thread (each thread has its own connection), and always after an error.
"""

import threading
import time

from django.db import close_old_connections, connection

CHECK_EVERY_S = 1.0

_checked = threading.local()


def refresh() -> None:
    """`close_old_connections()`, unless this thread did it less than CHECK_EVERY_S ago
    and its connection has had no error since."""
    now = time.monotonic()
    if connection.errors_occurred or now - getattr(_checked, "at", float("-inf")) >= CHECK_EVERY_S:
        close_old_connections()
        _checked.at = now
