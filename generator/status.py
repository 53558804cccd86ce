"""What a person is told about one request, computed once per render.

The gallery card, the detail page, the home page and the live-status JSON all show a
request through one StatusView built here, so no two parts of a page can disagree: the
badge, the image placeholder, the status line, the attempt count, the cost and whether
Cancel is offered come from the same row read at the same moment. The page's script
compares the view's `version` with the one it rendered and, when it changed, swaps in
the server's fresh rendering of the whole card or page body (static/js/generator.js).
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Case, Count, DateTimeField, F, Q, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from generator.models import Attempt, GenerationRequest, QuotaState, Status


@dataclass(frozen=True)
class StatusView:
    status: str  # a Status value: the CSS class of the badge
    label: str  # the badge and the image placeholder
    text: str  # the one line of the role=status region
    final: bool
    cancelable: bool  # still running and not already being canceled
    falling_back: bool  # active on a model after the first of its chain
    ahead: int | None  # requests ready to run before this one (None: not waiting on one)
    waiting_until: datetime | None  # only while it lies ahead; never a time in the past
    attempts: int
    cost: str
    served_model: str  # display name, "" until delivered
    fell_back: bool
    fallback_reason: str
    served_how: str = ""  # economy: "Batch, Nano Banana Pro, 11 h" once delivered

    @property
    def version(self) -> str:
        """Changes whenever anything the page shows about the request changes."""
        parts = (self.status, self.label, self.text, self.cancelable, self.attempts, self.cost)
        return hashlib.sha1(repr(parts).encode(), usedforsecurity=False).hexdigest()[:12]

    def as_dict(self, request: GenerationRequest) -> dict:
        """The live-status JSON (generator:status)."""
        return {
            "id": str(request.id),
            "version": self.version,
            "status": self.status,
            "status_label": self.label,
            "text": self.text,
            "final": self.final,
            "cancelable": self.cancelable,
            "queue_position": None if self.ahead is None else self.ahead + 1,
            "ahead": self.ahead,
            "current_model": request.current_model_name or None,
            "waiting_until": self.waiting_until.isoformat() if self.waiting_until else None,
            "served_model": self.served_model or None,
            "fell_back": self.fell_back,
            "fallback_reason": self.fallback_reason or None,
            "served_how": self.served_how or None,
            "attempts": self.attempts,
            "cost": self.cost,
            "error": request.error_message if request.status == Status.FAILED else None,
        }


def ready_since(request: GenerationRequest, now: datetime) -> datetime | None:
    """When the request became ready for a worker: handed to the queue (queued) or its
    retry came due (waiting); None while it is not ready."""
    if request.status == Status.QUEUED:
        return request.handed_over or request.created
    due = request.waiting_until
    if request.status == Status.WAITING and due and due <= now:
        return due
    return None


def requests_ahead(request: GenerationRequest, now: datetime | None = None) -> int | None:
    """How many requests of any team became ready for a worker before this one and are
    still waiting for one; None when this request is not waiting for a worker."""
    return requests_ahead_of([request], now).get(request.pk)


def requests_ahead_of(requests, now: datetime | None = None) -> dict:
    """requests_ahead() of each of `requests` waiting for a worker, by pk, in one query
    whatever their number (a gallery page of queued cards asks once, not once a card):
    one count per request over the ready rows, each with its own FILTER."""
    now = now or timezone.now()
    mine = {r.pk: at for r in requests if (at := ready_since(r, now)) is not None}
    if not mine:
        return {}
    ready_at = Case(
        When(status=Status.WAITING, then=F("waiting_until")),
        default=Coalesce(F("handed_over"), F("created")),
        output_field=DateTimeField(),
    )
    ready = GenerationRequest.objects.filter(
        Q(status=Status.QUEUED) | Q(status=Status.WAITING, waiting_until__lte=now)
    ).annotate(ready_at=ready_at)
    # The request itself never counts (its row may have moved since it was read).
    counts = ready.aggregate(
        **{
            f"ahead_{i}": Count(
                "pk", filter=(Q(ready_at__lt=at) | Q(ready_at=at, id__lt=pk)) & ~Q(pk=pk)
            )
            for i, (pk, at) in enumerate(mine.items())
        }
    )
    return {pk: counts[f"ahead_{i}"] for i, pk in enumerate(mine)}


def _attempt_counts(requests) -> dict:
    """The attempt rows of each active request of `requests`, by pk, in one query."""
    active = [r.pk for r in requests if not r.is_final]
    if not active:
        return {}
    rows = (
        Attempt.objects.filter(request__in=active)
        .values_list("request")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return dict(rows)


def status_views(requests, now: datetime | None = None) -> dict:
    """status_view() of each of `requests`, by pk, in two queries whatever their number
    (the gallery's page): their attempts and their places in the queue, counted as sets."""
    now = now or timezone.now()
    attempts = _attempt_counts(requests)
    ahead = requests_ahead_of(requests, now)
    return {
        r.pk: status_view(
            r,
            attempts=r.attempt_count if r.is_final else attempts.get(r.pk, 0),
            now=now,
            ahead=ahead.get(r.pk),
        )
        for r in requests
    }


def when(moment: datetime, now: datetime) -> str:
    """A time ahead as a person reads it, in the current time zone: "at 08:00:00" today,
    "tomorrow at 08:00:00", "on 6 Mar 2026 at 08:00:00" later (a retry can wait for a
    daily quota's reset, hours away and past midnight)."""
    at, today = timezone.localtime(moment), timezone.localtime(now).date()
    if at.date() == today:
        return f"at {at:%H:%M:%S}"
    if at.date() == today + timedelta(days=1):
        return f"tomorrow at {at:%H:%M:%S}"
    return f"on {at.day} {at:%b %Y} at {at:%H:%M:%S}"


def _worker_wait(ahead: int) -> str:
    if ahead == 0:
        return "waiting for a free worker, next in line"
    return f"waiting for a free worker, {ahead} ahead of you"


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text.endswith((".", "…", "!", "?")) else text + "."


def usd(amount) -> str:
    """$0.134 rather than $0.1340, and at least cents: $1.00."""
    value = Decimal(amount).normalize()
    if -value.as_tuple().exponent < 2:
        value = value.quantize(Decimal("0.01"))
    return f"${value}"


def _cost(request: GenerationRequest) -> str:
    if request.status == Status.SUCCEEDED and request.cost_usd is not None:
        return usd(request.cost_usd)
    if request.quota_state == QuotaState.RESERVED:
        return f"nothing yet ({usd(request.reserved_usd)} reserved until it is done)"
    if request.quota_state == QuotaState.REFUNDED:
        return "nothing (the reservation was refunded)"
    return "nothing charged"


_COUNT = object()  # status_view(ahead=…) not given: counted here when needed


def status_view(
    request: GenerationRequest,
    attempts: int | None = None,
    now: datetime | None = None,
    ahead=_COUNT,
) -> StatusView:
    """The view of `request` now. `attempts` is the number of attempt rows the caller
    shows (the detail page's timeline); without it they are counted here, so the count
    always matches the timeline rather than a counter written a moment apart. `ahead`:
    its requests_ahead() when the caller counted it (status_views()), else counted here."""
    now = now or timezone.now()
    queue_place = ahead
    if attempts is None:
        # A finished request wrote its last attempt before it ended; an active one may be
        # between writing its counter and its attempt row, so its rows are counted.
        attempts = request.attempt_count if request.is_final else request.attempts.count()
    status = request.status
    model = request.current_model_name
    first = request.chain[0] if request.chain else ""
    falling_back = request.is_falling_back
    reason = _sentence(request.status_reason)
    label = request.get_status_display()
    ahead = None
    waiting_until = None

    def place() -> int | None:
        return requests_ahead(request, now) if queue_place is _COUNT else queue_place

    if request.cancel_requested and request.is_active:
        label = "Canceling"
        if status == Status.RUNNING:
            text = (
                f"Canceling: waiting for {model} to answer the call already made. If it "
                "returns an image, you get it and it is charged; nothing more is tried."
            )
        else:
            text = "Canceling…"
    elif status == Status.QUEUED:
        ahead = place()
        if falling_back:
            why = _sentence(request.fallback_reason) or f"Falling back to {model}."
            text = f"Falling back: {why} Queued for {model}, {_worker_wait(ahead)}."
        else:
            # After a retry decision the reason says why it runs again.
            text = f"Queued for {model}: {_worker_wait(ahead)}. {reason}".strip()
    elif status == Status.RUNNING:
        text = f"Running on {model}."
        if falling_back:
            first_name = GenerationRequest.model_name(first)
            why = f": {_sentence(request.fallback_reason)}" if request.fallback_reason else "."
            text = f"Running on {model}, after falling back from {first_name}{why}"
    elif status == Status.WAITING:
        # A first call can wait too (for a booked quota slot, or for a model that is down
        # while a deadline allows it): "retry" only once something was tried.
        step = "retry of" if attempts else "call to"
        if not attempts:
            label = "Waiting"
        if request.waiting_until and request.waiting_until > now:
            waiting_until = request.waiting_until
            verb = "retry" if attempts else "call"
            text = f"Waiting to {verb} {model} {when(waiting_until, now)}. {reason}".strip()
        else:
            # The step is due but every worker is busy: say so, never a time in the past.
            ahead = place()
            text = f"The {step} {model} is due, {_worker_wait(ahead)}. {reason}".strip()
    elif status == Status.SCHEDULED:
        if request.waiting_until and request.waiting_until > now:
            waiting_until = request.waiting_until
        text = reason or "Scheduled."
    elif status == Status.BATCHED:
        text = reason or f"In a batch for {model}."
    elif status == Status.SUCCEEDED and request.served_how:
        text = f"Done: {request.served_how}."
        if request.left_batch_reason:
            text += f" {_sentence(request.left_batch_reason)}"
    elif status == Status.SUCCEEDED:
        text = f"Done by {request.served_model_name}"
        if request.fell_back:
            first_name = GenerationRequest.model_name(first) if first else "the first model"
            because = request.fallback_reason.rstrip(".")
            text += f", after falling back from {first_name}"
            text += f" because {because}" if because else ""
        text += "."
        if request.cancel_requested:
            text += (
                " You asked to cancel while its call was already made: the image it "
                "returned is yours, and charged."
            )
    elif status == Status.FAILED:
        text = f"Failed. {request.error_message}".strip()
    else:
        text = request.error_message or "Canceled."

    return StatusView(
        status=status,
        label=label,
        text=text,
        final=request.is_final,
        cancelable=request.is_active and not request.cancel_requested,
        falling_back=falling_back,
        ahead=ahead,
        waiting_until=waiting_until,
        attempts=attempts,
        cost=_cost(request),
        served_model=request.served_model_name,
        fell_back=request.fell_back,
        fallback_reason=request.fallback_reason,
        served_how=request.served_how if status == Status.SUCCEEDED else "",
    )


def status_text(request: GenerationRequest) -> str:
    """One line saying where the request stands, what it waits for and why."""
    return status_view(request).text


def status_dict(request: GenerationRequest) -> dict:
    """What the page's live status shows; polled by static/js/generator.js."""
    return status_view(request).as_dict(request)


def queue_position(request: GenerationRequest) -> int | None:
    """1 for the next request a free worker takes, counting every team's requests that
    became ready before this one; None when it is not waiting for a worker."""
    ahead = requests_ahead(request)
    return None if ahead is None else ahead + 1
