"""The web UI: the prompt page, live status, the gallery and each image's page.

Every view that touches a request goes through _get_request_for_user(), so access is
checked one way: a member of the request's team sees it, anyone else gets 404 (not 403:
an outsider learns nothing, not even that the id exists). Images are streamed by views
after that check; media has no public URL.
"""

from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import Team
from accounts.redirects import safe_next
from generator import files
from generator.admission import AdmissionError, Submission, submit, unstorable
from generator.forms import GalleryFilterForm, PromptForm
from generator.image_check import EXTENSION_MIME
from generator.models import GenerationRequest, Status, Strategy
from generator.status import status_dict, status_view, status_views
from quotas.errors import QuotaExceeded
from quotas.selectors import quota_summary

MAX_BULK = 200


# --- access ------------------------------------------------------------------------------


def _get_request_for_user(request, request_id) -> GenerationRequest:
    """The generation request `request_id` if the signed-in user may see it, else 404."""
    found = _find_for_user(request, request_id)
    if found is None:
        raise Http404("No such image.")
    return found


def _find_for_user(request, request_id) -> GenerationRequest | None:
    """The generation request `request_id` if the signed-in user may see it, else None."""
    pk = _uuid_or_none(request_id)
    if pk is None:
        return None
    return (
        GenerationRequest.objects.visible_to(request.user)
        .select_related("team", "user")
        .filter(pk=pk)
        .first()
    )


def _require_change(request, found: GenerationRequest) -> None:
    if not found.may_be_changed_by(request.user):
        raise PermissionDenied(GenerationRequest.CHANGE_REFUSED)


def _quota_context(team, user) -> dict:
    return {"quota": quota_summary(team, user)}


# --- prompt ------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def prompt(request):
    if not request.user.is_authenticated:
        # Signed out meanwhile (in another tab, or the session expired): keep what was
        # written through the login instead of losing it.
        if request.method == "POST":
            _keep_draft(request)
        return redirect_to_login(reverse("generator:prompt"))
    team = request.user.current_team()
    if request.method == "POST":
        form = PromptForm(request.POST, request.FILES)
        if form.is_valid() and _same_team(request, team, form):
            accepted = _submit_form(request, team, form)
            if accepted:
                return _after_submit(accepted)
    else:
        initial = _remix_initial(request) or _draft_initial(request)
        form = PromptForm(initial={**initial, "team": team.pk})
    context = {"form": form, "team": team, **_quota_context(team, request.user)}
    return render(request, "generator/prompt.html", context)


def _same_team(request, team, form: PromptForm) -> bool:
    """Whether the form was shown for the active team. If the member switched team in
    another tab since, nothing is submitted: the form comes back, its input kept, for
    the team now active, and says so."""
    shown = form.cleaned_data.get("team")
    if shown is None or shown == team.pk:
        return True
    was = Team.objects.filter(pk=shown, memberships__user=request.user).first()
    form.data = form.data.copy()
    form.data["team"] = str(team.pk)
    form.add_error(
        None,
        f"This page was for the team “{was.name if was else 'another team'}”, but your "
        f"active team is now “{team.name}” (switched in another tab?). Nothing was "
        "generated. Check the team and its quota below, then generate again.",
    )
    if form.files:
        form.add_error("references", "Choose the reference images again.")
    return False


DRAFT_KEY = "prompt_draft"
# The fields a draft keeps (uploaded files cannot be kept: browsers do not resend them).
DRAFT_FIELDS = (
    "prompt",
    "strategy",
    "aspect_ratio",
    "image_size",
    "count",
    "deadline",
    "remix_of",
)


def _keep_draft(request) -> None:
    """Put a signed-out submission's fields in the (anonymous) session; login() keeps
    the session's data when it starts the member's session."""
    draft = {
        name: request.POST.get(name, "")[: PromptForm.base_fields["prompt"].max_length]
        for name in DRAFT_FIELDS
        if request.POST.get(name)
    }
    if draft.get("prompt"):
        draft["had_references"] = bool(request.FILES)
        request.session[DRAFT_KEY] = draft


