"""A caller process (`manage.py caller`): many upstream calls in flight on one event loop.

It pops calls from Redis (generator.caller.calls) while it has fewer than
CALLER_CONCURRENCY in flight, takes each one's claim from CALLS_HOLDER (a call the
reconciler already took back is dropped here, never made), makes it through pooled
httpx.AsyncClients (transport.AsyncClients: pools of at most 32 connections per base
URL), and records the answer itself (`generator.jobs.record`, under its own claim: the
Attempt, the shared health, the policy, then the delivery, the hand-over to the queue or
the failure). While calls are in flight one UPDATE every
third of LEASE_SECONDS renews all their leases, the calls being recorded included; a
caller that dies stops renewing and the reconciler takes its requests back, like a dead
worker's.

The loop only ever waits on sockets: the database and storage work, and the CPU work of
an answer (its JSON, the image decoded, checked and thumbnailed), run in a small thread
pool (the loop's default executor). A call in flight costs a task, its request body
until it is sent and one connection: about 60 KB (docs/benchmarks.md, "Cost per image").

SIGTERM (or SIGINT): take no new call; the calls in flight get WORKER_STOP_GRACE_SECONDS
to finish, then, or at once on a second signal, each one still waiting on the upstream
is handed back to the queue (`hand_over`, filtered on this caller's claim) for another
caller; an answer already being recorded is recorded to its end.
"""

import asyncio
import contextlib
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import redis.asyncio
import uvloop
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import close_old_connections
from django.utils import timezone

from generator import connections, jobs
from generator.caller import calls
from generator.models import CALLS_HOLDER, Expect, GenerationRequest
from generator.resilience.catalogue import get_catalogue
from generator.upstream.base import GenerationCall, InputImage, UpstreamError
from generator.upstream.registry import get_provider
from generator.upstream.transport import AsyncClients, agenerate

log = logging.getLogger("steadyshot.caller")

HANDED_BACK = "Handed back by a caller that was stopping (a restart); queued again."
# Threads for the database and storage work of the calls and the CPU work of their
# answers (never the calls themselves).
DB_THREADS = 4


