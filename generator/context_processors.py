from django.utils.functional import SimpleLazyObject

from generator.upstream.sandbox_profile import sandbox_profile


def sandbox(request):
    """`sandbox`: the profile the sandbox upstream plays ({} with the real upstream).
    Lazy: only the pages that show it ask the sandbox."""
    return {"sandbox": SimpleLazyObject(sandbox_profile)}
