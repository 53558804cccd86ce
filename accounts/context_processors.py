from django.utils.functional import SimpleLazyObject


def teams(request):
    """The signed-in user's current team and all their teams, for the header's switcher.
    Lazy: pages that do not show them cost no queries."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "current_team": SimpleLazyObject(user.current_team),
        "user_teams": SimpleLazyObject(lambda: list(user.teams())),
    }
