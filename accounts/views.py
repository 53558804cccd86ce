from uuid import UUID

from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import throttle
from accounts.forms import ApiTokenForm, SignupForm, TeamForm
from accounts.models import ApiToken, Invite, Membership, Team
from accounts.redirects import safe_next


def _get_membership(request, team_id) -> Membership:
    """The signed-in user's membership of the team, or 404: outsiders cannot even learn
    that the team exists."""
    return get_object_or_404(
        Membership.objects.select_related("team"), team_id=team_id, user=request.user
    )


def _get_owner_membership(request, team_id) -> Membership:
    return _owner(_get_membership(request, team_id))


def _owner(membership: Membership) -> Membership:
    if not membership.is_owner:
        raise PermissionDenied("Only the team's owners can do this.")
    return membership


@require_http_methods(["GET", "POST"])
def signup(request):
    if request.user.is_authenticated:
        return redirect("home")
    form = SignupForm(request.POST or None)
    if request.method == "POST":
        # Every try counts, not only the accounts made: "already exists" answers would
        # otherwise tell which addresses have an account, as fast as one can ask.
        seconds = throttle.wait(request, "signup", settings.SIGNUP_RATE)
        if seconds:
            form = SignupForm(initial={"email": request.POST.get("email", "")})
            context = {"form": form, "next": safe_next(request, "")}
            context["refused"] = throttle.too_many("sign-ups", seconds)
            response = render(request, "accounts/signup.html", context, status=429)
            response["Retry-After"] = str(seconds)
            return response
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = form.save()
            user.switch_team(Team.create_personal(user))
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome to Steadyshot. Your personal team is ready.")
        return HttpResponseRedirect(safe_next(request, reverse("home")))
    return render(request, "accounts/signup.html", {"form": form, "next": safe_next(request, "")})


@login_required
@require_GET
def team_list(request):
    memberships = (
        Membership.objects.filter(user=request.user)
        .select_related("team")
        .order_by("-team__is_personal", "team__name")
    )
    return render(
        request, "accounts/team_list.html", {"memberships": memberships, "form": TeamForm()}
    )


@login_required
@require_POST
def team_create(request):
    form = TeamForm(request.POST)
    if not form.is_valid():
        memberships = Membership.objects.filter(user=request.user).select_related("team")
        return render(
            request,
            "accounts/team_list.html",
            {"memberships": memberships, "form": form},
            status=400,
        )
    team = Team.create_with_owner(form.cleaned_data["name"], request.user)
    request.user.switch_team(team)
    messages.success(request, f"Team “{team.name}” created. It is now your active team.")
    return redirect("accounts:team", team_id=team.id)


@login_required
@require_GET
def team_detail(request, team_id):
    membership = _get_membership(request, team_id)
    team = membership.team
    new_invite = None
    if membership.is_owner and request.GET.get("invite"):
        # The link invite_create() redirects to; any other value (an old, withdrawn or
        # mangled id) shows the page without it, never a 500.
        invite_id = _uuid_or_none(request.GET["invite"])
        if invite_id is not None:
            new_invite = team.pending_invites().filter(id=invite_id).first()
        if new_invite is None:
            messages.info(request, "That invite link is not open any more; create a new one.")
    return _render_team(request, membership, TeamForm(instance=team), new_invite=new_invite)


def _render_team(request, membership, rename_form, *, new_invite=None, status=200):
    team = membership.team
    return render(
        request,
        "accounts/team_detail.html",
        {
            "team": team,
            "membership": membership,
            "members": team.members(),
            "invites": team.pending_invites() if membership.is_owner else [],
            "new_invite": new_invite,
            "rename_form": rename_form,
        },
        status=status,
    )