def _draft_initial(request) -> dict:
    """A kept draft as the form's initial values (shown, not submitted: the member
    checks it and generates), once."""
    draft = request.session.pop(DRAFT_KEY, None)
    if not draft:
        return {}
    text = (
        "You were signed out when you submitted, so nothing was generated; your prompt "
        "was kept. Check it and generate."
    )
    if draft.pop("had_references", False):
        text += " Choose the reference images again."
    messages.info(request, text)
    return {name: value for name, value in draft.items() if name in DRAFT_FIELDS}


def _remix_initial(request) -> dict:
    """?remix=<id> prefills the form with that request's settings."""
    source_id = request.GET.get("remix")
    if not source_id:
        return {}
    source = _get_request_for_user(request, source_id)
    initial = {
        "prompt": source.prompt,
        "strategy": source.strategy,
        "aspect_ratio": source.aspect_ratio,
        "image_size": source.image_size,
        "remix_of": source.pk,
    }
    # Economy needs a deadline: the same lead time the original had, as a re-run keeps.
    lead = _same_lead(source)
    if lead is not None:
        initial["deadline"] = lead
    return initial


def _submit_form(request, team, form: PromptForm) -> list[GenerationRequest] | None:
    """Admit the form's submission; on refusal, put the reason on the form and return None
    (the input stays; uploaded files must be chosen again, browsers do not keep them).
    Admission writes the uploads to storage only once it accepted the submission."""
    data = form.cleaned_data
    # Read before any add_error(): it removes the field at fault from cleaned_data.
    uploads = [(content, mime) for _name, content, mime in data["references"]]
    remix_of = _find_for_user(request, data["remix_of"]) if data.get("remix_of") else None
    try:
        return submit(
            request.user,
            team,
            Submission(
                prompt=data["prompt"],
                strategy=data["strategy"],
                aspect_ratio=data["aspect_ratio"],
                image_size=data["image_size"],
                count=data["count"],
                deadline=data.get("deadline"),
                uploads=uploads,
                remix_of=remix_of,
            ),
        )
    except AdmissionError as exc:
        field = exc.field if exc.field in form.fields else None
        form.add_error(field, exc.message)
    except QuotaExceeded as exc:
        form.add_error(None, str(exc))
    if uploads and "references" in form.fields:
        form.add_error("references", "Choose the reference images again.")
    return None


def _after_submit(accepted: list[GenerationRequest]):
    if len(accepted) == 1:
        return redirect("generator:detail", accepted[0].pk)
    return redirect(f"{reverse('generator:gallery')}?batch={accepted[0].batch}")


# --- gallery -----------------------------------------------------------------------------


@login_required
@require_GET
def gallery(request):
    team = request.user.current_team()
    form = GalleryFilterForm(request.GET or None, team=team)
    filters = form.values()
    rows = GenerationRequest.objects.visible_to(request.user).filter(team=team)
    before = request.GET.get("before")
    page = (
        rows.filtered(request.user, filters)
        .select_related("user")
        .prefetch_related("images")
        .page(
            _uuid_or_none(before) if before else None,
            settings.GALLERY_PAGE_SIZE,
            # The last card shown may have been deleted, or left the filter, since.
            anchors=GenerationRequest.objects.filter(team=team),
        )
    )
    page, next_before = page.rows, page.next_before
    favourites = set(
        request.user.favourite_requests.filter(pk__in=[r.pk for r in page]).values_list(
            "pk", flat=True
        )
    )
    # Every card's status in two queries, not two a live card (attempts, queue place).
    views = status_views(page)
    for row in page:
        row.is_favourite = row.pk in favourites
        row.status_now = views[row.pk]
    next_query = None
    if next_before:
        query = request.GET.copy()
        query["before"] = str(next_before)
        next_query = query.urlencode()
    context = {
        "team": team,
        "form": form,
        "requests": page,
        "next_query": next_query,
        "filtered": bool(filters) or bool(before),
        # Without JavaScript the page refreshes itself while a card is still active.
        "active": any(r.is_active for r in page),
    }
    return render(request, "generator/gallery.html", context)


def _uuid_or_none(value):
    try:
        return UUID(str(value))
    except ValueError:
        return None


