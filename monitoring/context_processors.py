def alerts(request):
    """Open alerts for the banner, for staff only; lazy, so pages that do not render the
    banner cost no query."""
    user = getattr(request, "user", None)
    if user is None or not user.is_staff:
        return {}
    from django.utils.functional import SimpleLazyObject

    from monitoring.models import Alert

    return {"active_alerts": SimpleLazyObject(lambda: list(Alert.objects.filter(resolved=None)))}
