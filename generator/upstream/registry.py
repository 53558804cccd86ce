"""Which provider object serves a model, with which endpoint and key.

Settings are read at every call (tests and `make run` change them), the objects are
cheap; the pooled HTTP clients behind them live in transport.py.
"""

from django.conf import settings

from generator.resilience.catalogue import ModelSpec
from generator.upstream.gemini import GeminiProvider
from generator.upstream.gemini_batch import GeminiBatchClient
from generator.upstream.openai_chat import OpenAIChatProvider
from generator.upstream.openai_images import OpenAICompatible, OpenAIImagesProvider

# The sandbox accepts any key; sending a fixed one means a real key can never reach it.
SANDBOX_KEY = "sandbox-key"


# The OpenAI-compatible routes, on one endpoint and key (a relay serves both).
OPENAI_COMPATIBLE = {"openai": OpenAIImagesProvider, "openai-chat": OpenAIChatProvider}


def get_provider(spec: ModelSpec) -> GeminiProvider | OpenAICompatible:
    sandbox = settings.UPSTREAM_SANDBOX
    if spec.provider == "gemini":
        if sandbox:
            return GeminiProvider(settings.SANDBOX_URL, SANDBOX_KEY, settings.GEMINI_API_VERSION)
        return GeminiProvider(
            settings.GEMINI_BASE_URL, settings.GEMINI_API_KEY, settings.GEMINI_API_VERSION
        )
    if spec.provider in OPENAI_COMPATIBLE:
        provider = OPENAI_COMPATIBLE[spec.provider]
        if sandbox:
            return provider(f"{settings.SANDBOX_URL}/v1", SANDBOX_KEY)
        return provider(settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY)
    raise ValueError(f"Model {spec.id}: unknown provider {spec.provider!r}")


def get_batch_client(spec: ModelSpec) -> GeminiBatchClient:
    """Batch mode for a Gemini model, on the same endpoint and key as its direct calls."""
    if spec.provider != "gemini":
        raise ValueError(f"Model {spec.id}: Batch mode is spoken by the Gemini provider only")
    return GeminiBatchClient(get_provider(spec), inline_max_bytes=settings.BATCH_INLINE_MAX_BYTES)