class Caller:
    def __init__(self, concurrency: int | None = None):
        self.name = jobs.worker_name()
        self.concurrency = concurrency or settings.CALLER_CONCURRENCY
        self.clients = AsyncClients(self.concurrency)
        self.tasks: set[asyncio.Task] = set()
        self.held: dict[str, calls.Call] = {}  # request id → call, claimed by this caller
        self.stopping = asyncio.Event()
        self.give_back = asyncio.Event()  # the grace is over: hand back what is left
        self._first_signal = 0.0

    # --- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(DB_THREADS, thread_name_prefix="db"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        source = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        heartbeat = asyncio.create_task(self._heartbeat())
        log.info("caller %s: taking calls, at most %s at once", self.name, self.concurrency)
        try:
            while not self.stopping.is_set():
                if len(self.tasks) >= self.concurrency:
                    await asyncio.wait(self.tasks, timeout=1, return_when=asyncio.FIRST_COMPLETED)
                    continue
                popped = await source.blpop([calls.CALLS_KEY], timeout=1)
                if popped is not None:
                    self._start(calls.Call.loads(popped[1]))
            await self._drain()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(calls.retire, self.name)
            await source.aclose()
            await self.clients.aclose()
            log.info("caller %s: stopped", self.name)

    def _start(self, call: calls.Call) -> None:
        task = asyncio.create_task(self._handle(call))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            self._first_signal = time.monotonic()
            grace = settings.WORKER_STOP_GRACE_SECONDS
            log.info("stopping: %s calls in flight have %s s to finish", len(self.tasks), grace)
            self.stopping.set()
            asyncio.get_running_loop().call_later(grace, self.give_back.set)
        elif time.monotonic() - self._first_signal >= 1:
            # A second signal (not the echo of the first from a process group).
            self.give_back.set()

    async def _drain(self) -> None:
        """Let the calls in flight finish until the grace is over, then hand back the
        rest (each task hands its own call back when it is cancelled)."""
        if self.tasks:
            waiting = asyncio.create_task(self.give_back.wait())
            await asyncio.wait([*self.tasks, waiting], return_when=asyncio.FIRST_COMPLETED)
            while self.tasks and not self.give_back.is_set():
                await asyncio.wait([*self.tasks, waiting], return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks)

    async def _heartbeat(self) -> None:
        beat = settings.LEASE_SECONDS / 3
        while True:
            try:  # presence for the monitoring page: gone 3 beats after the last one
                await asyncio.to_thread(calls.announce, self.name, len(self.tasks), 3 * beat)
            except Exception:
                log.warning("could not announce this caller", exc_info=True)
            await asyncio.sleep(beat)
            if self.held:
                try:
                    await asyncio.to_thread(self._renew, list(self.held))
                except Exception:  # the leases just run out; the reconciler takes over
                    log.exception("lease renewal failed")

    # --- one call ----------------------------------------------------------------------

    async def _handle(self, call: calls.Call) -> None:
        try:
            answer = await self._make(call)
            if answer is not None:
                await self._record(call, answer)
        finally:
            self.held.pop(call.request_id, None)

    async def _make(self, call: calls.Call) -> calls.Answer | None:
        """Take the call's claim and make the call; None if there is nothing to record
        (a stale call, dropped, or one handed back)."""
        try:
            if not await asyncio.to_thread(self._take, call):
                log.info("request=%s step=%s stale call: dropped", call.request_id, call.step)
                return None
            self.held[call.request_id] = call
            return await self._call(await self._generation(call))
        except asyncio.CancelledError:
            await asyncio.to_thread(self._hand_back, call)
            raise
        except Exception:
            log.exception("request=%s step=%s call failed", call.request_id, call.step)
            await asyncio.to_thread(self._hand_back, call)
            return None

    async def _record(self, call: calls.Call, answer: calls.Answer) -> None:
        """Record the answer in the thread pool. Once begun it runs to its end: a caller
        stopping meanwhile waits for it rather than handing back a call whose answer is
        being delivered."""
        recording = asyncio.ensure_future(asyncio.to_thread(self._record_answer, call, answer))
        try:
            await asyncio.shield(recording)
        except asyncio.CancelledError:
            await asyncio.wait([recording])
            raise

    async def _call(self, generation: GenerationCall) -> calls.Answer:
        """The call itself: its latency is measured around the request alone."""
        started = timezone.now()
        provider = get_provider(generation.model)
        try:
            return calls.Answer(
                started, result=await agenerate(self.clients, provider, generation)
            )
        except UpstreamError as error:
            return calls.Answer(started, error=error)

    async def _generation(self, call: calls.Call) -> GenerationCall:
        references = ()
        if call.references:
            references = await asyncio.to_thread(_read_references, call.references)
        return GenerationCall(
            model=get_catalogue()[call.model],
            prompt=call.prompt,
            aspect_ratio=call.aspect_ratio,
            image_size=call.image_size,
            references=references,
            request_id=call.request_id,
        )

    # --- in the thread pool: the database and Redis --------------------------------------

    def _take(self, call: calls.Call) -> bool:
        connections.refresh()
        return GenerationRequest.objects.pass_claim(
            call.request_id, call.step, CALLS_HOLDER, self.name
        )

    def _renew(self, request_ids: list[str]) -> None:
        connections.refresh()
        GenerationRequest.objects.renew_leases(request_ids, self.name)

    def _record_answer(self, call: calls.Call, answer: calls.Answer) -> None:
        connections.refresh()
        try:
            jobs.record(call.request_id, call.step, self.name, answer)
        except Exception:
            # Nothing is lost: the claim stays this caller's until its lease runs out,
            # then the reconciler takes the request back (a recovery), as for a caller
            # that died while recording.
            log.exception("request=%s step=%s recording failed", call.request_id, call.step)

    def _hand_back(self, call: calls.Call) -> None:
        """Give a call this caller holds (or popped but had not yet taken) back to the
        queue for another caller."""
        close_old_connections()
        request = GenerationRequest.objects.filter(pk=call.request_id).first()
        if request is None:
            return
        for holder in (self.name, CALLS_HOLDER):
            if request.hand_over(
                Expect.held(holder, call.step), model=call.model, reason=HANDED_BACK
            ):
                log.warning("request=%s step=%s handed back", call.request_id, call.step)
                return


def _read_references(references) -> tuple[InputImage, ...]:
    close_old_connections()
    images = []
    for name, mime in references:
        with default_storage.open(name, "rb") as handle:
            images.append(InputImage(data=handle.read(), mime=mime))
    return tuple(images)


def main(concurrency: int | None = None) -> None:
    # uvloop: the event loop in C, as the web server's (uvicorn picks it too).
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Caller(concurrency).run(), loop_factory=uvloop.new_event_loop)
