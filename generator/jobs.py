"""A request's steps: `advance` is the RQ job of a step (never a sleep), `record` the end
of a step whose upstream call a caller made, run by that caller.

A step claims the request with a filtered UPDATE on (status, step) that returns the row
(`advance`) and asks the policy what to do. To call a model it passes the claim to the
queue of calls and ends: a caller process makes the call among hundreds of others
(generator/caller) and then, in its thread pool and under its own claim, `record`s the
answer: the call becomes an Attempt, the shared health is fed, the policy is asked again
and the request is handed back to the queue (now, or at a later time through the
workers' scheduler), delivered, or failed with a reason a person can read. Every write
after the claim is filtered on the claim too, so a step that lost its claim (its worker
or caller was presumed dead and the reconciler took the request back) can change nothing.
"""

import logging
import os
import socket
from datetime import UTC, datetime, timedelta

import redis
from django.db import transaction
from django.utils import timezone

from config import statements
from generator.caller import calls
from generator.images import add_thumbnail, delivering
from generator.models import FIRST_STEP, Attempt, Expect, GenerationRequest, Image, Status
from generator.reasons import words
from generator.resilience import chain
from generator.resilience.catalogue import get_catalogue
from generator.resilience.from_settings import policy_config_from_settings
from generator.resilience.health import Health
from generator.resilience.policy import Action, AttemptRecord, Code, Decision, Reason
from generator.resilience.taxonomy import USER_MESSAGES, Outcome

log = logging.getLogger("steadyshot.jobs")
# One line per upstream call, in logfmt, for log pipelines: request, model, outcome,
# latency and the decision taken after it, with its reason code and words.
attempt_log = logging.getLogger("steadyshot.attempt")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def advance(request_id: str, step: int) -> str:
    """Run one step of the request if `step` is still its current step; returns what
    happened (for RQ's job result and the tests)."""
    me = worker_name()
    request = GenerationRequest.objects.claim(request_id, step, me)
    if request is None:
        # A duplicate, or a job from before a cancel or a reconciler hand-over.
        log.info("request=%s step=%s stale job: nothing to do", request_id, step)
        return "stale"
    return StepRunner(request, me).run()


def record(request_id: str, step: int, caller: str, answer: calls.Answer) -> str:
    """The end of a step whose call `caller` made, run by that caller (in its thread
    pool): record the answer and act on it, under the caller's claim. The claim's lease
    is renewed by the same UPDATE that reads the row; a caller that lost the step
    meanwhile (the reconciler took it back) finds nothing and drops the answer."""
    request = GenerationRequest.objects.pass_claim(request_id, step, caller, caller)
    if request is None:
        log.warning("request=%s step=%s answer dropped: claim lost", request_id, step)
        return "stale"
    return StepRunner(request, caller).record(answer)


def _references(request: GenerationRequest) -> tuple[tuple[str, str], ...]:
    """(file name, mime) of each of the request's references; no query for a request
    admitted without any."""
    if not request.reference_count:
        return ()
    return tuple((ref.file.name, ref.mime) for ref in request.references.all())


