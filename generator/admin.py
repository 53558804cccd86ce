"""The request log for operators: filters and search on requests and attempts, so the
monitoring page's links land on the matching rows (?status=failed&finished__gte=...)."""

from django.contrib import admin

from accounts.admin import ReadOnlyAdmin
from generator.models import Attempt, GenerationRequest, Image, UpstreamBatch


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    fields = ["number", "model", "started", "latency_ms", "outcome", "http_status", "decision"]
    readonly_fields = fields
    show_change_link = True


@admin.register(GenerationRequest)
class GenerationRequestAdmin(admin.ModelAdmin):
    list_display = [
        "created",
        "team",
        "user",
        "strategy",
        "status",
        "served_model",
        "fell_back",
        "attempt_count",
        "error_code",
        "cost_usd",
    ]
    list_filter = [
        "status",
        "strategy",
        "route",
        "served_model",
        "fell_back",
        "error_code",
        "image_size",
        "quota_state",
        "created",
        "finished",
    ]
    search_fields = ["id", "prompt", "user__email", "team__name", "error_message"]
    date_hierarchy = "created"
    raw_id_fields = [
        "user",
        "team",
        "remix_of",
        "references",
        "favourited_by",
        "upstream_batch",
    ]
    list_select_related = ["user", "team"]
    # Counting 300,000 rows for the paginator on every filter click is slow on Postgres.
    show_full_result_count = False
    inlines = [AttemptInline]


@admin.register(Attempt)
class AttemptAdmin(admin.ModelAdmin):
    list_display = [
        "started",
        "model",
        "number",
        "outcome",
        "http_status",
        "latency_ms",
        "decision",
        "worker",
    ]
    list_filter = ["outcome", "model", "provider", "decision", "http_status", "started"]
    search_fields = ["request__id", "message", "decision_reason", "quota_id", "worker"]
    date_hierarchy = "started"
    raw_id_fields = ["request"]
    show_full_result_count = False


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["created", "team", "width", "height", "mime", "bytes"]
    list_filter = ["mime", "created"]
    search_fields = ["id", "request__id", "request__prompt", "sha256"]
    raw_id_fields = ["request", "team"]
    list_select_related = ["team"]


@admin.register(UpstreamBatch)
class UpstreamBatchAdmin(ReadOnlyAdmin):
    """Economy's Batch mode batches (docs/economy.md), read-only: the batcher alone
    writes them."""

    list_display = ["created", "model", "image_size", "state", "name", "lines", "delivered", "failed_lines", "settled"]  # fmt: skip
    list_filter = ["state", "model", "image_size", "created"]
    search_fields = ["id", "name", "error"]
    date_hierarchy = "created"
    show_full_result_count = False
