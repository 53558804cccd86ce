"""The model catalogue and the strategies' chains: configuration, not code.

Defaults below; a TOML file named by MODEL_CATALOGUE_FILE overrides or adds models and
strategies (see docs/catalogue.example.toml). Pure: no Django import at module level.
"""

import tomllib
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cache
from pathlib import Path

from generator.resilience.strategies import STRATEGIES, StrategyName

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGE_SIZES = ("1K", "2K", "4K")


@dataclass(frozen=True)
class ModelSpec:
    id: str  # the upstream model id, as sent on the wire
    provider: str  # one of PROVIDERS
    display_name: str
    quality_rank: int  # higher is better
    sizes: tuple[str, ...]  # image sizes the model can deliver
    price_usd: dict[str, Decimal]  # per image, by size
    max_reference_images: int  # 0: the model does not edit images
    rpm: int | None = None  # upstream quota: requests per minute (None: unknown / unlimited)
    ipm: int | None = None  # images per minute
    rpd: int | None = None  # requests per day
    read_timeout_s: float = 180.0
    connect_timeout_s: float = 10.0
    # Per image through the provider's Batch mode, by size; empty: the model has none.
    batch_price_usd: dict[str, Decimal] = field(default_factory=dict)

    def price(self, size: str) -> Decimal:
        """The price of one image at the size this model would deliver for `size`."""
        return self.price_usd[self.deliverable_size(size)]

    @property
    def has_batch(self) -> bool:
        return bool(self.batch_price_usd)

    def batch_price(self, size: str) -> Decimal:
        """The Batch mode price of one image at the size delivered for `size`."""
        return self.batch_price_usd[self.deliverable_size(size)]

    def deliverable_size(self, requested: str) -> str:
        """The largest size the model supports that is not larger than the request (a 4K
        request on a 1K-only model delivers 1K)."""
        order = {s: i for i, s in enumerate(IMAGE_SIZES)}
        fitting = [s for s in self.sizes if order[s] <= order.get(requested, 0)]
        return max(fitting, key=order.__getitem__) if fitting else self.sizes[0]


@dataclass(frozen=True)
class Catalogue:
    models: dict[str, ModelSpec]
    strategies: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __getitem__(self, model_id: str) -> ModelSpec:
        return self.models[model_id]

    def chain(self, strategy: str, *, available=None) -> tuple[ModelSpec, ...]:
        """The strategy's models in order, leaving out those whose provider is not
        configured (`available(spec)` false)."""
        specs = [self.models[m] for m in self.strategies[strategy]]
        return tuple(s for s in specs if available is None or available(s))

    def primary(self, strategy: str, *, available=None) -> ModelSpec:
        return self.chain(strategy, available=available)[0]


def _d(value) -> Decimal:
    return Decimal(str(value))


DEFAULT_MODELS = {
    "gemini-3-pro-image-preview": ModelSpec(
        id="gemini-3-pro-image-preview",
        provider="gemini",
        display_name="Nano Banana Pro",
        quality_rank=3,
        sizes=("1K", "2K", "4K"),
        price_usd={"1K": _d("0.134"), "2K": _d("0.134"), "4K": _d("0.24")},
        # Batch mode costs half the synchronous price (ai.google.dev pricing).
        batch_price_usd={"1K": _d("0.067"), "2K": _d("0.067"), "4K": _d("0.12")},
        max_reference_images=14,
        rpm=20,
        ipm=20,
        rpd=1000,
        read_timeout_s=180.0,
    ),
    "gemini-2.5-flash-image": ModelSpec(
        id="gemini-2.5-flash-image",
        provider="gemini",
        display_name="Nano Banana",
        quality_rank=2,
        sizes=("1K",),
        price_usd={"1K": _d("0.039")},
        batch_price_usd={"1K": _d("0.0195")},
        max_reference_images=3,
        rpm=150,
        ipm=100,
        rpd=10000,
        read_timeout_s=120.0,
    ),
    "gpt-image-1": ModelSpec(
        id="gpt-image-1",
        provider="openai",
        display_name="GPT Image (OpenAI-compatible)",
        quality_rank=1,
        sizes=("1K",),
        price_usd={"1K": _d("0.042")},
        max_reference_images=0,
        rpm=50,
        ipm=50,
        rpd=None,
        read_timeout_s=180.0,
    ),
}

