"""The strategies' names, defined once (pure: no Django, no I/O). The catalogue gives each
its chain of models, the policy its limits, the web form and the API their labels."""

from enum import StrEnum


class StrategyName(StrEnum):
    QUALITY_FIRST = "quality-first"
    STABILITY_FIRST = "stability-first"
    # Half price by a deadline hours away: Gemini's Batch mode, or the calmest hours
    # before the deadline; the normal chain (as quality-first) when that cannot deliver.
    ECONOMY = "economy"


STRATEGIES = tuple(StrategyName)
DEFAULT_STRATEGY = StrategyName.QUALITY_FIRST
