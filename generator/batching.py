"""The batcher: economy requests from the database into Batch mode and back out.

`tick()` runs from the cron every BATCH_TICK_SECONDS (config/cron.py) and on demand with
`python manage.py batches`. In order:

1. **release**: scheduled off-peak requests whose hour has come, and batch requests too
   close to their deadline to go into a batch, go to the normal chain (`hand_over`);
2. **close**: due batch requests of one first model and size become an UpstreamBatch
   once there are BATCH_MAX_REQUESTS of them or the oldest has waited BATCH_MAX_AGE_S;
3. **advance** each unsettled batch whose next step is due: send it (or find it again
   if an earlier send's answer was lost), poll it, deliver its lines, or send its
   requests the normal way when it failed, expired or was cancelled; a request whose
   deadline comes within ECONOMY_DIRECT_MARGIN_S leaves its still-running batch then.

Safe on several machines at once, and after a crash at any point: a request moves only
through its filtered transitions (`put_in_batch`, `hand_over`, `finish` on the state
read), a batch's step is taken with a filtered UPDATE (`UpstreamBatch.take_step`), a
delivery is one transaction (attempt, image, end state, charge), and a batch whose
send may have reached the provider is looked up by its display name before it is sent
again. A request canceled while in a batch ends at once, refunded; its line's answer,
if one comes, is dropped.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from generator.economy import direct_margin, scaled
from generator.images import ImageRejected, delivering
from generator.models import (
    BATCH_PROVIDER,
    Attempt,
    Expect,
    GenerationRequest,
    Route,
    Status,
    UpstreamBatch,
)
from generator.reasons import day_and_time, duration_words
from generator.resilience.catalogue import get_catalogue
from generator.resilience.policy import NON_RETRYABLE
from generator.resilience.taxonomy import USER_MESSAGES, Outcome
from generator.upstream.base import GenerationCall, GenerationResult, InputImage, UpstreamError
from generator.upstream.gemini_batch import BatchLine, BatchStatus
from generator.upstream.registry import get_batch_client

log = logging.getLogger("steadyshot.batch")

# How long a tick holds a batch's step: longer than any one step's calls (a send of a
# large JSONL file), so no other tick takes it meanwhile; a tick that died is replaced
# after it. Real seconds: network calls do not follow TIME_SCALE.
STEP_HOLD = timedelta(minutes=5)
STATE_WORDS = {
    UpstreamBatch.State.FAILED: "failed",
    UpstreamBatch.State.EXPIRED: "expired",
    UpstreamBatch.State.CANCELLED: "was cancelled",
}


@dataclass
class Report:
    released: int = 0  # scheduled requests handed to the normal chain
    closed: int = 0  # batches closed
    sent: int = 0  # batches accepted by the provider
    delivered: int = 0  # images delivered from batches
    line_failures: int = 0  # lines that came back without an image
    direct: int = 0  # requests that left Batch mode for the normal chain

    def __str__(self):
        return ", ".join(f"{name} {value}" for name, value in vars(self).items())


def tick(now: datetime | None = None) -> Report:
    now = now or timezone.now()
    report = Report()
    _release(now, report)
    _close(now, report)
    due = UpstreamBatch.objects.filter(settled=None, next_step__lte=now).order_by("next_step")
    for batch in due:
        try:
            BatchStep(batch, now, report).run()
        except Exception:  # one batch's trouble must not stop the others; retried later
            log.exception("batch %s: step failed; retried at its next step", batch.pk)
    if any(vars(report).values()):
        log.info("batches: %s", report)
    return report


def go_direct(request: GenerationRequest, expect: Expect, why: str) -> bool:
    """Send an economy request to the normal chain, now, saying why it left Batch mode."""
    return request.hand_over(
        expect,
        model=request.chain[0],
        reason=f"{why} Asking {request.model_name(request.chain[0])} directly.",
        route=Route.DIRECT,
        left_batch_reason=why[:300],
    )


# --- 1. release ---------------------------------------------------------------------


def _release(now: datetime, report: Report) -> None:
    due = GenerationRequest.objects.filter(
        status=Status.SCHEDULED, route=Route.OFF_PEAK, waiting_until__lte=now
    )
    for request in due:
        if request.hand_over(
            Expect.seen(Status.SCHEDULED, request.step),
            model=request.chain[0],
            reason="Its off-peak hour has come.",
        ):
            report.released += 1
    late = GenerationRequest.objects.filter(
        status=Status.SCHEDULED, route=Route.BATCH, deadline__lte=now + direct_margin()
    )
    for request in late:
        if go_direct(
            request,
            Expect.seen(Status.SCHEDULED, request.step),
            "Its deadline was too close for Batch mode.",
        ):
            report.direct += 1


# --- 2. close -----------------------------------------------------------------------


def _close(now: datetime, report: Report) -> None:
    catalogue = get_catalogue()
    waiting = GenerationRequest.objects.filter(
        status=Status.SCHEDULED, route=Route.BATCH, upstream_batch=None, waiting_until__lte=now
    ).order_by("waiting_until", "id")
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for pk, model, size, since in waiting.values_list(
        "pk", "current_model", "image_size", "waiting_until"
    ):
        groups[(model, catalogue[model].deliverable_size(size))].append((pk, since))
    most = settings.BATCH_MAX_REQUESTS
    oldest_allowed = now - scaled(settings.BATCH_MAX_AGE_S)
    for (model, size), rows in groups.items():
        while len(rows) >= most or (rows and rows[0][1] <= oldest_allowed):
            chunk, rows = rows[:most], rows[most:]
            report.closed += _close_one(model, size, [pk for pk, _ in chunk], now)


def _close_one(model: str, size: str, ids: list, now: datetime) -> int:
    name = GenerationRequest.model_name(model)
    with transaction.atomic():
        batch = UpstreamBatch.objects.create(model=model, image_size=size, next_step=now)
        joined = GenerationRequest.objects.put_in_batch(
            ids, batch, f"In a batch for {name}, about to be sent to Batch mode."
        )
        if not joined:
            # Another batcher took them first (or they were canceled): no empty batch.
            transaction.set_rollback(True)
            return 0
    return 1


# --- 3. advance ---------------------------------------------------------------------


class BatchStep:
    """One step of one batch, taken by this tick alone (`take_step`)."""

    def __init__(self, batch: UpstreamBatch, now: datetime, report: Report):
        self.batch = batch
        self.now = now
        self.report = report
        self.spec = get_catalogue()[batch.model]
        self.name = self.spec.display_name
        self.planned = False  # whether this step set the batch's next one

    def run(self) -> None:
        batch = self.batch
        if not batch.take_step(self.now + STEP_HOLD):
            return  # another tick is on it
        members = list(batch.requests.filter(status=Status.BATCHED))
        if batch.state == UpstreamBatch.State.CLOSED:
            members = self._rescue(members)
            if members:
                self._send(members)
            else:
                batch.record(
                    state=UpstreamBatch.State.CANCELLED,
                    finished=self.now,
                    error="Every request left the batch before it was sent.",
                )
        elif not members:
            if not batch.is_final:
                self._cancel_upstream()
        else:
            # Polled before anyone leaves for the deadline: a batch that has ended
            # delivers (at half price), or says why it ended, to everyone in it.
            self._poll(members)
        self._finish_step()

    # --- steps ----------------------------------------------------------------------

    def _rescue(self, members: list[GenerationRequest]) -> list[GenerationRequest]:
        """Requests whose deadline is now too close to wait for the batch leave it."""
        line = self.now + direct_margin()
        staying = []
        for request in members:
            if request.deadline is not None and request.deadline <= line:
                if go_direct(
                    request,
                    Expect.seen(Status.BATCHED, request.step),
                    f"Its batch {self.batch.short_name} had not finished in time for its deadline.",
                ):
                    self.report.direct += 1
                continue
            staying.append(request)
        return staying

    def _send(self, members: list[GenerationRequest]) -> None:
        batch = self.batch
        client = get_batch_client(self.spec)
        lines = self._lines(members, with_references=True)
        tries = batch.submit_tries + 1
        # Counted before the send: if this step dies after the provider accepted the
        # batch but before its name is written, the next try looks for it first.
        batch.record(submit_tries=tries)
        try:
            found = client.find(self.spec, batch.display_name, lines) if tries > 1 else None
            status = found or client.submit(self.spec, lines, batch.display_name)
        except UpstreamError as exc:
            log.warning("batch %s: send %s failed: %s", batch.pk, tries, exc.message)
            if tries >= settings.BATCH_SUBMIT_TRIES or exc.outcome in NON_RETRYABLE:
                batch.record(
                    state=UpstreamBatch.State.FAILED, finished=self.now, error=exc.message[:300]
                )
                self._all_direct(members, f"Batch mode refused its batch ({exc.outcome.label}).")
            else:
                batch.record(error=exc.message[:300])
                self._next_step(scaled(settings.BATCH_POLL_S) * 2**tries)
            return
        batch.record(
            name=status.name,
            state=status.state,
            lines=len(lines),
            submitted=self.now,
            error="",
        )
        self.report.sent += 1
        GenerationRequest.objects.tell_batched(
            batch,
            f"In batch {batch.short_name} for {self.name}, sent "
            f"{day_and_time(timezone.localtime(self.now))}; "
            "Batch mode answers within 24 hours; if it has not "
            f"{duration_words(settings.ECONOMY_DIRECT_MARGIN_S)} before your deadline, the "
            "image is made directly so that it still arrives in time.",
        )
        self._next_step(scaled(settings.BATCH_POLL_S))

    def _poll(self, members: list[GenerationRequest]) -> None:
        batch = self.batch
        if batch.is_final and batch.state != UpstreamBatch.State.SUCCEEDED:
            # Fell over after learning the end: the rest go the normal way now.
            self._all_direct(members, self._ended_words())
            return
        lines = self._lines(members, with_references=False)
        try:
            status = get_batch_client(self.spec).get(self.spec, batch.name, lines)
        except UpstreamError as exc:
            if exc.outcome != Outcome.NOT_FOUND:
                log.warning("batch %s: poll failed: %s", batch.pk, exc.message)
                self._rescue(members)
                self._next_step(scaled(settings.BATCH_POLL_S))
                return
            status = BatchStatus(batch.name, "failed", error="The provider no longer knows it.")
        fields = {"state": status.state}
        if status.is_final and batch.finished is None:
            fields.update(finished=self.now, error=status.error[:300])
        batch.record(**fields)
        if status.state == UpstreamBatch.State.SUCCEEDED:
            for request in members:
                self._take_line(request, status.results.get(str(request.pk)))
        elif status.is_final:
            self._all_direct(members, self._ended_words())
        else:
            if status.state == UpstreamBatch.State.RUNNING:
                GenerationRequest.objects.tell_batched(
                    batch, f"Batch {batch.short_name} for {self.name} is running."
                )
            self._rescue(members)
            self._next_step(scaled(settings.BATCH_POLL_S))

    def _cancel_upstream(self) -> None:
        """Nobody waits for this batch any more: ask the provider to stop it (what it
        has already generated is paid for either way; the rest is not)."""
        batch = self.batch
        try:
            get_batch_client(self.spec).cancel(self.spec, batch.name)
        except UpstreamError as exc:
            log.warning("batch %s: cancel failed: %s", batch.pk, exc.message)
        batch.record(
            state=UpstreamBatch.State.CANCELLED,
            finished=self.now,
            error="Every request left the batch before it finished.",
        )

    # --- lines ----------------------------------------------------------------------

    def _take_line(self, request: GenerationRequest, answer) -> None:
        if answer is None:
            answer = UpstreamError(
                Outcome.MALFORMED, f"{self.spec.id}: the batch's answer has no line for it"
            )
        if isinstance(answer, GenerationResult):
            try:
                # Decoded and checked already by the provider's parse of the line.
                prepared = answer.image()
            except ImageRejected as exc:
                answer = UpstreamError(Outcome.MALFORMED, f"{self.spec.id}: {exc}")
            else:
                self._deliver(request, prepared)
                return
        self._line_failed(request, answer)

    def _deliver(self, request: GenerationRequest, prepared) -> None:
        spec, batch = self.spec, self.batch
        # The files first (images.delivering): no lock is held while storage writes.
        with delivering(request, prepared) as image, transaction.atomic():
            attempt = self._record(request, Outcome.SUCCESS)
            done = request.finish(
                Status.SUCCEEDED,
                Expect.seen(Status.BATCHED, request.step),
                served_model=spec.id,
                fell_back=False,
                cost_usd=request.price_to_charge(spec.batch_price(request.image_size)),
                delivered_width=prepared.width,
                delivered_height=prepared.height,
                attempt_count=attempt.number,
            )
            if not done:
                # Canceled meanwhile: the image is dropped and nothing is charged.
                transaction.set_rollback(True)
                return
            image.save()
            self._decide(attempt, Attempt.Decision.DONE, f"Delivered by {self.name} (Batch mode)")
        UpstreamBatch.objects.filter(pk=batch.pk).update(delivered=F("delivered") + 1)
        self.report.delivered += 1

    def _line_failed(self, request: GenerationRequest, error: UpstreamError) -> None:
        """A line without an image: what another call cannot fix ends the request, as a
        direct call's would; anything else goes to the normal chain, whose policy sees
        this attempt in the request's history."""
        expect = Expect.seen(Status.BATCHED, request.step)
        with transaction.atomic():
            attempt = self._record(request, error.outcome, error)
            if error.outcome in NON_RETRYABLE:
                message = USER_MESSAGES.get(error.outcome, "The request could not be completed.")
                self._decide(
                    attempt, Attempt.Decision.GIVE_UP, f"{error.outcome.label}; not retried"
                )
                done = request.finish(
                    Status.FAILED,
                    expect,
                    error_code=str(error.outcome),
                    error_message=message,
                    attempt_count=attempt.number,
                )
            else:
                why = f"Its line in batch {self.batch.short_name} failed ({error.outcome.label})."
                self._decide(attempt, Attempt.Decision.RETRY, why, self.spec.id)
                done = go_direct(request, expect, why)
                self.report.direct += int(done)
            if not done:
                transaction.set_rollback(True)
                return
        UpstreamBatch.objects.filter(pk=self.batch.pk).update(failed_lines=F("failed_lines") + 1)
        self.report.line_failures += 1

    def _record(self, request, outcome: Outcome, error: UpstreamError | None = None) -> Attempt:
        batch = self.batch
        last = request.attempts.aggregate(n=Max("number"))["n"] or 0
        started = batch.submitted or batch.created
        return Attempt.objects.create(
            request=request,
            number=last + 1,
            model=self.spec.id,
            provider=BATCH_PROVIDER,
            started=started,
            latency_ms=int((self.now - started).total_seconds() * 1000),
            outcome=str(outcome),
            http_status=error.http_status if error else 200,
            quota_id=(error.quota_id if error else "")[:200],
            quota_scope=error.quota_scope if error else "",
            retry_after_ms=(
                int(error.retry_after_s * 1000)
                if error is not None and error.retry_after_s is not None
                else None
            ),
            message=(error.message if error else f"Batch {batch.short_name}")[:500],
            worker=f"batch:{batch.short_name}"[:120],
        )

    @staticmethod
    def _decide(attempt: Attempt, decision: str, reason: str, next_model: str = "") -> None:
        attempt.decision, attempt.decision_reason, attempt.next_model = (
            decision,
            reason,
            next_model,
        )
        attempt.save(update_fields=["decision", "decision_reason", "next_model"])

    # --- helpers --------------------------------------------------------------------

    def _all_direct(self, members: list[GenerationRequest], why: str) -> None:
        for request in members:
            if go_direct(request, Expect.seen(Status.BATCHED, request.step), why):
                self.report.direct += 1

    def _ended_words(self) -> str:
        batch = self.batch
        what = STATE_WORDS.get(batch.state, batch.state)
        detail = f" ({batch.error.rstrip('.')})" if batch.error else ""
        return f"Its batch {batch.short_name} {what}{detail}."

    def _lines(self, members, *, with_references: bool) -> list[BatchLine]:
        return [
            BatchLine(
                key=str(request.pk),
                call=GenerationCall(
                    model=self.spec,
                    prompt=request.prompt,
                    aspect_ratio=request.aspect_ratio,
                    image_size=self.spec.deliverable_size(request.image_size),
                    references=tuple(_references(request)) if with_references else (),
                    request_id=str(request.pk),
                ),
            )
            for request in members
        ]

    def _next_step(self, after: timedelta) -> None:
        self.batch.record(next_step=self.now + after)
        self.planned = True

    def _finish_step(self) -> None:
        """A final batch none of whose requests is still in it is settled: never
        stepped again. Any other batch gets a next step."""
        batch = self.batch
        if batch.is_final and not batch.requests.filter(status=Status.BATCHED).exists():
            batch.record(settled=self.now)
        elif not self.planned:
            self._next_step(scaled(settings.BATCH_POLL_S))


def _references(request: GenerationRequest):
    if not request.reference_count:
        return
    for ref in request.references.all():
        with ref.file.open("rb") as handle:
            yield InputImage(data=handle.read(), mime=ref.mime)
