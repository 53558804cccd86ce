from django.contrib import admin

from quotas.models import UsageEntry


@admin.register(UsageEntry)
class UsageEntryAdmin(admin.ModelAdmin):
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

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
