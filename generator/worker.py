"""The RQ worker class of every worker (settings.RQ["WORKER_CLASS"]): RQ's non-forking
SimpleWorker, with the product's libraries loaded once, and a warm shutdown that ends in
bounded time and hands the current step back instead of leaving it to the reconciler.

A step no longer waits on the upstream (the callers make the calls: generator/caller),
so it takes milliseconds, and RQ's default of forking a work horse for every job (~100
ms: re-importing httpcore, Pillow's plugins, the jobs module, a new TLS context) cost
more than the step itself. Running the job in the worker process keeps what forking
gave: a step that kills its process (SIGKILL, the OOM killer) leaves the request
`running` under a lease that nobody renews, and the reconciler takes it back (docs/jobs.md);
a step that hangs is ended by RQ's job timeout (SIGALRM, in this process).

On the first SIGTERM (or SIGINT) the worker takes no new job and lets the current step
finish; if it has not within WORKER_STOP_GRACE_SECONDS, or at once on a second signal,
the step is handed back to the queue (a filtered hand_over on this worker's claim: a
step that has already moved on is left alone) and the worker exits. Another worker
takes the request at once; nothing is lost, nothing counts as a failure.

RQ's own bookkeeping costs Redis round trips on every job (a step is a few ms of work):
the worker's heartbeat, three commands, is sent alone before and after every dequeue
and after every job. Here it goes in one round trip, and at most once a second (its
expiry is minutes away); a state the worker already wrote is not written again, the
suspension flag (`rq suspend`) is read once a second, and the job's heartbeat for a
success or failure callback is skipped for jobs that have none (docs/benchmarks.md,
"Cost per image").
"""

import logging
import os
import signal
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections
from rq import SimpleWorker
from rq.utils import now

# Loaded before the first job, once per worker: the step's modules and what they import
# (Pillow, httpx, the resilience core).
from generator import connections, jobs, scheduling
from generator.models import Expect, GenerationRequest
from generator.queue import JOB

log = logging.getLogger("steadyshot.worker")

HANDED_BACK = "Handed back by a worker that was stopping (a restart); queued again."
# The worker's own heartbeat (the expiry of its key in Redis, minutes) and the check of
# `rq suspend`: at most this often.
BOOKKEEPING_EVERY_S = 1.0


class StepWorker(SimpleWorker):
    _grace_timer: threading.Timer | None = None
    _grace_over = False

    def execute_job(self, job, queue):
        # One process runs job after job: a database connection the server closed
        # meanwhile is replaced, as Django does around each web request (checked at most
        # once a second: generator/connections.py).
        connections.refresh()
        try:
            super().execute_job(job, queue)
        finally:
            connections.refresh()

    def register_birth(self):
        super().register_birth()
        self.retire_predecessors()

    def retire_predecessors(self) -> None:
        """Register the death of the dead workers this one replaces. `make run` restarts
        a worker only after it exited and names the new one `base+N` (config/up.py):
        `base` and `base+1` … `base+N-1` are dead, but RQ would count them as workers
        until their keys expire, minutes later (on the monitoring page, a worker too
        many)."""
        base, plus, restarts = self.name.partition("+")
        if not plus or not restarts.isdigit():
            return
        for name in [base] + [f"{base}+{n}" for n in range(1, int(restarts))]:
            dead = self.find_by_key(self.redis_worker_namespace_prefix + name, self.connection)
            if dead is not None:
                dead.register_death()
                log.info("worker %s: registered the death of %s, its predecessor", self.name, name)

    # --- RQ's bookkeeping, in fewer round trips --------------------------------------

    _last_beat: tuple[int, float] | None = None  # (expiry sent, when)
    _sent_state: str | None = None
    _not_suspended_at = float("-inf")

    def heartbeat(self, timeout=None, pipeline=None):
        timeout = timeout or self.worker_ttl + 60
        at = time.monotonic()
        if pipeline is not None:  # part of RQ's own pipeline: no round trip of its own
            super().heartbeat(timeout, pipeline=pipeline)
        elif (
            self._last_beat is None
            or self._last_beat[0] != timeout
            or at - self._last_beat[1] >= BOOKKEEPING_EVERY_S
        ):
            with self.connection.pipeline(transaction=False) as own:
                super().heartbeat(timeout, pipeline=own)
                own.execute()
        else:
            return
        self._last_beat = (timeout, at)

    def set_state(self, state, pipeline=None):
        if pipeline is None and state == self._sent_state:
            return
        super().set_state(state, pipeline=pipeline)
        self._sent_state = state

    def check_for_suspension(self, burst):
        if time.monotonic() - self._not_suspended_at < BOOKKEEPING_EVERY_S:
            return
        super().check_for_suspension(burst)
        self._not_suspended_at = time.monotonic()

    def handle_execution_ended(self, job, queue, heartbeat_ttl):
        if job.success_callback is None and job.failure_callback is None:
            job.ended_at = now()  # RQ's job heartbeat covers a callback; there is none
            return
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def _start_scheduler(self, *args, **kwargs):
        # A restart after a crash: free the dead scheduler's lock first, and keep looking
        # (generator/scheduling.py).
        scheduling.prepare(self)
        super()._start_scheduler(*args, **kwargs)
        scheduling.watch(self)

    def handle_warm_shutdown_request(self):
        super().handle_warm_shutdown_request()
        if self.get_current_job() is not None and self._grace_timer is None:
            grace = settings.WORKER_STOP_GRACE_SECONDS
            log.info("stopping: the current step has %s s to finish", grace)
            self._grace_timer = threading.Timer(grace, self._end_grace)
            self._grace_timer.daemon = True
            self._grace_timer.start()

    def _end_grace(self):
        self._grace_over = True
        # The hand-back runs in the main thread, between two lines of the step.
        os.kill(os.getpid(), signal.SIGTERM)

    def request_force_stop(self, signum, frame):
        # RQ ignores a second signal within a second of the first (a pool and a terminal
        # may both send one); only a real second signal, or the grace's end, stops the step.
        if not self._grace_over and now() - self._shutdown_requested_date < timedelta(seconds=1):
            return
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        self.hand_back()
        raise SystemExit()

    def hand_back(self) -> bool:
        """Give the current step back to the queue; whether it was handed back (False:
        no step running, or it had already ended or moved on by itself)."""
        job = self.get_current_job()
        if job is None or job.func_name != JOB:
            return False
        request_id, step = job.args[:2]
        close_old_connections()
        request = GenerationRequest.objects.filter(pk=request_id).first()
        handed = request is not None and request.hand_over(
            Expect.held(jobs.worker_name(), step), model=request.current_model, reason=HANDED_BACK
        )
        if handed:
            log.warning("request=%s step=%s handed back: the worker is stopping", request_id, step)
        return handed
