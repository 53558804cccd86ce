"""Requests, attempts and images: the source of truth for everything the product does.

A GenerationRequest row is created at admission and always ends succeeded, failed or
canceled. Workers claim it with a filtered UPDATE on (status, step); each upstream call
leaves an Attempt; a success leaves an Image written to storage before the request is
marked succeeded.
"""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from generator.catalogue import ASPECT_RATIOS, IMAGE_SIZES
from generator.taxonomy import Outcome


class Strategy(models.TextChoices):
    QUALITY_FIRST = "quality-first", "Quality first"
    STABILITY_FIRST = "stability-first", "Stability first"


STRATEGY_HELP = {
    Strategy.QUALITY_FIRST: "Best model first (Nano Banana Pro); waits briefly for it to "
    "recover, then falls back to Nano Banana.",
    Strategy.STABILITY_FIRST: "Steadiest model first (Nano Banana); never waits long, "
    "so images arrive sooner at slightly lower quality.",
}


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting to retry"
    SUCCEEDED = "succeeded", "Done"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING, Status.WAITING)
FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)


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
    deadline = models.DateTimeField(null=True, blank=True, help_text="Deliver by")
    chain = models.JSONField(default=list, help_text="The model ids planned, in order")

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
        ]

    def __str__(self):
        return f"{self.prompt[:40]} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def time_to_image(self) -> timedelta | None:
        if self.status == Status.SUCCEEDED and self.finished:
            return self.finished - self.created
        return None


class Attempt(models.Model):
    """One call to one upstream model, whatever came of it."""

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
