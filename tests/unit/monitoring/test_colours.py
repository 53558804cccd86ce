"""One colour per meaning on the monitoring page: no outcome, model, window line or
heatmap level shares its colour with another (green used to mean both "success" and
"Pro")."""

import re
from pathlib import Path

CSS = Path(__file__).resolve().parents[3] / "static" / "css" / "monitoring.css"


def colours() -> dict[str, str]:
    """{class: colour} of every colour class a chart fills with."""
    found = {}
    for css_class, colour in re.findall(
        r"^\.((?:o|m|heat)-[\w-]+) \{ fill: (#[0-9a-f]{6}); \}", CSS.read_text(), re.M
    ):
        found[css_class] = colour.lower()
    return found


def test_it_gives_every_meaning_its_own_colour():
    found = colours()
    assert {"o-success", "o-overloaded", "m-0", "m-1", "heat-0", "heat-4"} <= set(found)
    by_colour = {}
    for css_class, colour in found.items():
        by_colour.setdefault(colour, []).append(css_class)
    assert {c: v for c, v in by_colour.items() if len(v) > 1} == {}


def test_it_colours_the_key_as_the_chart():
    text = CSS.read_text()
    for css_class, colour in colours().items():
        assert f".key.{css_class} {{ background: {colour}; }}" in text, css_class
