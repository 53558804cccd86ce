"""Requests, attempts and images: the source of truth for everything the product does.

A GenerationRequest row is created at admission and always ends succeeded, failed or
canceled. Workers claim it with a filtered UPDATE on (status, step); each upstream call
leaves an Attempt; a success leaves an Image written to storage before the request is
marked succeeded.
"""

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connections, models, transaction
from django.db.models import F, Q
from django.db.models.functions import Upper
from django.utils import timezone

from config import statements
from generator import queue
from generator.reasons import duration_words
from generator.resilience.catalogue import ASPECT_RATIOS, IMAGE_SIZES
from generator.resilience.strategies import StrategyName
from generator.resilience.taxonomy import Outcome
from quotas import services as quota_services


class Strategy(models.TextChoices):
    QUALITY_FIRST = StrategyName.QUALITY_FIRST.value, "Quality first"
    STABILITY_FIRST = StrategyName.STABILITY_FIRST.value, "Stability first"
    ECONOMY = StrategyName.ECONOMY.value, "Economy"


STRATEGY_HELP = {
    # {patience}: the default wait limit in words (generator.forms fills it in).
    Strategy.QUALITY_FIRST: "Best model first (Nano Banana Pro): waits for it and retries it "
    "for up to {patience} (or until “Deliver by”), then falls back to Nano Banana so an "
    "image still arrives in time.",
    Strategy.STABILITY_FIRST: "Steadiest model first (Nano Banana); never waits long, "
    "so images arrive sooner at slightly lower quality.",
    Strategy.ECONOMY: "Half price, by a “Deliver by” at least a few hours away: Nano Banana "
    "Pro through Gemini's Batch mode (or at the calmest hours before it). If the batch "
    "cannot deliver in time, it is asked directly.",
}


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting to retry"
    # Economy requests wait in the database, not in Redis: until they are put in a
    # batch, or until their off-peak hour (generator/batching.py moves them on).
    SCHEDULED = "scheduled", "Scheduled"
    BATCHED = "batched", "In a batch"
    SUCCEEDED = "succeeded", "Done"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING, Status.WAITING, Status.SCHEDULED, Status.BATCHED)
# Held by no worker and no job: a cancel ends the request at once.
OFF_WORKER_STATUSES = (Status.QUEUED, Status.WAITING, Status.SCHEDULED, Status.BATCHED)
FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)


class Route(models.TextChoices):
    """How a request is (to be) served. An economy request starts on "batch" or
    "off_peak" and moves to "direct" if that way cannot deliver in time."""

    DIRECT = "direct", "Directly"
    BATCH = "batch", "Batch"
    OFF_PEAK = "off_peak", "Off-peak"


class QuotaState(models.TextChoices):
    NONE = "none", "Not reserved"
    RESERVED = "reserved", "Reserved"
    CHARGED = "charged", "Charged"
    REFUNDED = "refunded", "Refunded"


OUTCOME_CHOICES = [(o.value, o.label) for o in Outcome]


def _team_path(prefix, instance, filename):
    # Per team and month, so a team's files can be listed, moved or deleted together.
    return f"{prefix}/{instance.team_id}/{timezone.now():%Y/%m}/{filename}"


def reference_path(instance, filename):
    return _team_path("references", instance, filename)


def image_path(instance, filename):
    return _team_path("images", instance, filename)


def thumbnail_path(instance, filename):
    return _team_path("thumbnails", instance, filename)