def _uuid_or_none(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


@login_required
@require_POST
def team_rename(request, team_id):
    membership = _get_owner_membership(request, team_id)
    form = TeamForm(request.POST, instance=membership.team)
    if not form.is_valid():
        # The page again with the form as typed and its message beside the field, which
        # takes the focus: the browser scrolls to it, at the foot of a long page.
        form.fields["name"].widget.attrs["autofocus"] = True
        return _render_team(request, membership, form, status=400)
    form.save()
    messages.success(request, "Team renamed.")
    return redirect("accounts:team", team_id=team_id)


@login_required
@require_POST
def team_switch(request, team_id):
    membership = _get_membership(request, team_id)
    request.user.switch_team(membership.team)
    messages.success(request, f"You are now working in “{membership.team.name}”.")
    return HttpResponseRedirect(safe_next(request, reverse("home")))


@login_required
@require_POST
def invite_create(request, team_id):
    membership = _get_owner_membership(request, team_id)
    invite = Invite.objects.create(team=membership.team, created_by=request.user)
    messages.success(request, "Invite link created. Send it to the person you want to invite.")
    return redirect(reverse("accounts:team", args=[team_id]) + f"?invite={invite.id}")


@login_required
@require_POST
def invite_revoke(request, team_id, invite_id):
    membership = _get_owner_membership(request, team_id)
    invite = get_object_or_404(Invite, id=invite_id, team=membership.team)
    Invite.objects.filter(pk=invite.pk, revoked=None).update(revoked=timezone.now())
    messages.success(request, "Invite link withdrawn; it no longer works.")
    return redirect("accounts:team", team_id=team_id)


def _locked_pair(request, team_id, membership_id) -> tuple[Membership, Membership]:
    """The actor's and the target's memberships, read again once the team's row is
    locked (inside the caller's transaction): membership changes of one team happen one
    at a time, so two owners demoting or removing each other at the same moment cannot
    both pass the last-owner check and leave the team with none."""
    Team.objects.select_for_update().filter(pk=team_id).first()
    actor = _get_membership(request, team_id)
    return actor, get_object_or_404(Membership, id=membership_id, team=actor.team)


@login_required
@require_POST
@transaction.atomic
def member_remove(request, team_id, membership_id):
    """Owners remove members; any member may remove themselves (leave the team). The last
    owner cannot leave: the team would be left with nobody to manage it."""
    actor, target = _locked_pair(request, team_id, membership_id)
    leaving = target.user_id == request.user.id
    if not leaving and not actor.is_owner:
        raise PermissionDenied("Only the team's owners can remove members.")
    if target.is_last_owner():
        messages.error(
            request,
            "A team needs at least one owner. Make someone else an owner first."
            if leaving
            else "The last owner cannot be removed.",
        )
        return redirect("accounts:team", team_id=team_id)
    target.delete()
    if leaving:
        messages.success(request, f"You left “{actor.team.name}”.")
        return redirect("accounts:teams")
    messages.success(request, f"{target.user.display_name} was removed from the team.")
    return redirect("accounts:team", team_id=team_id)


@login_required
@require_POST
@transaction.atomic
def member_role(request, team_id, membership_id):
    actor, target = _locked_pair(request, team_id, membership_id)
    _owner(actor)  # checked again under the lock: it may have been demoted meanwhile
    role = request.POST.get("role")
    if role not in Membership.Role.values:
        messages.error(request, "Choose a role: owner or member.")
    elif role == Membership.Role.MEMBER and target.is_last_owner():
        messages.error(request, "A team needs at least one owner.")
    else:
        target.role = role
        target.save(update_fields=["role"])
        messages.success(
            request, f"{target.user.display_name} is now {target.get_role_display().lower()}."
        )
    return redirect("accounts:team", team_id=team_id)


@require_http_methods(["GET", "POST"])
def invite_accept(request, token):
    """Anyone with the link sees which team it is for; joining needs an account, so
    anonymous visitors are offered to sign up or log in and come back here."""
    invite = get_object_or_404(Invite.objects.select_related("team", "created_by"), token=token)
    problem = invite.problem()
    already = request.user.is_authenticated and request.user.membership_in(invite.team)
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect(f"{reverse('accounts:login')}?next={request.path}")
        if already:  # a second tab, a double click: nothing to join, nothing to use up
            messages.info(request, f"You are already a member of “{invite.team.name}”.")
            return redirect("accounts:team", team_id=invite.team_id)
        try:
            invite.accept(request.user)
        except Invite.Unusable as exc:
            messages.error(request, str(exc))
            return redirect("accounts:invite", token=token)
        messages.success(request, f"You joined “{invite.team.name}”. It is now your active team.")
        return redirect("accounts:team", team_id=invite.team_id)
    status = 410 if problem and not already else 200
    return render(
        request,
        "accounts/invite.html",
        {"invite": invite, "problem": problem, "already": already},
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request):
    form = ApiTokenForm(request.POST or None)
    created_raw = None
    if request.method == "POST" and form.is_valid():
        _, created_raw = ApiToken.issue(request.user, form.cleaned_data["name"])
        form = ApiTokenForm()
    tokens = request.user.api_tokens.filter(revoked=None).order_by("-created")
    return render(
        request,
        "accounts/tokens.html",
        {"form": form, "tokens": tokens, "created_raw": created_raw},
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def token_revoke(request, token_id):
    token = get_object_or_404(ApiToken, id=token_id, user=request.user)
    ApiToken.objects.filter(pk=token.pk, revoked=None).update(revoked=timezone.now())
    messages.success(request, f"Token “{token.name}” revoked; programs using it are refused.")
    return redirect("accounts:tokens")


class PasswordResetView(auth_views.PasswordResetView):
    """Django's, with reset mails throttled per address and per e-mail address: a reset
    link cannot be used to flood someone's mailbox."""

    def post(self, request, *args, **kwargs):
        seconds = max(
            throttle.wait(request, "password-reset", settings.PASSWORD_RESET_RATE),
            throttle.wait(
                request,
                "password-reset-email",
                settings.PASSWORD_RESET_RATE,
                throttle.posted_email,
            ),
        )
        if not seconds:
            return super().post(request, *args, **kwargs)
        context = self.get_context_data(form=self.form_class())
        context["refused"] = throttle.too_many("password reset requests", seconds)
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(seconds)
        return response


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Django's; a new password also ends a log-in lockout of the account (the member
    proved they own the address), the self-service way out of accounts.throttle."""

    def form_valid(self, form):
        response = super().form_valid(form)
        axes_reset(username=throttle.login_name(self.request, {"username": self.user.email}))
        return response
