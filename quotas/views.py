"""The quota pages: a team's use and limits, and the owners' limits form."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from accounts.models import Membership, Team
from quotas import selectors, services
from quotas.forms import QuotaForm
from quotas.services import LIMIT_FIELDS


def _get_quota_access(request, team_id, *, manage=False) -> tuple[Team, Membership | None]:
    """The team and the user's membership for the quota pages. Staff see and set any
    team's quotas (membership None when they are not in it); others must be members
    (outsiders get 404) and, to manage, owners (members get 403)."""
    if request.user.is_staff:
        team = get_object_or_404(Team, pk=team_id)
        return team, request.user.membership_in(team)
    membership = get_object_or_404(
        Membership.objects.select_related("team"), team_id=team_id, user=request.user
    )
    if manage and not membership.is_owner:
        raise PermissionDenied("Only the team's owners can change its quotas.")
    return membership.team, membership


@login_required
@require_GET
def quota(request):
    return redirect("quotas:team_quota", team_id=request.user.current_team().pk)


@login_required
@require_GET
def team_quota(request, team_id):
    team, membership = _get_quota_access(request, team_id)
    manages = request.user.is_staff or bool(membership and membership.is_owner)
    return render(
        request,
        "quotas/team_quota.html",
        {
            "team": team,
            "membership": membership,
            "manages": manages,
            "quota": selectors.quota_summary(team, request.user),
            "members": selectors.member_usage(team) if manages else None,
            "entries": selectors.ledger(team, user=None if manages else request.user)[:25],
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def team_quota_edit(request, team_id):
    team, _ = _get_quota_access(request, team_id, manage=True)
    form = QuotaForm(request.POST or None, instance=team)
    if request.method == "POST" and form.is_valid():
        services.set_limits(team, **{name: form.cleaned_data[name] for name in LIMIT_FIELDS})
        messages.success(request, "Quotas saved. They apply to the next submission.")
        return redirect("quotas:team_quota", team_id=team.pk)
    return render(
        request,
        "quotas/team_quota_edit.html",
        {"team": team, "form": form},
        status=400 if form.errors else 200,
    )