class ReferenceImage(models.Model):
    """An image uploaded to be edited. Shared by the requests of a batch and by re-runs."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="+")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    file = models.FileField(upload_to=reference_path, max_length=255)
    mime = models.CharField(max_length=40)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    bytes = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    created = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"{self.width}×{self.height} {self.mime}"


# A request's step at admission; every hand-over adds one.
FIRST_STEP = 1
# `claimed_by` of a running step whose call waits in Redis for a caller process.
CALLS_HOLDER = "calls"


@dataclass(frozen=True)
class Expect:
    """What a writer believes about a request's row. A transition writes only while it is
    still true (a filtered UPDATE), so two workers, a worker and the reconciler, or a
    worker and a cancel can never both move the same request on."""

    statuses: tuple[str, ...]
    step: int | None = None
    worker: str | None = None

    @classmethod
    def held(cls, worker: str, step: int) -> "Expect":
        """A worker's step: running, on this step, claimed by this worker."""
        return cls((Status.RUNNING,), step, worker)

    @classmethod
    def seen(cls, status: str, step: int) -> "Expect":
        """The reconciler: the state and step it read, whoever holds the row."""
        return cls((status,), step)

    @classmethod
    def off_worker(cls) -> "Expect":
        """Queued, waiting, scheduled or in a batch: no worker holds the row (a cancel
        ends it at once)."""
        return cls(OFF_WORKER_STATUSES)

    def where(self) -> dict:
        """The same conditions for config.statements: a tuple is an IN."""
        where: dict = {"status": tuple(self.statuses)}
        if self.step is not None:
            where["step"] = self.step
        if self.worker is not None:
            where["claimed_by"] = self.worker
        return where

    def filter(self) -> dict:
        """The same conditions for a queryset's filter()."""
        where = self.where()
        where["status__in"] = list(where.pop("status"))
        return where


@dataclass
class Page:
    """One keyset page, newest first: `next_before` is the `before` of the next page
    (None on the last one); `anchor_found` is False when `before` named no row."""

    rows: list
    next_before: uuid.UUID | None
    anchor_found: bool = True


def _prompt_contains(rows, text: str):
    """Requests whose prompt holds `text`, whatever the case. On Postgres `icontains`
    (UPPER(prompt) LIKE UPPER(%s)), served by the trigram index of migration 0007. On
    SQLite, whose LIKE folds ASCII letters alone, both sides are put in upper case first
    (SQLite's UPPER is Python's there: generator/apps.py)."""
    if connections[rows.db].vendor != "sqlite":
        return rows.filter(prompt__icontains=text)
    return rows.alias(prompt_upper=Upper("prompt")).filter(prompt_upper__contains=text.upper())


