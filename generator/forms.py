"""The prompt form and the gallery's filters.

The prompt form checks what a browser can get wrong (types, uploads); the rules of the
product (prompt length, sizes the primary model delivers, reference limits, quota) are
admission's, so the web form and the API refuse exactly the same things.
"""

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from generator import economy
from generator.admission import (
    COUNT_OUT_OF_RANGE,
    MAX_COUNT,
    MAX_DEADLINE,
    PROMPT_MAX_CHARS,
    PROMPT_MISSING,
    PROMPT_TOO_LONG,
    default_patience,
)
from generator.images import validate_reference
from generator.models import STRATEGY_HELP, Status, Strategy
from generator.reasons import duration_words
from generator.resilience.catalogue import ASPECT_RATIOS, IMAGE_SIZES, get_catalogue
from generator.upstream.availability import is_configured

ACCEPTED_TYPES = "image/png,image/jpeg,image/webp"


class MultipleImageInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """Several uploads under one name, each checked with Pillow; cleans to a list of
    (name, data, mime)."""

    widget = MultipleImageInput

    def clean(self, data, initial=None):
        files = data if isinstance(data, list | tuple) else [data] if data else []
        checked, errors = [], []
        for upload in files:
            try:
                content, mime = validate_reference(upload)
            except ValidationError as exc:
                errors.extend(exc.messages)
                continue
            checked.append((upload.name, content, mime))
        if errors:
            raise ValidationError(errors)
        return checked


class _HiddenId(forms.UUIDField):
    """A hidden id the page wrote: one that is not an id (a tampered or truncated form)
    counts as absent, since the member could not see or mend it."""

    widget = forms.HiddenInput

    def to_python(self, value):
        try:
            return super().to_python(value)
        except ValidationError:
            return None


class PromptForm(forms.Form):
    prompt = forms.CharField(
        widget=forms.Textarea(
            attrs={"rows": 5, "placeholder": "A lighthouse at dusk, in watercolour"}
        ),
        max_length=PROMPT_MAX_CHARS,
        help_text=f"Up to {PROMPT_MAX_CHARS} characters.",
        # The API's words, not Django's defaults.
        error_messages={
            "required": PROMPT_MISSING,
            "max_length": PROMPT_TOO_LONG.format(length="%(show_value)d", limit="%(limit_value)d"),
        },
    )
    strategy = forms.ChoiceField(
        choices=Strategy.choices, initial=Strategy.QUALITY_FIRST, widget=forms.RadioSelect
    )
    aspect_ratio = forms.ChoiceField(choices=[(r, r) for r in ASPECT_RATIOS], initial="1:1")
    image_size = forms.ChoiceField(
        label="Size",
        choices=[(s, s) for s in IMAGE_SIZES],
        initial="1K",
        help_text="2K and 4K only with Nano Banana Pro first (quality-first).",
    )
    count = forms.IntegerField(
        label="Images",
        min_value=1,
        max_value=MAX_COUNT,
        initial=1,
        help_text=f"1 to {MAX_COUNT}; each is a separate request of one batch.",
        error_messages={
            key: COUNT_OUT_OF_RANGE for key in ("required", "invalid", "min_value", "max_value")
        },
    )
    references = MultipleImageField(
        label="Reference images",
        required=False,
        widget=MultipleImageInput(attrs={"accept": ACCEPTED_TYPES}),
    )
    deadline = forms.DateTimeField(
        label="Deliver by",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Optional (UTC). Quality-first falls back sooner to meet it.",
    )
    remix_of = _HiddenId(required=False)
    # The team the page showed: a switch in another tab must not send the submission,
    # and its charge, to a team the member did not see here (views.prompt checks it).
    team = _HiddenId(required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        catalogue = get_catalogue()
        most = max(m.max_reference_images for m in catalogue.models.values())
        self.fields["references"].help_text = (
            f"Optional, to edit or combine images: PNG, JPEG or WebP, up to "
            f"{settings.REFERENCE_MAX_BYTES / 1_000_000:.0f} MB and "
            f"{settings.REFERENCE_MAX_PIXELS / 1_000_000:.0f} megapixels each; "
            f"the first model decides how many (Nano Banana Pro up to {most})."
        )
        patience = duration_words(default_patience().total_seconds())
        self.strategy_help = [
            (value, label, STRATEGY_HELP[value].format(patience=patience))
            for value, label in Strategy.choices
        ]
        lead = duration_words(economy.min_lead().total_seconds())
        self.fields["deadline"].help_text = (
            f"Optional (UTC), within {MAX_DEADLINE.days} days. Quality-first waits for "
            f"Nano Banana Pro until then instead of up to {patience}, and falls back in "
            f"time to deliver by it. Economy needs one at least {lead} away."
        )
        # The sizes each strategy's first model delivers: the page's script disables the
        # others when the strategy changes (admission refuses them anyway, with a reason).
        self.fields["image_size"].widget.attrs.update(
            {
                f"data-sizes-{value}": " ".join(
                    catalogue.primary(value, available=is_configured).sizes
                )
                for value, _ in Strategy.choices
            }
        )

    def clean_deadline(self):
        deadline = self.cleaned_data.get("deadline")
        if deadline is not None and deadline <= timezone.now():
            raise ValidationError("“Deliver by” must be in the future.")
        return deadline


class GalleryFilterForm(forms.Form):
    """The gallery's filters, read from the query string; invalid values are ignored
    (a stale bookmark still shows a gallery)."""

    SCOPES = [("team", "Team"), ("mine", "Mine"), ("favourites", "Favourites")]

    scope = forms.ChoiceField(choices=SCOPES, required=False)
    member = forms.ChoiceField(required=False)
    model = forms.ChoiceField(label="Served by", required=False)
    strategy = forms.ChoiceField(choices=[("", "Any strategy"), *Strategy.choices], required=False)
    fell_back = forms.ChoiceField(
        label="Fallback",
        choices=[("", "Any"), ("yes", "Fell back"), ("no", "First choice")],
        required=False,
    )
    status = forms.ChoiceField(choices=[("", "Any status"), *Status.choices], required=False)
    since = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    # As long as a prompt: a whole prompt pasted in finds its images.
    q = forms.CharField(label="Search prompts", required=False, max_length=PROMPT_MAX_CHARS)
    batch = forms.UUIDField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        members = team.members()
        self.fields["member"].choices = [("", "Anyone")] + [
            (str(m.user_id), m.user.display_name) for m in members
        ]
        self.fields["model"].choices = [("", "Any model")] + [
            (m.id, m.display_name) for m in get_catalogue().models.values()
        ]

    def values(self) -> dict:
        """The valid filters only."""
        if self.is_bound:
            self.is_valid()
        data = getattr(self, "cleaned_data", {})
        return {k: v for k, v in data.items() if v not in (None, "") and k not in self.errors}
