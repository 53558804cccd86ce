"""Small server-rendered SVG charts of our own: no JS, no inline styles (the CSP
forbids them), colours from CSS classes, and a <title>/<desc> for screen readers; every
chart is shown beside a table with the same numbers."""

from itertools import count

from django.utils.html import escape, format_html
from django.utils.safestring import mark_safe

_ids = count(1)


def _frame(title: str, desc: str, width: int, height: int, body: list[str], css: str) -> str:
    n = next(_ids)
    head = format_html(
        '<svg class="chart {}" viewBox="0 0 {} {}" role="img" '
        'aria-labelledby="chart-t{} chart-d{}" preserveAspectRatio="none">'
        '<title id="chart-t{}">{}</title><desc id="chart-d{}">{}</desc>',
        css,
        width,
        height,
        n,
        n,
        n,
        title,
        n,
        desc,
    )
    # Safe: format_html escaped the head, and every text in the body went through escape().
    return mark_safe(head + "".join(body) + "</svg>")  # noqa: S308


def stacked_columns(title, desc, labels, series, height=160) -> str:
    """Columns over time, one stacked segment per series: series = [(name, css, values)]."""
    width = max(len(labels), 1) * 12
    totals = [sum(s[2][i] for s in series) for i in range(len(labels))]
    top = max(totals, default=0) or 1
    body = []
    for i, label in enumerate(labels):
        y = height
        for name, css, values in series:
            v = values[i]
            if not v:
                continue
            h = v / top * (height - 4)
            y -= h
            body.append(
                f'<rect class="seg {escape(css)}" x="{i * 12 + 1}" y="{y:.2f}" width="10" '
                f'height="{h:.2f}"><title>{escape(label)} · {escape(name)}: {v}</title></rect>'
            )
    return _frame(title, desc, width, height, body, "columns")


def stacked_bars(title, desc, rows, series_names, height_per_row=22) -> str:
    """One horizontal 100 % bar per row: rows = [(label, [(css, value), ...])]."""
    width, body = 400, []
    for r, (label, parts) in enumerate(rows):
        total = sum(v for _, v in parts) or 1
        x = 0.0
        for (css, v), name in zip(parts, series_names, strict=False):
            if not v:
                continue
            w = v / total * width
            body.append(
                f'<rect class="seg {escape(css)}" x="{x:.2f}" y="{r * height_per_row + 2}" '
                f'width="{w:.2f}" height="{height_per_row - 4}"><title>{escape(label)} · '
                f"{escape(name)}: {v}</title></rect>"
            )
            x += w
    return _frame(title, desc, width, max(len(rows), 1) * height_per_row, body, "bars")


def heatmap(title, desc, grid, row_labels, levels=5) -> str:
    """A grid of cells shaded by a 0-1 value (None: too few calls to say)."""
    cell, body = 16, []
    for r, row in enumerate(grid):
        for c, value in enumerate(row):
            if value is None:
                css = "heat-none"
            else:
                css = f"heat-{min(int(value * levels), levels - 1) if value > 0 else 0}"
            shown = "too few calls" if value is None else f"{value:.0%} failed"
            body.append(
                f'<rect class="{css}" x="{c * cell}" y="{r * cell}" width="{cell - 1}" '
                f'height="{cell - 1}"><title>{escape(row_labels[r])} {c:02}:00 UTC: '
                f"{shown}</title></rect>"
            )
    return _frame(title, desc, 24 * cell, len(grid) * cell, body, "heatmap")