@login_required
@require_POST
def bulk(request):
    """Delete or download (as a zip) the selected images. Deleting asks for confirmation
    first: the confirmation page posts back with confirm=yes."""
    ids = [pk for pk in (_uuid_or_none(v) for v in request.POST.getlist("ids")) if pk][:MAX_BULK]
    rows = list(
        GenerationRequest.objects.visible_to(request.user)
        .filter(pk__in=ids)
        .prefetch_related("images")
        .order_by("-created")
    )
    action = request.POST.get("action")
    # Back to the gallery as it was shown: its filters and search kept.
    back = safe_next(request, reverse("generator:gallery"))
    if not rows:
        messages.warning(request, "Select at least one image first.")
        return redirect(back)
    if action == "zip":
        if not any(row.image for row in rows):
            messages.warning(
                request,
                "None of the selected requests has an image yet (still running, failed or "
                "canceled): select delivered images to download them.",
            )
            return redirect(back)
        return _zip_response(rows)
    if action != "delete":
        messages.error(request, "Choose to delete or to download the selected images.")
        return redirect(back)
    allowed = [r for r in rows if r.may_be_changed_by(request.user)]
    if request.POST.get("confirm") != "yes":
        return render(
            request,
            "generator/confirm_bulk_delete.html",
            {"rows": allowed, "refused": len(rows) - len(allowed), "back": back},
        )
    for row in allowed:
        row.soft_delete()
    messages.success(request, f"Deleted {len(allowed)} image{'s' if len(allowed) != 1 else ''}.")
    if len(allowed) < len(rows):
        messages.warning(
            request,
            f"{len(rows) - len(allowed)} were not deleted: only the member who asked for an "
            "image, or a team owner, may delete it.",
        )
    return redirect(back)


def _zip_response(rows):
    """Streams the zip: nothing is built in memory or on disk, whatever the selection."""
    import zipstream

    archive = zipstream.ZipStream(sized=False)
    for row in rows:
        image = row.image  # from bulk()'s prefetch: no query per row
        if image is not None:
            archive.add(files.chunks(image.file), _download_name(row, image))
    response = StreamingHttpResponse(archive, content_type="application/zip")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="steadyshot-{stamp}.zip"'
    return response


# --- one request -------------------------------------------------------------------------


@login_required
@require_GET
def detail(request, request_id):
    found = _get_request_for_user(request, request_id)
    attempts = list(found.attempts.order_by("number"))
    # Counted from the timeline it is shown beside, so the two always agree; but an
    # ended request keeps its count when its attempts' records are pruned
    # (MONITORING_RETENTION_DAYS), and the timeline says so instead of "none yet".
    made = max(found.attempt_count, len(attempts)) if found.is_final else len(attempts)
    context = {
        "r": found,
        "s": status_view(found, made),
        "image": found.images.first(),
        "attempts": attempts,
        "attempts_pruned": made - len(attempts),
        "retention_days": settings.MONITORING_RETENTION_DAYS,
        "may_change": found.may_be_changed_by(request.user),
        "is_favourite": found.is_favourite_of(request.user),
        "strategies": dict(Strategy.choices),
        "delivered_ratio": _ratio(found.delivered_width, found.delivered_height),
    }
    return render(request, "generator/detail.html", context)


def _same_lead(found: GenerationRequest):
    if found.strategy != Strategy.ECONOMY or found.deadline is None:
        return None
    return timezone.now() + (found.deadline - found.created)


def _ratio(width, height) -> str:
    if not width or not height:
        return ""
    from math import gcd

    d = gcd(width, height)
    return f"{width // d}:{height // d}"


@login_required
@require_GET
def status(request, request_id):
    """The live status, polled by static/js/generator.js while a request is active."""
    found = _get_request_for_user(request, request_id)
    data = status_dict(found)
    data["card_url"] = reverse("generator:card", args=[found.pk])
    response = JsonResponse(data)
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_GET
def card(request, request_id):
    """One gallery card, for the live status to swap in when a request ends."""
    found = _get_request_for_user(request, request_id)
    found.is_favourite = found.is_favourite_of(request.user)
    context = {"r": found, "selectable": request.GET.get("select") == "1"}
    return render(request, "generator/gallery.html#card", context)