class GenerationRequestQuerySet(models.QuerySet):
    def visible_to(self, user):
        """The requests `user` may see: their teams' requests that were not deleted. One
        membership per team and user, so the join never repeats a row."""
        return self.filter(team__memberships__user=user, deleted=None)

    def filtered(self, user, filters: dict):
        """The gallery's filters (generator.forms.GalleryFilterForm.values()), for `user`."""
        rows = self
        scope = filters.get("scope") or "team"
        if scope == "mine":
            rows = rows.filter(user=user)
        elif scope == "favourites":
            rows = rows.filter(favourited_by=user)
        if "member" in filters:
            rows = rows.filter(user_id=filters["member"])
        if "model" in filters:
            rows = rows.filter(served_model=filters["model"])
        if "strategy" in filters:
            rows = rows.filter(strategy=filters["strategy"])
        if "fell_back" in filters:
            rows = rows.filter(fell_back=filters["fell_back"] == "yes", status=Status.SUCCEEDED)
        if "status" in filters:
            rows = rows.filter(status=filters["status"])
        if "since" in filters:
            rows = rows.filter(created__gte=_day_start(filters["since"]))
        if "until" in filters and filters["until"] < date.max:  # no day after the last
            rows = rows.filter(created__lt=_day_start(filters["until"] + timedelta(days=1)))
        if "q" in filters:
            rows = _prompt_contains(rows, filters["q"])
        if "batch" in filters:
            rows = rows.filter(batch=filters["batch"])
        return rows

    def page(self, before=None, size: int = 24, *, anchors=None) -> Page:
        """Newest first, `size` rows after the row `before` (an id, or None for the first
        page). Keyset, not offset: served by the (team|user, -created, -id) indexes, and
        a page never repeats or skips a row while new requests arrive. `anchors`: where
        `before` is looked up (default: these rows); a team's rows, deleted ones included,
        keep the place of a card deleted or changed since its page was shown."""
        rows, found = self, True
        if before is not None:
            where = self if anchors is None else anchors
            anchor = where.filter(pk=before).values("created", "id").first()
            found = anchor is not None
            if found:
                rows = rows.filter(
                    Q(created__lt=anchor["created"])
                    | Q(created=anchor["created"], id__lt=anchor["id"])
                )
        batch = list(rows.order_by("-created", "-id")[: size + 1])
        more = len(batch) > size
        batch = batch[:size]
        return Page(batch, batch[-1].pk if more else None, found)

    def claim(self, pk, step: int, worker: str) -> "GenerationRequest | None":
        """Take the request for one step: only if it is queued or waiting on exactly that
        step, so a duplicate job, a stale one (from before a cancel or a hand-over by
        the reconciler) or a second worker does nothing. Returns the row as claimed (read
        by the claim itself), or None."""
        now = timezone.now()
        return statements.update_returning(
            self.model,
            self.db,
            set={
                "status": Status.RUNNING,
                "claimed_by": worker,
                "lease_until": now + timedelta(seconds=settings.LEASE_SECONDS),
                "waiting_until": None,
            },
            keep={"started": now},
            where={"id": pk, "step": step, "status": (Status.QUEUED, Status.WAITING)},
        )

    def put_in_batch(self, ids, batch, reason: str) -> int:
        """Scheduled economy requests into `batch`: only those still scheduled and in no
        batch, so two batchers never put one request into two batches (and a request
        canceled meanwhile stays canceled). Returns how many went in."""
        return self.filter(pk__in=ids, status=Status.SCHEDULED, upstream_batch=None).update(
            status=Status.BATCHED, upstream_batch=batch, status_reason=reason[:300]
        )

    def tell_batched(self, batch, reason: str) -> int:
        """What the pages say about the requests still in `batch` (sent, running…)."""
        return self.filter(upstream_batch=batch, status=Status.BATCHED).update(
            status_reason=reason[:300]
        )

    def pass_claim(self, pk, step: int, holder: str, to: str) -> "GenerationRequest | None":
        """Hand a running step from `holder` to `to` with a fresh lease, and return the
        row as it is then (None if `holder` no longer holds that step): a call from the
        queue of calls (holder CALLS_HOLDER) to the caller that makes it, then its answer
        from that caller to itself (`holder == to`), which records it under the renewed
        lease (generator.jobs.record). A call or an answer the reconciler took back
        meanwhile (its lease ran out) is dropped by whoever comes late."""
        lease = timedelta(seconds=settings.LEASE_SECONDS)
        return statements.update_returning(
            self.model,
            self.db,
            set={"claimed_by": to, "lease_until": timezone.now() + lease},
            where={"id": pk, "step": step, "status": Status.RUNNING, "claimed_by": holder},
        )

    def renew_leases(self, pks, worker: str) -> int:
        """A caller's heartbeat: one UPDATE for every call it has in flight."""
        lease = timedelta(seconds=settings.LEASE_SECONDS)
        return self.filter(pk__in=pks, status=Status.RUNNING, claimed_by=worker).update(
            lease_until=timezone.now() + lease
        )


def _day_start(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, datetime.min.time()))


