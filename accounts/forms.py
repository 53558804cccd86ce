from django import forms
from django.contrib.auth.forms import AuthenticationForm, BaseUserCreationForm

from accounts.models import ApiToken, Team, User


class SignupForm(BaseUserCreationForm):
    class Meta:
        model = User
        fields = ("email", "name")
        help_texts = {"name": "Optional. Shown to your teammates instead of your e-mail."}

    def clean_email(self):
        email = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError(
                "An account with this e-mail address already exists. "
                "Log in, or reset your password if you forgot it."
            )
        return email


class LoginForm(AuthenticationForm):
    error_messages = {
        "invalid_login": "That e-mail address and password do not match an account. "
        "Check both, or reset your password.",
        "inactive": "This account is disabled. Ask an administrator to enable it.",
    }

    def clean_username(self):
        return self.cleaned_data["username"].strip().lower()


class TeamForm(forms.ModelForm):
    class Meta:
        model = Team
        fields = ("name",)
        labels = {"name": "Team name"}

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the team a name.")
        return name


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ("name",)
        labels = {"name": "Token name"}
        help_texts = {"name": "What will use it, e.g. “CI pipeline”."}

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the token a name so you can recognise it later.")
        return name


_NOT_NEGATIVE = "Enter 0 or more, or leave it empty for no limit."


class QuotaForm(forms.ModelForm):
    """The team's limits, set by an owner (or staff). Empty means unlimited; 0 stops the
    team (or each member) from generating at all."""

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