class StepRunner:
    def __init__(self, request: GenerationRequest, me: str):
        self.request = request
        self.me = me
        self.catalogue = get_catalogue()
        self.health = Health.from_settings()
        self.config = policy_config_from_settings()
        # The request's attempts, read once: decide() is asked up to len(chain) + 2 times
        # a step, and only this step adds attempts while it holds the claim. Every
        # attempt is recorded by a step that then moves the request on (a hand-over, its
        # end; if it dies, the reconciler's hand-over), so the first step has none to read.
        self.attempts = []
        if request.step != FIRST_STEP:
            self.attempts = list(request.attempts.order_by("number"))

    # --- the step -------------------------------------------------------------------

    def run(self) -> str:
        # The row was read just after the claim: its flag is as fresh as a query's.
        if self.request.cancel_requested:
            return self._finish_canceled()
        decision = chain.next_step(self._ticket(), self.health, self.config)
        if decision.action == Action.CALL:
            return self._call(decision)
        return self._apply(decision, attempt=None)

    def _call(self, decision: Decision) -> str:
        """Pass the call to the callers (generator/caller) and end this part of the step."""
        request = self.request
        spec = self.catalogue[decision.model]
        if not request.send_to_caller(self.hold, spec.id, self._fallback_words(decision)):
            return "lost-claim"
        call = calls.Call(
            request_id=str(request.pk),
            step=request.step,
            model=spec.id,
            prompt=request.prompt,
            aspect_ratio=request.aspect_ratio,
            image_size=spec.deliverable_size(request.image_size),
            references=_references(request),
        )
        try:
            calls.send(call)
        except redis.exceptions.RedisError:
            # The lease runs out and the reconciler takes the request back, as when a
            # caller dies: nothing more to do here.
            log.exception("request=%s step=%s call not queued", request.pk, request.step)
        return "calling"

    def record(self, answer: calls.Answer) -> str:
        """The call's answer: fed to the shared health, recorded, then acted on (by the
        caller that made the call: `self.me`)."""
        caller = self.me
        spec = self.catalogue[self.request.current_model]
        if answer.error is None:
            latency_ms = answer.result.latency_ms
            self.health.record(spec.id, Outcome.SUCCESS, latency_ms)
            attempt = self._record_attempt(
                spec, answer.started, Outcome.SUCCESS, latency_ms, caller=caller
            )
            return self._deliver(spec, answer.result, attempt)
        error = answer.error
        self.health.record(
            spec.id,
            error.outcome,
            error.latency_ms,
            retry_after_s=error.retry_after_s,
            quota_scope=error.quota_scope,
            quota_limit=error.quota_limit,
        )
        attempt = self._record_attempt(
            spec, answer.started, error.outcome, error.latency_ms, error, caller=caller
        )
        # The row was read by the UPDATE that renewed the claim, just before: its flag
        # is as fresh as a query's.
        if self.request.cancel_requested:
            return self._finish_canceled(attempt)
        return self._apply(chain.ask(self._ticket(), self.health, self.config), attempt=attempt)

    # --- outcomes -------------------------------------------------------------------

    @property
    def hold(self) -> Expect:
        """What this step holds: every write below is void once it lost the claim (its
        worker was presumed dead and the reconciler took the request back)."""
        return Expect.held(self.me, self.request.step)

    def _apply(self, decision: Decision, attempt: Attempt | None) -> str:
        reason = self._words(decision)
        code = decision.reason.code if decision.reason else ""
        if decision.action == Action.GIVE_UP:
            self._set_decision(attempt, Attempt.Decision.GIVE_UP, reason, code=code)
            outcome = decision.outcome or (Outcome(attempt.outcome) if attempt else None)
            return self._fail(outcome or Outcome.UNAVAILABLE, reason)
        kind = Attempt.Decision.RETRY
        if attempt is not None and decision.model != attempt.model:
            kind = Attempt.Decision.DOWNGRADE
        self._set_decision(attempt, kind, reason, decision.model, code=code)
        at = None
        if decision.action == Action.WAIT and decision.at > self._now_ts():
            at = datetime.fromtimestamp(decision.at, tz=UTC)
        handed = self.request.hand_over(
            self.hold,
            model=decision.model,
            reason=reason,
            at=at,
            fallback_reason=self._fallback_words(decision),
            attempt_count=len(self.attempts),
        )
        if not handed:
            return "lost-claim"
        return "waiting" if at else "requeued"

    def _deliver(self, spec, result, attempt: Attempt) -> str:
        request = self.request
        # Decoded, checked and thumbnailed by the caller that received it (the provider's
        # whole_image()); an answer without them is prepared here, before the
        # transaction (it holds no lock while Pillow works).
        prepared = result.image()
        # The files first, then one transaction for the rows: the request is seen as done
        # only once its image is in storage and in the database.
        with delivering(request, prepared) as image, transaction.atomic():
            done = request.finish(
                Status.SUCCEEDED,
                self.hold,
                served_model=spec.id,
                fell_back=not (request.chain and spec.id == request.chain[0]),
                cost_usd=request.price_to_charge(spec.price(request.image_size)),
                delivered_width=prepared.width,
                delivered_height=prepared.height,
                attempt_count=len(self.attempts),
            )
            if not done:
                self._set_decision(
                    attempt, "", "Result discarded: the request was taken over.", code="taken_over"
                )
                return "lost-claim"
            # A second image for the request cannot exist: finish() just moved it on
            # (and the database refuses one: image_one_per_request).
            statements.insert(image, Image.objects.db)
            reason = words(Reason(Code.DELIVERED, spec.id), GenerationRequest.model_name)
            self._set_decision(attempt, Attempt.Decision.DONE, reason, code=Code.DELIVERED)
        # Delivered and visible: a thumbnail the caller could not make is made now,
        # outside the transaction (in this step rather than a job of its own, which would
        # cost RQ's bookkeeping again). Until it exists, or if this fails, the page shows
        # the image itself.
        try:
            add_thumbnail(image)
        except Exception:
            log.exception("request=%s thumbnail failed", request.pk)
        return "succeeded"

    def _fail(self, outcome: Outcome, reason: str) -> str:
        message = USER_MESSAGES.get(outcome, "The request could not be completed.")
        done = self.request.finish(
            Status.FAILED,
            self.hold,
            error_code=str(outcome),
            error_message=f"{message} ({reason})" if reason else message,
            attempt_count=len(self.attempts),
        )
        return "failed" if done else "lost-claim"

    def _finish_canceled(self, attempt: Attempt | None = None) -> str:
        self._set_decision(
            attempt, Attempt.Decision.CANCELED, "Canceled by the user", code="canceled"
        )
        done = self.request.finish(
            Status.CANCELED,
            self.hold,
            error_code="canceled",
            error_message=GenerationRequest.CANCELED_MESSAGE,
            attempt_count=len(self.attempts),
        )
        return "canceled" if done else "lost-claim"

    # --- helpers --------------------------------------------------------------------

    def _now_ts(self) -> float:
        return timezone.now().timestamp()

    def _ticket(self) -> chain.Ticket:
        request = self.request
        return chain.Ticket(
            key=str(request.pk),
            strategy=request.strategy,
            chain=tuple(request.chain),
            created=request.created.timestamp(),
            deadline=request.deadline.timestamp() if request.deadline else None,
            wait_until=request.wait_up_to.timestamp() if request.wait_up_to else None,
            attempts=tuple(
                AttemptRecord(
                    model=a.model,
                    outcome=Outcome(a.outcome),
                    at=(a.started + timedelta(milliseconds=a.latency_ms or 0)).timestamp(),
                    retry_after_s=(
                        a.retry_after_ms / 1000 if a.retry_after_ms is not None else None
                    ),
                    quota_scope=a.quota_scope,
                )
                for a in self.attempts
                # A success the policy could see here was never delivered: its step
                # stopped between the call and the delivery (handed back by a stopping
                # worker, or its worker died) and the image went with it. Left in, the
                # policy would answer "done" forever and the request would be handed
                # over in a loop; left out, it calls again.
                if a.outcome != Outcome.SUCCESS
            ),
        )

    def _record_attempt(
        self, spec, started, outcome, latency_ms, error=None, *, caller: str
    ) -> Attempt:
        # Numbered after the attempts this step read, not after the request's counter: a
        # step that died after its call left an attempt the counter never saw.
        number = self.attempts[-1].number + 1 if self.attempts else 1
        retry_ms = None
        if error is not None and error.retry_after_s is not None:
            retry_ms = int(error.retry_after_s * 1000)
        attempt = statements.create(
            Attempt,
            Attempt.objects.db,
            request=self.request,
            number=number,
            model=spec.id,
            provider=spec.provider,
            started=started,
            latency_ms=latency_ms,
            outcome=str(outcome),
            http_status=error.http_status if error else 200,
            quota_id=(error.quota_id if error else "")[:200],
            quota_scope=error.quota_scope if error else "",
            retry_after_ms=retry_ms,
            message=(error.message if error else "")[:500],
            worker=caller,
        )
        self.attempts.append(attempt)
        return attempt

    def _set_decision(self, attempt, decision, reason, next_model="", *, code=""):
        if attempt is None:
            return
        attempt.decision = decision
        attempt.decision_reason = reason[:300]
        attempt.next_model = next_model or ""
        fields = {"decision": decision, "decision_reason": attempt.decision_reason}
        fields["next_model"] = attempt.next_model
        statements.update(Attempt, Attempt.objects.db, set=fields, where={"id": attempt.pk})
        attempt_log.info(
            'request=%s attempt=%s model=%s outcome=%s http=%s latency_ms=%s decision=%s next=%s code=%s reason="%s"',
            self.request.pk,
            attempt.number,
            attempt.model,
            attempt.outcome,
            attempt.http_status,
            attempt.latency_ms,
            decision or "-",
            next_model or "-",
            code or "-",
            reason.replace('"', "'"),
        )

    @staticmethod
    def _words(decision: Decision) -> str:
        return words(decision.reason, GenerationRequest.model_name)

    @staticmethod
    def _fallback_words(decision: Decision) -> str:
        """Why the request left the model it asked for ("" if it did not): the cause
        alone, as the page already says which model it fell back to."""
        if not decision.downgraded_from or decision.reason is None:
            return ""
        return words(decision.reason.cause or decision.reason, GenerationRequest.model_name)
