"""Admission: validate a submission, reserve quota, create the requests, queue them.

The single way in for the web form and the API. Everything happens in one transaction,
the quota counters last (quotas.services.reserving); the jobs are queued only after it
commits, so a worker never looks for a row that is not there yet, and a rolled-back
submission queues nothing.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import uuid4

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from config import statements
from generator import economy, queue
from generator.images import store_references
from generator.models import (
    FIRST_STEP,
    GenerationRequest,
    QuotaState,
    ReferenceImage,
    Route,
    Status,
)
from generator.reasons import duration_words
from generator.resilience.catalogue import ASPECT_RATIOS, get_catalogue
from generator.resilience.strategies import DEFAULT_STRATEGY, STRATEGIES, StrategyName
from generator.upstream.availability import is_configured
from quotas.errors import QuotaExceeded
from quotas.services import reserving

log = logging.getLogger("steadyshot.admission")

PROMPT_MAX_CHARS = 4000
MAX_COUNT = 4
# What a bad prompt or count is told, on the API and the prompt form alike.
PROMPT_MISSING = "Write a prompt: describe the image you want."
PROMPT_TOO_LONG = "The prompt is {length} characters long; the limit is {limit}."
COUNT_OUT_OF_RANGE = f"Ask for between 1 and {MAX_COUNT} images."
# The latest "deliver by": quality-first retries its first model until then and holds its
# reservation meanwhile, so a slip of the year must not keep a request open for decades.
MAX_DEADLINE = timedelta(days=7)


class AdmissionError(ValueError):
    """A submission that cannot be accepted; `field` names the input at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass
class Submission:
    prompt: str
    strategy: str = DEFAULT_STRATEGY
    aspect_ratio: str = "1:1"
    image_size: str = "1K"
    count: int = 1
    deadline: datetime | None = None
    references: list[ReferenceImage] = field(default_factory=list)
    # Checked uploads, (bytes, mime): stored in the admission's transaction and removed
    # again if it is refused, so a refusal leaves no file (issue 13, item 8).
    uploads: list[tuple[bytes, str]] = field(default_factory=list)
    remix_of: GenerationRequest | None = None

    def reference_count(self) -> int:
        return len(self.references) + len(self.uploads)


def plan_chain(strategy: str) -> list[str]:
    return [m.id for m in get_catalogue().chain(strategy, available=is_configured)]


def unstorable(text: str) -> bool:
    """NUL (Postgres text cannot hold it) or a lone surrogate (not encodable as UTF-8): a
    JSON body can carry either, a browser's form neither."""
    return "\x00" in text or any("\ud800" <= c <= "\udfff" for c in text)


def validate(submission: Submission) -> None:
    prompt = submission.prompt.strip()
    if not prompt:
        raise AdmissionError("prompt", PROMPT_MISSING)
    if unstorable(prompt):
        raise AdmissionError(
            "prompt",
            "The prompt contains a NUL character or a lone UTF-16 surrogate, which "
            "cannot be stored; send plain UTF-8 text.",
        )
    if len(prompt) > PROMPT_MAX_CHARS:
        raise AdmissionError(
            "prompt",
            PROMPT_TOO_LONG.format(length=len(prompt), limit=PROMPT_MAX_CHARS),
        )
    if submission.strategy not in STRATEGIES:
        raise AdmissionError("strategy", f"Choose a strategy: {' or '.join(STRATEGIES)}.")
    if submission.aspect_ratio not in ASPECT_RATIOS:
        raise AdmissionError(
            "aspect_ratio", f"Choose an aspect ratio among {', '.join(ASPECT_RATIOS)}."
        )
    primary = get_catalogue().primary(submission.strategy, available=is_configured)
    if submission.image_size not in primary.sizes:
        raise AdmissionError(
            "image_size",
            f"{primary.display_name} delivers {', '.join(primary.sizes)}; "
            f"choose one of those sizes.",
        )
    if not 1 <= submission.count <= MAX_COUNT:
        raise AdmissionError("count", COUNT_OUT_OF_RANGE)
    if submission.reference_count() > primary.max_reference_images:
        raise AdmissionError(
            "references",
            f"{primary.display_name} takes at most {primary.max_reference_images} "
            f"reference images; you gave {submission.reference_count()}.",
        )
    if submission.deadline is not None and submission.deadline <= timezone.now():
        raise AdmissionError("deadline", "“Deliver by” must be in the future.")
    if submission.deadline is not None and submission.deadline > timezone.now() + MAX_DEADLINE:
        raise AdmissionError(
            "deadline",
            f"“Deliver by” can be at most {MAX_DEADLINE.days} days from now. Choose an "
            "earlier time, or leave it empty to get the image as soon as it can be made.",
        )
    if submission.strategy == StrategyName.ECONOMY:
        lead = economy.min_lead()
        if submission.deadline is None or submission.deadline < timezone.now() + lead:
            raise AdmissionError(
                "deadline",
                f"Economy needs a “Deliver by” at least "
                f"{duration_words(lead.total_seconds())} from now: "
                "that is what Batch mode needs to deliver at half price. Set a later "
                "time, or choose quality-first for an image now.",
            )