class GenerationRequest(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generation_requests"
    )
    team = models.ForeignKey(
        "accounts.Team", on_delete=models.CASCADE, related_name="generation_requests"
    )
    # Requests submitted together ("count" 1-4) share a batch id.
    batch = models.UUIDField(default=uuid.uuid4, db_index=True)
    remix_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    # What was asked for.
    prompt = models.TextField()
    strategy = models.CharField(max_length=20, choices=Strategy.choices)
    aspect_ratio = models.CharField(
        max_length=5, choices=[(r, r) for r in ASPECT_RATIOS], default="1:1"
    )
    image_size = models.CharField(
        max_length=2, choices=[(s, s) for s in IMAGE_SIZES], default="1K"
    )
    references = models.ManyToManyField(ReferenceImage, blank=True, related_name="requests")
    # How many references it was admitted with: a step of a request without any (most)
    # reads none, a query saved on every call.
    reference_count = models.PositiveSmallIntegerField(default=0)
    deadline = models.DateTimeField(null=True, blank=True, help_text="Deliver by")
    # Quality-first: until when the first model (Nano Banana Pro) is waited for and
    # retried: the deadline when given, else submission plus the default patience.
    wait_up_to = models.DateTimeField(null=True, blank=True, help_text="Wait up to")
    chain = models.JSONField(default=list, help_text="The model ids planned, in order")
    route = models.CharField(max_length=10, choices=Route.choices, default=Route.DIRECT)
    # The upstream batch that carries (or carried) an economy request; kept after it
    # left it, so the page can say which batch expired or failed.
    upstream_batch = models.ForeignKey(
        "UpstreamBatch", null=True, blank=True, on_delete=models.SET_NULL, related_name="requests"
    )
    # Why an economy request left Batch mode for the normal chain ("" if it did not).
    left_batch_reason = models.CharField(max_length=300, blank=True)

    # Where it stands.
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    # Bumped at every hand-over to the queue; a job carries the step it was enqueued for
    # and claims the row only if the step still matches, so a duplicate or stale job (a
    # reconciler re-enqueue racing the original) does nothing.
    step = models.PositiveIntegerField(default=0)
    current_model = models.CharField(max_length=80, blank=True)
    waiting_until = models.DateTimeField(null=True, blank=True)
    status_reason = models.CharField(max_length=300, blank=True)
    # The worker that holds the row while running, and until when (a dead worker's lease
    # expires and the reconciler takes the request back).
    claimed_by = models.CharField(max_length=120, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # When the current step was handed to the queue: the reconciler leaves young hand-overs
    # alone (their job may not be in Redis yet) and re-enqueues old ones whose job vanished.
    handed_over = models.DateTimeField(null=True, blank=True)
    # How often the reconciler took the request back from a dead worker; past a limit the
    # request fails instead of looping on a step that keeps killing workers.
    recoveries = models.PositiveSmallIntegerField(default=0)

    # What was delivered.
    served_model = models.CharField(max_length=80, blank=True, db_index=True)
    fell_back = models.BooleanField(default=False)
    fallback_reason = models.CharField(max_length=300, blank=True)
    delivered_width = models.PositiveIntegerField(null=True, blank=True)
    delivered_height = models.PositiveIntegerField(null=True, blank=True)
    attempt_count = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    error_code = models.CharField(max_length=30, blank=True)
    error_message = models.TextField(blank=True)

    # Quota: the worst case is reserved at admission, then charged or refunded once.
    quota_state = models.CharField(
        max_length=10, choices=QuotaState.choices, default=QuotaState.NONE
    )
    reserved_usd = models.DecimalField(max_digits=10, decimal_places=4, default=0)

    # Gallery.
    favourited_by = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="favourite_requests"
    )
    deleted = models.DateTimeField(null=True, blank=True)

    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    objects = GenerationRequestQuerySet.as_manager()

    class Meta:
        indexes = [
            # Gallery pages: a team's (or a member's) requests, newest first, keyset paginated.
            models.Index(fields=["team", "-created", "-id"], name="req_team_created"),
            models.Index(fields=["user", "-created", "-id"], name="req_user_created"),
            # Monitoring windows and the reconciler's scan of unfinished requests.
            models.Index(fields=["created"], name="req_created"),
            models.Index(fields=["status", "lease_until"], name="req_status_lease"),
            # Monitoring: requests that finished since the rollups' cursor (the raw tail
            # of every window, alert and scrape).
            models.Index(fields=["finished"], name="req_finished"),
            # The batcher's scan of scheduled requests that are due.
            models.Index(fields=["status", "waiting_until"], name="req_status_waiting"),
        ]

    def __str__(self):
        return f"{self.prompt[:40]} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def is_falling_back(self) -> bool:
        """Active on a model after the first of its chain (`fell_back` says it of an image
        delivered by one)."""
        first = self.chain[0] if self.chain else ""
        return bool(self.is_active and first and self.current_model not in ("", first))

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def wait_limit_text(self) -> str:
        """How long the first model is waited for, in words ("3.5 min"); "" if not."""
        if self.wait_up_to is None:
            return ""
        return duration_words((self.wait_up_to - self.created).total_seconds())

    @property
    def time_to_image(self) -> timedelta | None:
        if self.status == Status.SUCCEEDED and self.finished:
            return self.finished - self.created
        return None

    @property
    def time_to_image_words(self) -> str:
        """ "18.4 s" for a direct request, "11 h" for one that waited for Batch mode."""
        took = self.time_to_image
        if took is None:
            return ""
        seconds = took.total_seconds()
        return f"{seconds:.1f} s" if seconds < 60 else duration_words(seconds)

    # --- access -------------------------------------------------------------------------

    # What the page and the API answer anyone else (with 403).
    CHANGE_REFUSED = (
        "Only the member who asked for this image, or an owner of the team, may change it."
    )

    def may_be_changed_by(self, user) -> bool:
        """Cancel, delete, describe: the member who asked for it, or an owner of its team."""
        if self.user_id == user.pk:
            return True
        from accounts.models import Membership

        return Membership.objects.filter(
            team_id=self.team_id, user=user, role=Membership.Role.OWNER
        ).exists()

    # --- what a person reads ------------------------------------------------------------

    @staticmethod
    def model_name(model_id: str) -> str:
        """The display name of a model id (the id itself for a model no longer listed)."""
        from generator.resilience.catalogue import get_catalogue

        models = get_catalogue().models
        return models[model_id].display_name if model_id in models else model_id

    @property
    def served_model_name(self) -> str:
        return self.model_name(self.served_model) if self.served_model else ""

    @property
    def current_model_name(self) -> str:
        return self.model_name(self.current_model) if self.current_model else ""

    @property
    def ratio_class(self) -> str:
        """A CSS class per aspect ratio, so a card keeps its shape before its thumbnail
        loads (the CSP forbids inline styles)."""
        return "ratio-" + self.aspect_ratio.replace(":", "x")

    @property
    def image(self) -> "Image | None":
        # images.all() rather than first(): uses the gallery's prefetch.
        found = list(self.images.all())
        return found[0] if found else None

    @property
    def served_how(self) -> str:
        """How an economy request was served, for the gallery and the detail page:
        "Batch, Nano Banana Pro, 11 h" (or "Off-peak, …", or "Directly, …" when it left
        Batch mode); "" for the other strategies and until it is delivered."""
        if (
            self.strategy != Strategy.ECONOMY
            or self.status != Status.SUCCEEDED
            or not self.finished
        ):
            return ""
        took = duration_words((self.finished - self.created).total_seconds())
        return f"{Route(self.route).label}, {self.served_model_name}, {took}"

    @property
    def chain_names(self) -> list[str]:
        return [self.model_name(m) for m in self.chain]

    # --- changes ------------------------------------------------------------------------
    # The request's state moves only through these transitions; each is one filtered
    # UPDATE on what its writer expects (Expect), and the end state (succeeded, failed,
    # canceled) is written by finish() alone, together with the quota's charge or refund.

    def _move(self, expect: Expect, **fields) -> bool:
        if any(hasattr(value, "resolve_expression") for value in fields.values()):
            moved = GenerationRequest.objects.filter(pk=self.pk, **expect.filter())
            return bool(moved.update(**fields))
        # Plain values (a step's hand-over to a caller, a request's end): SQL written once.
        return bool(
            statements.update(
                GenerationRequest,
                GenerationRequest.objects.db,
                set=fields,
                where={"id": self.pk, **expect.where()},
            )
        )

    def send_to_caller(self, expect: Expect, model: str, fallback_reason: str = "") -> bool:
        """The step calls `model` now: the page says "Running on …" and the claim passes
        to the queue of calls (CALLS_HOLDER) with a fresh lease, until a caller takes
        it (generator/caller). No caller within the lease: the reconciler takes the
        request back, like a dead worker's."""
        lease = timedelta(seconds=settings.LEASE_SECONDS)
        fields = {
            "current_model": model,
            "status_reason": "",
            "claimed_by": CALLS_HOLDER,
            "lease_until": timezone.now() + lease,
        }
        if fallback_reason:
            fields["fallback_reason"] = fallback_reason[:300]
        if not self._move(expect, **fields):
            return False
        for name, value in fields.items():
            setattr(self, name, value)
        return True

    def hand_over(
        self,
        expect: Expect,
        *,
        model: str,
        reason: str,
        at: datetime | None = None,
        fallback_reason: str = "",
        **extra,
    ) -> bool:
        """Give the request back to the queue for its next step: now (queued) or at `at`
        (waiting, moved to the queue by the workers' scheduler). The job is enqueued after
        the transaction commits, so a worker never runs a step the database does not
        hold yet; a hand-over that finds the row moved on enqueues nothing."""
        fields = {
            "status": Status.WAITING if at else Status.QUEUED,
            "waiting_until": at,
            "current_model": model,
            "status_reason": reason[:300],
            "step": F("step") + 1,
            "claimed_by": "",
            "lease_until": None,
            "handed_over": timezone.now(),
            **extra,
        }
        if fallback_reason:
            fields["fallback_reason"] = fallback_reason[:300]
        with transaction.atomic():
            if not self._move(expect, **fields):
                return False
            self.step = expect.step + 1 if expect.step is not None else self.step + 1
            self.status = fields["status"]
            transaction.on_commit(lambda: queue.enqueue(self, at=at))
        return True

    def finish(
        self,
        status: str,
        expect: Expect,
        *,
        error_code: str = "",
        error_message: str = "",
        **delivered,
    ) -> bool:
        """End the request once: succeeded (with what was `delivered`: served_model,
        fell_back, cost_usd, sizes, attempt_count), failed or canceled. In the same
        transaction the quota is charged (the served model's price) or refunded, so a
        request never ends with its reservation left open."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"finish() ends a request; {status!r} is not an end state.")
        fields = {
            "status": status,
            "finished": timezone.now(),
            "error_code": error_code,
            "error_message": error_message,
            "status_reason": "",
            "waiting_until": None,
            "lease_until": None,
            **delivered,
        }
        fields.update(self._settled(status, fields.get("cost_usd", self.cost_usd)))
        # No savepoint inside a caller's transaction (a delivery, a cancel): whatever
        # fails here fails the whole of it, and two statements fewer.
        with transaction.atomic(savepoint=False):
            if not self._move(expect, **fields):
                return False
            for name, value in fields.items():
                setattr(self, name, value)
            # The request's first settlement, and its quota_state is in the UPDATE above:
            # the move out of an active status happens once, and only an ended request
            # is ever settled (here, or by the reconciler for one ended before this
            # code). A second settlement would break that; its ledger row is refused
            # and fails the whole transaction rather than end the request twice.
            self._settle_ledger(first=True)
        return True

    def price_to_charge(self, price: Decimal) -> Decimal:
        """What the team pays for an image at `price`: an economy request never more than
        it reserved (its first model's Batch price), whichever way it was served."""
        if self.strategy == Strategy.ECONOMY and self.reserved_usd:
            return min(price, self.reserved_usd)
        return price

    def settle_quota(self) -> bool:
        """Charge the reservation of an ended request that succeeded (at its cost: the
        served model's price) or refund one that failed or was canceled; True if this
        call did it. quotas' ledger makes it exactly-once; quota_state mirrors it here for
        the pages and the reconciler, in the same transaction. finish() settles the
        requests it ends itself; this is the reconciler's, for requests ended without."""
        with transaction.atomic(savepoint=False):  # as in finish()
            done = self._settle_ledger(first=False)
            if done:
                fields = self._settled(self.status, self.cost_usd)
                GenerationRequest.objects.filter(pk=self.pk).update(**fields)
                for name, value in fields.items():
                    setattr(self, name, value)
        return done

    def _settled(self, status: str, cost_usd: Decimal | None) -> dict:
        """The request's fields once settled: charged at its cost (its reservation when
        it has none), or refunded."""
        if status == Status.SUCCEEDED:
            cost = self.reserved_usd if cost_usd is None else cost_usd
            return {"quota_state": QuotaState.CHARGED, "cost_usd": cost}
        return {"quota_state": QuotaState.REFUNDED}

    def _settle_ledger(self, *, first: bool) -> bool:
        if self.status == Status.SUCCEEDED:
            cost = self._settled(self.status, self.cost_usd)["cost_usd"]
            return quota_services.charge(self, cost, model=self.served_model, first=first)
        return quota_services.refund(self, reason=self.error_code, first=first)

    CANCELED_MESSAGE = "Canceled. No further attempts were made."
    # What a running request says between the cancel and its call's answer.
    CANCELING_REASON = (
        "Cancel requested. The call already made cannot be taken back: if it returns an "
        "image, the image is delivered and charged; nothing more is tried."
    )

    def cancel(self, by_user=None) -> bool:
        """Stop the request. One not on a worker right now (queued, waiting) ends at once
        with its quota refunded; a running one is flagged, and ends after the upstream
        answers the call in flight, which cannot be taken back: an error ends it
        canceled, an image is delivered (the upstream bills it) and charged. False when
        the request had already ended. The filtered UPDATEs make it safe against a
        worker claiming the row at the same moment."""
        with transaction.atomic():
            flagged = GenerationRequest.objects.filter(
                pk=self.pk, status__in=ACTIVE_STATUSES
            ).update(cancel_requested=True, status_reason=self.CANCELING_REASON)
            ended = self.finish(
                Status.CANCELED,
                Expect.off_worker(),
                error_code="canceled",
                error_message=self.CANCELED_MESSAGE,
            )
            if ended:
                # A waiting request may hold a booked upstream quota slot: free it for
                # the next request instead of letting it pass unused.
                transaction.on_commit(self._release_slots)
        self.refresh_from_db()
        return bool(flagged)

    def _release_slots(self) -> None:
        from generator.resilience.health import release_slots

        release_slots(str(self.pk), self.chain)

    def soft_delete(self) -> None:
        """Hide the request from every gallery; an active one is canceled first so it
        stops spending quota. Its files are removed DELETED_RETENTION_DAYS later
        (generator/retention.py)."""
        if self.is_active:
            self.cancel()
        GenerationRequest.objects.filter(pk=self.pk, deleted=None).update(deleted=timezone.now())
        self.refresh_from_db()

    def is_favourite_of(self, user) -> bool:
        return self.favourited_by.filter(pk=user.pk).exists()

    def toggle_favourite(self, user) -> bool:
        """Flip the user's favourite mark; returns the new state."""
        if self.is_favourite_of(user):
            self.favourited_by.remove(user)
            return False
        self.favourited_by.add(user)
        return True


# Attempt.provider of a line of a Batch mode batch: one image asked for in a batch,
# counted apart from the calls (its latency is the batch's hours).
BATCH_PROVIDER = "gemini-batch"


class Attempt(models.Model):
    """One call to one upstream model, whatever came of it (or one line of a batch:
    provider BATCH_PROVIDER)."""

    class Decision(models.TextChoices):
        DONE = "done", "Delivered"
        RETRY = "retry", "Retry the same model later"
        DOWNGRADE = "downgrade", "Fall back to the next model"
        GIVE_UP = "give_up", "Give up"
        CANCELED = "canceled", "Canceled by the user"

    request = models.ForeignKey(
        GenerationRequest, on_delete=models.CASCADE, related_name="attempts"
    )
    number = models.PositiveIntegerField()
    model = models.CharField(max_length=80)
    provider = models.CharField(max_length=20)
    started = models.DateTimeField(default=timezone.now)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=OUTCOME_CHOICES)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    quota_id = models.CharField(max_length=200, blank=True)
    quota_scope = models.CharField(max_length=10, blank=True)  # "minute", "day" or ""
    retry_after_ms = models.PositiveIntegerField(null=True, blank=True)
    message = models.CharField(max_length=500, blank=True)
    decision = models.CharField(max_length=10, choices=Decision.choices, blank=True)
    decision_reason = models.CharField(max_length=300, blank=True)
    next_model = models.CharField(max_length=80, blank=True)
    worker = models.CharField(max_length=120, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["request", "number"], name="attempt_unique_number"),
        ]
        indexes = [
            # Monitoring: attempts in a window, per model and outcome.
            models.Index(fields=["started", "model", "outcome"], name="attempt_window"),
        ]

    def __str__(self):
        return f"#{self.number} {self.model}: {self.outcome}"

    @property
    def model_name(self) -> str:
        return GenerationRequest.model_name(self.model)

    @property
    def decision_text(self) -> str:
        """The decision and its reason in one phrase, without saying a word twice
        ("Delivered by Nano Banana", not "Delivered: Delivered by Nano Banana")."""
        label, reason = self.get_decision_display(), self.decision_reason.strip()
        if not reason:
            return label
        if reason.lower().startswith(label.split()[0].lower()):
            return reason
        return f"{label}: {reason}"


