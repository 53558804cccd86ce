"""Which models can be called with the configured endpoints and keys."""

from django.conf import settings

from generator.resilience.catalogue import ModelSpec


def is_configured(spec: ModelSpec) -> bool:
    """Gemini models always are (the sandbox stands in without a key); the
    OpenAI-compatible ones (the Images API, a relay's chat completions) when an OpenAI
    key is set, or in sandbox mode."""
    if spec.provider == "gemini":
        return True
    return settings.UPSTREAM_SANDBOX or bool(settings.OPENAI_API_KEY)