# Google's GA id for the same model (the preview id is being retired): same limits and prices.
DEFAULT_MODELS["gemini-3-pro-image"] = replace(
    DEFAULT_MODELS["gemini-3-pro-image-preview"],
    id="gemini-3-pro-image",
    display_name="Nano Banana Pro (GA)",
)

DEFAULT_STRATEGIES = {
    # Quality first: the best model, retried within a wait budget, then downgrades.
    StrategyName.QUALITY_FIRST: (
        "gemini-3-pro-image-preview",
        "gemini-2.5-flash-image",
        "gpt-image-1",
    ),
    # Stability first: the steadiest model first; the best one only as a last resort.
    StrategyName.STABILITY_FIRST: (
        "gemini-2.5-flash-image",
        "gpt-image-1",
        "gemini-3-pro-image-preview",
    ),
    # Economy: the best model through Batch mode; if its batch cannot deliver in time,
    # the same chain as quality-first, called directly.
    StrategyName.ECONOMY: (
        "gemini-3-pro-image-preview",
        "gemini-2.5-flash-image",
        "gpt-image-1",
    ),
}

_FIELDS = {f for f in ModelSpec.__dataclass_fields__ if f != "id"}
# Gemini's own API; an OpenAI-compatible Images API; an OpenAI-compatible relay's chat
# completions (generator/upstream/: gemini.py, openai_images.py, openai_chat.py).
PROVIDERS = ("gemini", "openai", "openai-chat")


class CatalogueError(ValueError):
    pass


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """The default catalogue, overridden by the TOML file at `path` if given.

    The file may change fields of existing models (`[models."gemini-2.5-flash-image"]
    rpm = 500`), add models (all fields required), and replace strategies
    (`[strategies] quality-first = ["gemini-3-pro-image", "gemini-2.5-flash-image"]`).
    """
    models = dict(DEFAULT_MODELS)
    strategies = dict(DEFAULT_STRATEGIES)
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CatalogueError(f"Cannot read the model catalogue {path}: {exc}") from exc
        for model_id, fields in data.get("models", {}).items():
            unknown = set(fields) - _FIELDS
            if unknown:
                raise CatalogueError(f"Model {model_id}: unknown fields {sorted(unknown)}")
            fields = dict(fields)
            for prices in ("price_usd", "batch_price_usd"):
                if prices in fields:
                    fields[prices] = {k: _d(v) for k, v in fields[prices].items()}
            if "sizes" in fields:
                fields["sizes"] = tuple(fields["sizes"])
            if model_id in models:
                models[model_id] = replace(models[model_id], **fields)
            else:
                missing = {"provider", "display_name", "quality_rank", "sizes", "price_usd"}
                missing -= set(fields)
                if missing:
                    raise CatalogueError(f"New model {model_id}: missing {sorted(missing)}")
                fields.setdefault("max_reference_images", 0)
                models[model_id] = ModelSpec(id=model_id, **fields)
        for name, chain in data.get("strategies", {}).items():
            strategies[name] = tuple(chain)
    for model in models.values():
        if model.provider not in PROVIDERS:
            raise CatalogueError(
                f"Model {model.id}: unknown provider {model.provider!r}; "
                f"known: {', '.join(PROVIDERS)}"
            )
        bad = set(model.sizes) - set(IMAGE_SIZES) or set(model.sizes) - set(model.price_usd)
        if bad or not model.sizes:
            raise CatalogueError(f"Model {model.id}: sizes must be priced and among {IMAGE_SIZES}")
        if model.batch_price_usd and set(model.sizes) - set(model.batch_price_usd):
            raise CatalogueError(f"Model {model.id}: a Batch mode price is needed for every size")
    for name, chain in strategies.items():
        if name not in STRATEGIES:
            raise CatalogueError(f"Unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
        unknown = [m for m in chain if m not in models]
        if unknown or not chain:
            raise CatalogueError(f"Strategy {name}: unknown models {unknown}")
    return Catalogue(models=models, strategies=strategies)


@cache
def get_catalogue() -> Catalogue:
    """The configured catalogue (settings.MODEL_CATALOGUE_FILE), read once per process."""
    from django.conf import settings

    return load_catalogue(settings.MODEL_CATALOGUE_FILE or None)
