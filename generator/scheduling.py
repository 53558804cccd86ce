"""The RQ scheduler after a crash: take over a dead scheduler's lock, and move jobs that
are overdue because no scheduler ran.

RQ 3.0 runs one scheduler per queue across all workers: a worker started with
`--with-scheduler` tries `rq:scheduler-lock:<queue>` (a key holding the scheduler's
name, 61 s TTL, refreshed every second by its heartbeat) once at start, and then only in
its maintenance tasks, every 10 minutes. A worker SIGKILLed with its scheduler leaves
the lock behind; restarted within the TTL, its successor finds the lock taken and no
scheduler runs for 10 minutes: every delayed retry stalls (issue 13).

Here:
- `release_stale_locks` frees a lock whose holder is dead: a scheduler on this host whose
  process is gone (or whose pid now belongs to a process started after the holder's last
  heartbeat), a scheduler anywhere whose heartbeat is older than SCHEDULER_STALE_SECONDS,
  or a lock whose scheduler never registered. StepWorker calls it before RQ takes the
  locks, and its watchdog (every SCHEDULER_CHECK_SECONDS) calls it and starts a
  scheduler when it has none, so a lock freed later (another host's scheduler died) is
  taken within seconds too.
- `enqueue_overdue` moves jobs still in a ScheduledJobRegistry more than `margin`
  seconds after their time to their queue, as the scheduler would: the reconciler's
  backstop when no scheduler runs at all. A job moved twice is harmless (a step's job
  runs once; a duplicate finds the step moved on and does nothing).
"""

import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job
from rq.queue import Queue
from rq.registry import ScheduledJobRegistry
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, SCHEDULER_LOCKING_KEY_TEMPLATE
from rq.scripts import release_lock
from rq.utils import utcparse

log = logging.getLogger("steadyshot.scheduling")

# The lock's TTL as RQ sets it (interval + 60): a lock younger than this much of it may
# belong to a scheduler that forked but has not registered yet.
_LOCK_TTL = 61
_REGISTER_GRACE = 15


def _process_started_at(pid: int) -> float | None:
    """When process `pid` started (a UNIX time), or None when there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, IndexError, ValueError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0  # alive, start unknown
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def why_stale(connection: Redis, queue_name: str, stale_after: float) -> str | None:
    """Why the scheduler lock of `queue_name` is held by nobody alive, or None when it is
    free or its holder may be alive."""
    holder = connection.get(SCHEDULER_LOCKING_KEY_TEMPLATE % queue_name)
    if holder is None:
        return None
    name = holder.decode()
    data = {
        k.decode(): v.decode()
        for k, v in connection.hgetall(SCHEDULER_KEY_TEMPLATE % name).items()
    }
    if not data:
        ttl = connection.ttl(SCHEDULER_LOCKING_KEY_TEMPLATE % queue_name)
        if ttl is not None and 0 <= ttl < _LOCK_TTL - _REGISTER_GRACE:
            return f"its scheduler {name} never registered"
        return None
    beat = data.get("last_heartbeat")
    last = utcparse(beat).replace(tzinfo=UTC).timestamp() if beat else None
    if data.get("hostname") == socket.gethostname() and data.get("pid", "0") != "0":
        pid = int(data["pid"])
        started = _process_started_at(pid)
        if started is None:
            return f"its scheduler {name} (pid {pid} on this host) is gone"
        if last is not None and started > last + 1:
            return f"its scheduler {name}'s pid {pid} now belongs to a newer process"
    if last is not None and time.time() - last > stale_after:
        return f"its scheduler {name} last beat {time.time() - last:.0f} s ago"
    return None


def release_stale_locks(connection: Redis, queue_names, stale_after: float) -> list[str]:
    """Release the scheduler locks of `queue_names` whose holder is dead (see why_stale);
    the queues released. The release is filtered on the holder's name, so a lock another
    scheduler took in between is left alone."""
    released = []
    for name in queue_names:
        reason = why_stale(connection, name, stale_after)
        if reason is None:
            continue
        key = SCHEDULER_LOCKING_KEY_TEMPLATE % name
        holder = connection.get(key)
        if holder is not None and release_lock(connection, key, holder.decode()):
            log.warning("scheduler lock of queue %s released: %s", name, reason)
            released.append(name)
    return released


def enqueue_overdue(connection: Redis, queue_names, margin: float, now: datetime) -> int:
    """Move jobs due more than `margin` seconds before `now` from each queue's
    ScheduledJobRegistry to the queue; how many were moved. Each job is taken out of
    the registry first (ZREM), so two reconcilers never move the same job."""
    moved = 0
    cutoff = int(now.timestamp() - margin)
    for name in queue_names:
        registry = ScheduledJobRegistry(name, connection=connection)
        queue = Queue(name, connection=connection)
        for job_id in registry.get_jobs_to_schedule(cutoff):
            if not connection.zrem(registry.key, job_id):
                continue  # a scheduler (or another reconciler) took it
            job = Job.fetch_many([job_id], connection=connection)[0]
            if job is None:
                continue
            if job.has_rate_limit:
                queue._enqueue_rate_limited_job(job, at_front=job.should_enqueue_at_front())
            else:
                queue._enqueue_job(job, at_front=job.should_enqueue_at_front())
            moved += 1
    if moved:
        log.warning("%s overdue scheduled jobs moved to their queues: no scheduler ran", moved)
    return moved


def prepare(worker) -> None:
    """Before RQ's worker takes the scheduler locks: release those of dead schedulers."""
    release_stale_locks(worker.connection, worker.queue_names(), settings.SCHEDULER_STALE_SECONDS)


def watch(worker) -> threading.Thread:
    """A daemon thread in the worker process: every SCHEDULER_CHECK_SECONDS, when this
    worker runs no scheduler, release the stale locks and start one if it gets a lock
    (RQ alone would try again only after 10 minutes)."""
    interval = settings.SCHEDULER_CHECK_SECONDS

    def stopping() -> bool:
        # An idle worker asked to stop raises StopRequested and never sets
        # _stop_requested; a scheduler started then would keep the worker from exiting.
        return worker._stop_requested or worker._shutdown_requested_date is not None

    def loop():
        while not stopping():
            time.sleep(interval)
            scheduler = worker.scheduler
            if stopping() or scheduler is None:
                continue
            if scheduler._process is not None and scheduler._process.is_alive():
                continue
            try:
                prepare(worker)
                if not stopping() and scheduler.acquire_locks(auto_start=True):
                    log.warning("worker %s runs the scheduler now", worker.name)
            except RedisError:
                log.exception("scheduler watchdog: Redis unavailable; trying again")

    thread = threading.Thread(target=loop, name="scheduler-watchdog", daemon=True)
    thread.start()
    return thread
