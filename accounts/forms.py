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
        # The field strips spaces, so a name of spaces only is "required" too.
        error_messages = {
            "name": {
                "required": "Give the team a name.",
                "max_length": "Shorten the team name to %(limit_value)d characters or fewer "
                "(it has %(show_value)d).",
            }
        }


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ("name",)
        labels = {"name": "Token name"}
        help_texts = {"name": "What will use it, e.g. “CI pipeline”."}
        # The field strips spaces, so a name of spaces only is "required" too.
        error_messages = {
            "name": {
                "required": "Give the token a name so you can recognise it later.",
                "max_length": "Shorten the token name to %(limit_value)d characters or fewer "
                "(it has %(show_value)d).",
            }
        }
