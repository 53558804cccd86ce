"""The RQ worker class of every worker (settings.RQ["WORKER_CLASS"]): RQ's own, with a
warm shutdown that ends in bounded time and hands the current step back instead of
leaving it to the reconciler.

RQ 3.0 on its own: the first SIGTERM (or SIGINT) is a warm shutdown: take no new job,
wait for the work horse to finish the current one, however long (a step is one upstream
call, 20-40 s and up to the job timeout); a second signal is a cold shutdown: SIGKILL
the horse and exit, so the request stays `running` until its lease expires and the
reconciler takes it back (LEASE_SECONDS plus up to 30 s later, one recovery counted).

Here, after the first signal the horse gets WORKER_STOP_GRACE_SECONDS to finish its
call (most do, and an answer already paid for is not thrown away); then, or at once on a
second signal, the worker hands the request back to the queue (a filtered hand_over on
the horse's claim: a step that has already moved on is left alone) and kills the horse.
Another worker takes the request at once; nothing is lost, nothing counts as a failure.
The horse ignores SIGTERM and SIGINT itself: a process manager that signals the whole
group (systemd's default KillMode) must not kill it before the worker has handed back.
"""

import logging
import signal
import socket
import threading
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from rq import Worker
from rq.utils import now

from generator import scheduling
from generator.models import Expect, GenerationRequest
from generator.queue import JOB

log = logging.getLogger("steadyshot.worker")

HANDED_BACK = "Handed back by a worker that was stopping (a restart); queued again."


class StepWorker(Worker):
    _grace_timer: threading.Timer | None = None

    def _start_scheduler(self, *args, **kwargs):
        # A restart after a crash: free the dead scheduler's lock first, and keep looking
        # (generator/scheduling.py).
        scheduling.prepare(self)
        super()._start_scheduler(*args, **kwargs)
        scheduling.watch(self)

    def setup_work_horse_signals(self):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def handle_warm_shutdown_request(self):
        super().handle_warm_shutdown_request()
        if self.horse_pid and self._grace_timer is None:
            grace = settings.WORKER_STOP_GRACE_SECONDS
            log.info("stopping: the current step has %s s to finish", grace)
            self._grace_timer = threading.Timer(grace, self._hand_back_in_thread)
            self._grace_timer.daemon = True
            self._grace_timer.start()

    def request_force_stop(self, signum, frame):
        # RQ ignores a second signal within a second of the first (a pool and a terminal
        # may both send one); only a real second signal hands back at once.
        if now() - self._shutdown_requested_date >= timedelta(seconds=1):
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            self.hand_back()
        super().request_force_stop(signum, frame)

    def _hand_back_in_thread(self):
        try:
            if self.hand_back():
                self.kill_horse()
        finally:
            connection.close()

    def hand_back(self) -> bool:
        """Give the horse's step back to the queue; whether it was handed back (False: no
        step running, or it had already ended or moved on by itself)."""
        horse = self.horse_pid
        job = self.get_current_job()
        if not horse or job is None or job.func_name != JOB:
            return False
        request_id, step = job.args
        close_old_connections()
        request = GenerationRequest.objects.filter(pk=request_id).first()
        # The horse claimed the request as generator.jobs.worker_name() does: host:pid.
        holder = f"{socket.gethostname()}:{horse}"
        handed = request is not None and request.hand_over(
            Expect.held(holder, step), model=request.current_model, reason=HANDED_BACK
        )
        if handed:
            log.warning("request=%s step=%s handed back: the worker is stopping", request_id, step)
        return handed
