from decimal import Decimal
from pathlib import Path

import pytest

from generator.resilience.catalogue import CatalogueError, load_catalogue
from generator.resilience.strategies import STRATEGIES


def test_it_has_defaults_for_the_gemini_models_and_an_openai_one():
    catalogue = load_catalogue()
    assert [m.id for m in catalogue.chain("quality-first")][:2] == [
        "gemini-3-pro-image-preview",
        "gemini-2.5-flash-image",
    ]
    assert catalogue["gemini-3-pro-image"].provider == "gemini"
    assert catalogue["gpt-image-1"].provider == "openai"


def test_it_prices_by_the_size_the_model_delivers():
    catalogue = load_catalogue()
    assert catalogue["gemini-3-pro-image-preview"].price("4K") == Decimal("0.24")
    # Flash is 1K only: a 4K request falls back to a 1K image at the 1K price.
    flash = catalogue["gemini-2.5-flash-image"]
    assert flash.deliverable_size("4K") == "1K"
    assert flash.price("4K") == Decimal("0.039")


def test_it_leaves_out_models_whose_provider_is_not_configured():
    chain = load_catalogue().chain("stability-first", available=lambda m: m.provider == "gemini")
    assert [m.id for m in chain] == ["gemini-2.5-flash-image", "gemini-3-pro-image-preview"]


def test_it_a_toml_file_changes_models_adds_models_and_replaces_chains(tmp_path):
    path = tmp_path / "catalogue.toml"
    path.write_text(
        """
[models."gemini-2.5-flash-image"]
rpm = 500

[models."sdxl-relay"]
provider = "openai"
display_name = "SDXL via relay"
quality_rank = 1
sizes = ["1K"]
price_usd = { "1K" = 0.01 }

[strategies]
quality-first = ["gemini-3-pro-image", "sdxl-relay"]
"""
    )
    catalogue = load_catalogue(path)
    assert catalogue["gemini-2.5-flash-image"].rpm == 500
    assert catalogue["gemini-2.5-flash-image"].ipm == 100  # untouched fields stay
    assert catalogue["sdxl-relay"].price("1K") == Decimal("0.01")
    assert [m.id for m in catalogue.chain("quality-first")] == ["gemini-3-pro-image", "sdxl-relay"]


def test_it_adds_a_gemini_model_behind_a_relays_chat_completions(tmp_path):
    path = tmp_path / "catalogue.toml"
    path.write_text(
        """
[models."google/gemini-3-pro-image-preview"]
provider = "openai-chat"
display_name = "Nano Banana Pro (relay)"
quality_rank = 3
sizes = ["1K", "2K"]
price_usd = { "1K" = 0.134, "2K" = 0.134 }

[strategies]
quality-first = ["google/gemini-3-pro-image-preview", "gemini-2.5-flash-image"]
"""
    )
    catalogue = load_catalogue(path)
    assert catalogue.primary("quality-first").provider == "openai-chat"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[models."gemini-2.5-flash-image"]\nrpmm = 5', "unknown fields"),
        ('[models."new"]\nprovider = "gemini"', "missing"),
        ('[strategies]\nquality-first = ["nope"]', "unknown models"),
        ('[strategies]\nfastest = ["gemini-2.5-flash-image"]', "Unknown strategy"),
        ('[models."gemini-2.5-flash-image"]\nprovider = "midjourney"', "unknown provider"),
        ("not toml [", "Cannot read"),
    ],
)
def test_it_explains_a_bad_catalogue_file(tmp_path, text, message):
    path = tmp_path / "catalogue.toml"
    path.write_text(text)
    with pytest.raises(CatalogueError, match=message):
        load_catalogue(path)


def test_it_batch_mode_costs_half_the_gemini_price_and_the_openai_model_has_none():
    catalogue = load_catalogue()
    pro = catalogue["gemini-3-pro-image-preview"]
    assert pro.batch_price("1K") == pro.price("1K") / 2
    assert pro.batch_price("4K") == pro.price("4K") / 2
    assert catalogue["gemini-2.5-flash-image"].batch_price("4K") == Decimal("0.0195")
    assert not catalogue["gpt-image-1"].has_batch


def test_it_economy_is_a_strategy_with_the_best_model_first():
    catalogue = load_catalogue()
    assert "economy" in STRATEGIES
    assert catalogue.primary("economy").id == "gemini-3-pro-image-preview"


def test_it_the_request_model_offers_exactly_the_catalogue_strategies():
    from generator.models import Strategy

    assert tuple(Strategy.values) == STRATEGIES
    assert Strategy.ECONOMY.label == "Economy"


def test_it_a_toml_file_sets_batch_prices_for_every_size_or_none(tmp_path):
    path = tmp_path / "catalogue.toml"
    path.write_text('[models."gemini-2.5-flash-image"]\nbatch_price_usd = {"1K" = 0.02}\n')
    assert load_catalogue(path)["gemini-2.5-flash-image"].batch_price("1K") == Decimal("0.02")
    path.write_text('[models."gemini-3-pro-image-preview"]\nbatch_price_usd = {"1K" = 0.05}\n')
    with pytest.raises(CatalogueError, match="Batch mode price is needed for every size"):
        load_catalogue(path)


def test_it_the_documented_example_file_loads():
    example = Path(__file__).resolve().parents[3] / "docs" / "catalogue.example.toml"
    catalogue = load_catalogue(example)
    assert catalogue["gemini-2.5-flash-image"].rpm == 500
    assert catalogue["sdxl-relay"].price("1K") == Decimal("0.01")
    assert [m.id for m in catalogue.chain("quality-first")] == [
        "gemini-3-pro-image",
        "gemini-2.5-flash-image",
        "sdxl-relay",
    ]