def default_patience() -> timedelta:
    """How long quality-first waits for its first model when a request has no "deliver
    by" (as configured: the product's real time, whatever TIME_SCALE drills run at)."""
    return timedelta(seconds=settings.POLICY_QUALITY_PATIENCE_S)


def wait_up_to(submission: Submission, now: datetime) -> datetime | None:
    """Until when a quality-first request waits for and retries its first model: its
    deliver-by time, or the default patience from now (scaled like every policy
    duration). Stability-first never waits long for any model: None."""
    if submission.strategy != StrategyName.QUALITY_FIRST:
        return None
    if submission.deadline is not None:
        return submission.deadline
    return now + default_patience() * settings.TIME_SCALE


def submit(user, team, submission: Submission) -> list[GenerationRequest]:
    """Accept the submission as `count` requests of one batch, or raise AdmissionError /
    QuotaExceeded having created and queued nothing.

    A connection to the database lost on the way (a failover, a restart, a terminated
    session) is not the person's problem: the admission runs again once on a new
    connection, unless the lost round trip was the commit and it went through (its
    rows are there), in which case what was committed is returned and queued. The
    uploads the lost try wrote are removed before the next try writes them again."""
    validate(submission)
    catalogue = get_catalogue()
    chain = plan_chain(submission.strategy)
    # The worst case is the most expensive model the chain could end on.
    worst = max(catalogue[m].price(submission.image_size) for m in chain)
    batch = uuid4()
    first_try: list[ReferenceImage] = []
    try:
        return _admit(user, team, submission, chain, worst, batch, first_try)
    except (OperationalError, InterfaceError):
        if connection.in_atomic_block:  # an outer transaction: it is lost as a whole
            raise
        connection.close()
        committed = list(GenerationRequest.objects.filter(batch=batch).order_by("created", "id"))
        if committed:
            log.warning("batch=%s: connection lost after the commit; queuing it", batch)
            for request in committed:
                if request.status == Status.QUEUED:
                    queue.enqueue(request)
            return committed
        log.warning("batch=%s: connection lost before the commit; admitting again", batch)
        _remove_files(first_try)  # their rows were rolled back
        return _admit(user, team, submission, chain, worst, batch, [])


def _admit(user, team, submission, chain, worst, batch, stored) -> list[GenerationRequest]:
    """The admission's transaction; the uploads it writes are added to `stored`."""
    # One time for the requests and their reservation: quotas counts them for its day.
    admitted = timezone.now()
    # Economy: the Batch price, and a wait in the database instead of a job now.
    plan = economy.Plan(Route.DIRECT, Status.QUEUED, None, "")
    if submission.strategy == StrategyName.ECONOMY:
        worst = economy.price(chain, submission.image_size)
        plan = economy.plan(chain, submission.deadline, admitted)
    try:
        with reserving() as reservation:
            requests = []
            for _ in range(submission.count):
                request = statements.create(
                    GenerationRequest,
                    GenerationRequest.objects.db,
                    user=user,
                    team=team,
                    batch=batch,
                    remix_of=submission.remix_of,
                    prompt=submission.prompt.strip(),
                    strategy=submission.strategy,
                    aspect_ratio=submission.aspect_ratio,
                    image_size=submission.image_size,
                    reference_count=submission.reference_count(),
                    deadline=submission.deadline,
                    wait_up_to=wait_up_to(submission, admitted),
                    chain=chain,
                    route=plan.route,
                    status=plan.status,
                    waiting_until=plan.waiting_until,
                    status_reason=plan.reason,
                    current_model=chain[0],
                    step=FIRST_STEP,
                    handed_over=admitted,
                    quota_state=QuotaState.RESERVED,
                    reserved_usd=worst,
                    created=admitted,
                )
                requests.append(request)
            # The ledger row now; the team's counters (if it has limits) move when the
            # block ends, after every other write, in the commit's own round trip: they
            # are locked for as short a time as can be (quotas.services.reserving).
            reservation.reserve(team, user, images=submission.count, cost_usd_each=worst,
                                at=admitted)  # fmt: skip
            # Uploads are written before the counters move, not while they are locked; a
            # refusal removes them below. Should the commit fail otherwise, the files left
            # are swept later (retention.sweep_orphan_files).
            stored += store_references(user, team, submission.uploads)
            references = submission.references + stored
            if references:
                for request in requests:
                    request.references.set(references)
            for request in requests:
                if request.status == Status.QUEUED:
                    transaction.on_commit(lambda r=request: queue.enqueue(r))
    except QuotaExceeded:
        # Refused: no file stays behind (issue 13, item 8).
        _remove_files(stored)
        raise
    return requests


def _remove_files(references: list[ReferenceImage]) -> None:
    """Delete the files of uploads whose rows were never committed. One that cannot be
    deleted now is left to the hourly sweep of orphan files (retention.py)."""
    for reference in references:
        try:
            reference.file.storage.delete(reference.file.name)
        except Exception:
            log.exception("upload %s not removed; the orphan sweep will", reference.file.name)
