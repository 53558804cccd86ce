from django.contrib import admin

from accounts.admin import ReadOnlyAdmin
from quotas.models import UsageEntry


@admin.register(UsageEntry)
class UsageEntryAdmin(ReadOnlyAdmin):
    """Read-only: the ledger is written by quotas.services only, so that it always matches
    the running counters and what the generator was told."""

    list_display = [
        "created",
        "admitted",
        "team",
        "user",
        "kind",
        "images",
        "amount_usd",
        "model",
        "reason",
    ]
    list_filter = ["kind"]
    search_fields = ["team__name", "user__email"]
    raw_id_fields = ["team", "user"]
    date_hierarchy = "created"
