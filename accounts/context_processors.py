from django.utils.functional import SimpleLazyObject


def may_use_admin(user) -> bool:
    """Whether the admin would show this user anything: staff alone only gets "You don't
    have permission to view or edit anything", so the menu offers Admin to superusers and
    to staff with at least one permission (the demo operator's read-only request log)."""
    if not (user.is_active and user.is_staff):
        return False
    return user.is_superuser or bool(user.get_all_permissions())


def teams(request):
    """The signed-in user's current team and all their teams, for the header's switcher,
    and whether the menu offers the admin. Lazy: pages that do not show them cost no
    queries."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "current_team": SimpleLazyObject(user.current_team),
        "user_teams": SimpleLazyObject(lambda: list(user.teams())),
        "shows_admin": SimpleLazyObject(lambda: may_use_admin(user)),
    }
