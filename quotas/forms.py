from decimal import Decimal

from django import forms

from accounts.models import Team

_NOT_NEGATIVE = "Enter 0 or more, or leave it empty for no limit."

# The largest limits an owner may set. Far above any real use (10 000 000 images a day is
# over a hundred a second, more than the workers and upstreams deliver; no team budgets
# 10 000 000 USD a month), yet far below the database's integer range (2 147 483 647 on
# PostgreSQL): a larger number is "unlimited" mistyped, and the quota page would show it
# as an absurd number of images left. Leaving the field empty is how to say unlimited.
MAX_IMAGES = 10_000_000
MAX_BUDGET_USD = Decimal(10_000_000)


def _shown(number) -> str:
    return f"{number:,.0f}".replace(",", " ")


class _BudgetField(forms.DecimalField):
    """A DecimalField whose maximum is checked before its digits: an amount too large
    gets one message, the maximum, not also "no more than 8 digits before the decimal
    point"."""

    def validate(self, value):
        super().validate(value)
        if value is not None and self.max_value is not None and value > self.max_value:
            raise forms.ValidationError(self.error_messages["max_value"], code="max_value")


_LABELS = {
    "images_per_day": "Images per day",
    "images_per_month": "Images per month",
    "monthly_budget_usd": "Monthly budget (USD)",
    "member_daily_cap": "Images per member per day",
}


def _bounded(model_field, **kwargs):
    maximum = MAX_BUDGET_USD if model_field.name == "monthly_budget_usd" else MAX_IMAGES
    return model_field.formfield(max_value=maximum, **kwargs)


class QuotaForm(forms.ModelForm):
    """The team's limits, set by an owner (or staff). Empty means unlimited; 0 stops the
    team (or each member) from generating at all. Saved with services.set_limits, not
    save(): the running counters must start again from the ledger."""

    class Meta:
        model = Team
        fields = ("images_per_day", "images_per_month", "monthly_budget_usd", "member_daily_cap")
        formfield_callback = _bounded
        field_classes = {"monthly_budget_usd": _BudgetField}
        labels = _LABELS
        help_texts = {
            "images_per_day": "For the whole team. Empty: unlimited.",
            "images_per_month": "For the whole team. Empty: unlimited.",
            "monthly_budget_usd": "Priced per image by the model that served it; a request "
            "in progress counts at its most expensive model until it is done.",
            "member_daily_cap": "The most one member may generate in a day. Empty: no cap.",
        }
        error_messages = {
            name: {
                "min_value": _NOT_NEGATIVE,
                "max_value": f"{_LABELS[name]} can be at most {_shown(MAX_IMAGES)}. "
                "Leave it empty for no limit.",
                "invalid": "Enter a whole number.",
            }
            for name in ("images_per_day", "images_per_month", "member_daily_cap")
        } | {
            "monthly_budget_usd": {
                "min_value": _NOT_NEGATIVE,
                "max_value": f"The monthly budget can be at most {_shown(MAX_BUDGET_USD)} "
                "USD. Leave it empty for no limit.",
                "invalid": "Enter an amount.",
            }
        }

    def clean(self):
        cleaned = super().clean()
        day, month = cleaned.get("images_per_day"), cleaned.get("images_per_month")
        if day is not None and month is not None and day > month:
            self.add_error(
                "images_per_day",
                f"The daily limit cannot be above the monthly limit ({month} images).",
            )
        return cleaned
