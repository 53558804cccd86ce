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
"""

import logging
import os
import signal
import threading
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections
from rq import SimpleWorker
from rq.utils import now

# Loaded before the first job, once per worker: the step's modules and what they import
# (Pillow, httpx, the resilience core).
from generator import jobs, scheduling
from generator.models import Expect, GenerationRequest
from generator.queue import JOB, RECORD

log = logging.getLogger("steadyshot.worker")

HANDED_BACK = "Handed back by a worker that was stopping (a restart); queued again."


class StepWorker(SimpleWorker):
    _grace_timer: threading.Timer | None = None
    _grace_over = False

    def execute_job(self, job, queue):
        # One process runs job after job: a database connection the server closed
        # meanwhile is replaced, as Django does around each web request.
        close_old_connections()
        try:
            super().execute_job(job, queue)
        finally:
            close_old_connections()

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
        if job is None or job.func_name not in (JOB, RECORD):
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