class Image(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    request = models.ForeignKey(GenerationRequest, on_delete=models.CASCADE, related_name="images")
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="+")
    file = models.FileField(upload_to=image_path, max_length=255)
    thumbnail = models.FileField(upload_to=thumbnail_path, max_length=255)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    mime = models.CharField(max_length=40)
    bytes = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    description = models.TextField(
        blank=True, help_text="Alt text; the prompt is used when this is empty"
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # A request delivers one image: a duplicate job can never add a second one.
            models.UniqueConstraint(fields=["request"], name="image_one_per_request"),
        ]

    def __str__(self):
        return f"{self.width}×{self.height} {self.mime}"

    @property
    def alt_text(self) -> str:
        return self.description or self.request.prompt


class UpstreamBatch(models.Model):
    """One batch sent to a provider's Batch mode (Gemini's `batchGenerateContent`): the
    economy requests of one model and size, closed by count or age (generator/batching.py).

    A step on a batch (submit, poll, deliver, fall back) is taken by moving `next_step`
    forward with a filtered UPDATE on the value read, so crons on several machines never
    take the same step at once; and every step is idempotent (requests move through
    their own filtered transitions, the submission is found again by its display name),
    so a step that died midway is simply taken again once `next_step` comes round."""

    class State(models.TextChoices):
        CLOSED = "closed", "Closed, not yet submitted"
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired"
        CANCELLED = "cancelled", "Cancelled"

    FINAL_STATES = (State.SUCCEEDED, State.FAILED, State.EXPIRED, State.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model = models.CharField(max_length=80)
    image_size = models.CharField(max_length=2)
    state = models.CharField(max_length=10, choices=State.choices, default=State.CLOSED)
    # The provider's names: "batches/…" once it accepted the batch, "files/…" for a
    # batch sent as a JSONL file.
    name = models.CharField(max_length=200, blank=True)
    input_file = models.CharField(max_length=200, blank=True)
    lines = models.PositiveIntegerField(default=0)  # requests sent in it
    delivered = models.PositiveIntegerField(default=0)  # lines that became images
    failed_lines = models.PositiveIntegerField(default=0)
    submit_tries = models.PositiveSmallIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    created = models.DateTimeField(default=timezone.now)
    submitted = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    # When a tick may take the batch's next step; taking it moves this forward.
    next_step = models.DateTimeField(default=timezone.now)
    # Set once the batch is final and none of its requests is still in it.
    settled = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The batcher's scan: unsettled batches whose next step is due.
            models.Index(fields=["settled", "next_step"], name="batch_due"),
        ]

    def __str__(self):
        return f"{self.name or self.display_name} ({self.state})"

    @property
    def display_name(self) -> str:
        """What the provider is told the batch is called: how a submission whose answer
        was lost (a crash, a timeout) is found again instead of sent twice."""
        return f"steadyshot-{self.id}"

    @property
    def short_name(self) -> str:
        """The provider's id without "batches/", for pages."""
        return self.name.removeprefix("batches/") if self.name else str(self.id)[:8]

    @property
    def is_final(self) -> bool:
        return self.state in self.FINAL_STATES

    def take_step(self, until: datetime) -> bool:
        """Hold the batch's next step until `until`: False if another tick took it."""
        taken = UpstreamBatch.objects.filter(
            pk=self.pk, next_step=self.next_step, settled=None
        ).update(next_step=until)
        if taken:
            self.next_step = until
        return bool(taken)

    def record(self, **fields) -> None:
        """Write what a step learned (state, name, counts); the step holds the batch."""
        UpstreamBatch.objects.filter(pk=self.pk).update(**fields)
        for name, value in fields.items():
            setattr(self, name, value)
