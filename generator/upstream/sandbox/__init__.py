"""The sandbox upstream server (see docs/sandbox.md): `python manage.py sandbox`."""


def build_sandbox(profile: str, seed: int, time_scale: float):
    """A Sandbox for the configured catalogue and profiles (settings.MODEL_CATALOGUE_FILE,
    settings.SANDBOX_PROFILES_FILE). Imported lazily: needs Django settings."""
    from django.conf import settings

    from generator.resilience.catalogue import get_catalogue
    from generator.upstream.sandbox.profiles import Quota, builtin_profiles, load_profiles
    from generator.upstream.sandbox.server import Sandbox

    catalogue = get_catalogue()
    quotas = {m.id: Quota(rpm=m.rpm, ipm=m.ipm, rpd=m.rpd) for m in catalogue.models.values()}
    quotas["*"] = Quota(rpm=50, ipm=50)
    profiles = load_profiles(settings.SANDBOX_PROFILES_FILE or None, builtin_profiles(quotas))
    models = {m.id: m.provider for m in catalogue.models.values()}
    return Sandbox(profiles, models, profile=profile, seed=seed, time_scale=time_scale)