@login_required
@require_POST
def cancel(request, request_id):
    found = _get_request_for_user(request, request_id)
    _require_change(request, found)
    if found.cancel(request.user):
        if found.status == Status.CANCELED:
            messages.success(request, "Canceled. Your quota was given back.")
        else:
            messages.info(request, GenerationRequest.CANCELING_REASON)
    else:
        messages.info(request, f"This request had already ended ({found.get_status_display()}).")
    if request.headers.get("Accept") == "application/json":
        return JsonResponse(status_dict(found))
    return redirect(_back(request, found))


def _back(request, found) -> str:
    # Only our own pages: never an open redirect.
    return safe_next(request, reverse("generator:detail", args=[found.pk]))


@login_required
@require_http_methods(["GET", "POST"])
def delete(request, request_id):
    found = _get_request_for_user(request, request_id)
    _require_change(request, found)
    if request.method == "GET":
        return render(request, "generator/confirm_delete.html", {"r": found})
    found.soft_delete()
    messages.success(request, "The image was deleted.")
    return redirect("generator:gallery")


@login_required
@require_POST
def favourite(request, request_id):
    found = _get_request_for_user(request, request_id)
    now = found.toggle_favourite(request.user)
    if request.headers.get("Accept") == "application/json":
        return JsonResponse({"favourite": now})
    return redirect(_back(request, found))


@login_required
@require_POST
def describe(request, request_id):
    """The image's description, used as its alt text instead of the prompt."""
    found = _get_request_for_user(request, request_id)
    _require_change(request, found)
    image = _image_of(found)
    text = request.POST.get("description", "").strip()
    if len(text) > 1000:
        messages.error(request, "Keep the description to 1000 characters.")
    elif unstorable(text):
        messages.error(
            request,
            "The description holds a character that cannot be stored (a NUL or a broken "
            "one). Remove it and save again.",
        )
    else:
        image.description = text
        image.save(update_fields=["description"])
        messages.success(request, "Description saved.")
    return redirect("generator:detail", found.pk)


@login_required
@require_POST
def rerun(request, request_id):
    """The same prompt and settings as a new request; the original is never touched."""
    found = _get_request_for_user(request, request_id)
    team = found.team
    try:
        accepted = submit(
            request.user,
            team,
            Submission(
                prompt=found.prompt,
                strategy=found.strategy,
                aspect_ratio=found.aspect_ratio,
                image_size=found.image_size,
                references=list(found.references.all()),
                remix_of=found,
                # Economy needs a deadline: the same lead time the original had.
                deadline=_same_lead(found),
            ),
        )
    except (AdmissionError, QuotaExceeded) as exc:
        messages.error(request, getattr(exc, "message", None) or str(exc))
        return redirect("generator:detail", found.pk)
    return redirect("generator:detail", accepted[0].pk)


# --- files -------------------------------------------------------------------------------


def _image_of(found: GenerationRequest):
    image = found.images.first()
    if image is None:
        raise Http404("No image yet.")
    return image


def _download_name(found: GenerationRequest, image) -> str:
    return f"steadyshot-{found.pk}.{image.file.name.rsplit('.', 1)[-1]}"


@login_required
@require_GET
def original(request, request_id):
    found = _get_request_for_user(request, request_id)
    image = _image_of(found)
    name = _download_name(found, image) if request.GET.get("download") else ""
    return files.stream(image.file, image.mime, download_name=name)


@login_required
@require_GET
def thumbnail(request, request_id):
    found = _get_request_for_user(request, request_id)
    image = _image_of(found)
    if not image.thumbnail:
        # Delivered a moment ago: its thumbnail is still being made (generator/jobs.py).
        return files.stream(image.file, image.mime, max_age=0)
    # A JPEG, or a WebP (with transparency, and every thumbnail made before JPEGs).
    extension = image.thumbnail.name.rsplit(".", 1)[-1]
    return files.stream(image.thumbnail, EXTENSION_MIME.get(extension, "image/webp"))
