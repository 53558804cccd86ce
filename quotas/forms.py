from django import forms

from accounts.models import Team

_NOT_NEGATIVE = "Enter 0 or more, or leave it empty for no limit."


class QuotaForm(forms.ModelForm):
    """The team's limits, set by an owner (or staff). Empty means unlimited; 0 stops the
    team (or each member) from generating at all. Saved with services.set_limits, not
    save(): the running counters must start again from the ledger."""

    class Meta:
        model = Team
        fields = ("images_per_day", "images_per_month", "monthly_budget_usd", "member_daily_cap")
        labels = {
            "images_per_day": "Images per day",
            "images_per_month": "Images per month",
            "monthly_budget_usd": "Monthly budget (USD)",
            "member_daily_cap": "Images per member per day",
        }
        help_texts = {
            "images_per_day": "For the whole team. Empty: unlimited.",
            "images_per_month": "For the whole team. Empty: unlimited.",
            "monthly_budget_usd": "Priced per image by the model that served it; a request "
            "in progress counts at its most expensive model until it is done.",
            "member_daily_cap": "The most one member may generate in a day. Empty: no cap.",
        }
        error_messages = {
            name: {"min_value": _NOT_NEGATIVE, "invalid": "Enter a whole number."}
            for name in ("images_per_day", "images_per_month", "member_daily_cap")
        } | {"monthly_budget_usd": {"min_value": _NOT_NEGATIVE, "invalid": "Enter an amount."}}

    def clean(self):
        cleaned = super().clean()
        day, month = cleaned.get("images_per_day"), cleaned.get("images_per_month")
        if day is not None and month is not None and day > month:
            self.add_error(
                "images_per_day",
                f"The daily limit cannot be above the monthly limit ({month} images).",
            )
        return cleaned
