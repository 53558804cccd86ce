from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import ApiToken, Invite, Membership, Team, User


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that only the product's own code writes (the quota ledger, Batch mode
    batches): operators may look, never add, change or delete."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["email"]
    list_display = ["email", "name", "is_staff", "is_active", "date_joined", "last_login"]
    list_filter = ["is_staff", "is_superuser", "is_active"]
    search_fields = ["email", "name"]
    fieldsets = [
        (None, {"fields": ["email", "password", "name", "active_team"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser", "groups"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [
        (None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]}),
    ]
    raw_id_fields = ["active_team"]


QUOTA_FIELDS = ["images_per_day", "images_per_month", "monthly_budget_usd", "member_daily_cap"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "is_personal",
        "images_per_day",
        "images_per_month",
        "monthly_budget_usd",
        "member_daily_cap",
        "created",
    ]
    list_filter = ["is_personal"]
    search_fields = ["name", "memberships__user__email"]
    fieldsets = [
        (None, {"fields": ["name", "is_personal"]}),
        (
            "Quotas (empty: unlimited)",
            {
                "fields": QUOTA_FIELDS,
                "description": "Change them on the team's quota page (/teams/<id>/quota/edit/): "
                "it also restarts the counters that admission checks.",
            },
        ),
    ]
    # Read-only here: a limit saved without the quota service would leave admission's
    # running counters behind (docs/quotas.md).
    readonly_fields = QUOTA_FIELDS
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role", "created"]
    list_filter = ["role"]
    search_fields = ["user__email", "team__name"]
    autocomplete_fields = ["user", "team"]


@admin.register(Invite)
class InviteAdmin(admin.ModelAdmin):
    list_display = ["team", "created_by", "created", "expires", "accepted", "revoked"]
    search_fields = ["team__name"]
    raw_id_fields = ["team", "created_by", "accepted_by"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "hint", "created", "last_used", "revoked"]
    search_fields = ["name", "user__email"]
    readonly_fields = ["digest", "hint"]
    raw_id_fields = ["user"]
