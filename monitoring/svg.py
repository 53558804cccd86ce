"""Small server-rendered SVG charts of our own: no JS, no inline styles (the CSP forbids
them), colours from CSS classes (monitoring.css: one colour per meaning), labelled axes
inside the chart, a <title>/<desc> for screen readers and a <title> per mark; the page
puts a legend and a table with the same numbers beside each chart.

Every chart draws in a fixed 400-unit-wide box scaled to its container with its aspect
kept, so its text stays legible from a phone to a wide screen.
"""

from itertools import count

from django.utils.html import escape, format_html
from django.utils.safestring import mark_safe

_ids = count(1)
WIDTH = 400


def _frame(title: str, desc: str, height: float, body: list[str], css: str) -> str:
    n = next(_ids)
    head = format_html(
        '<svg class="chart {}" viewBox="0 0 {} {}" role="img" '
        'aria-labelledby="chart-t{} chart-d{}">'
        '<title id="chart-t{}">{}</title><desc id="chart-d{}">{}</desc>',
        css,
        WIDTH,
        f"{height:.0f}",
        n,
        n,
        n,
        title,
        n,
        desc,
    )
    # Safe: format_html escaped the head, and every text in the body went through escape().
    return mark_safe(head + "".join(body) + "</svg>")  # noqa: S308


def _text(x, y, text, css="axis", anchor="start") -> str:
    return (
        f'<text class="{css}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'
    )


# The plot area of the charts over time, inside the 400-wide box.
LEFT, RIGHT, TOP, BOTTOM, HEIGHT = 46.0, 392.0, 10.0, 150.0, 172.0


def _x_axis(labels: list[str], body: list[str]) -> None:
    """The first, middle and last slot under the plot."""
    if not labels:
        return
    step = (RIGHT - LEFT) / len(labels)
    picks = sorted({0, len(labels) // 2, len(labels) - 1})
    for i in picks:
        if i == 0:
            anchor, x = "start", LEFT
        elif i == len(labels) - 1:
            anchor, x = "end", RIGHT
        else:
            anchor, x = "middle", LEFT + (i + 0.5) * step
        body.append(_text(x, HEIGHT - 6, labels[i], anchor=anchor))


def _y_axis(top_label: str, mid_label: str, body: list[str], bottom_label: str = "0") -> None:
    for y, label in ((TOP, top_label), ((TOP + BOTTOM) / 2, mid_label), (BOTTOM, bottom_label)):
        body.append(f'<line class="grid" x1="{LEFT}" y1="{y}" x2="{RIGHT}" y2="{y}"/>')
        body.append(_text(LEFT - 4, y + 4, label, anchor="end"))


def line_chart(title, desc, labels, series, top: float, fmt) -> str:
    """Lines over time on one scale from 0 to `top`: series = [(name, css, values)], a
    None value (too few requests to say) leaves a gap; fmt(value) labels the axis and
    each point's tooltip."""
    body: list[str] = []
    _y_axis(fmt(top), fmt(top / 2), body, fmt(0))
    _x_axis(labels, body)
    step = (RIGHT - LEFT) / max(len(labels), 1)
    for name, css, values in series:
        runs, run = [], []
        for i, v in enumerate(values):
            if v is None:
                if run:
                    runs.append(run)
                run = []
                continue
            x = LEFT + (i + 0.5) * step
            y = BOTTOM - min(v / top, 1.0) * (BOTTOM - TOP) if top else BOTTOM
            run.append((x, y))
            body.append(
                f'<circle class="dot {escape(css)}" cx="{x:.1f}" cy="{y:.1f}" r="2.5">'
                f"<title>{escape(labels[i])} · {escape(name)}: {escape(fmt(v))}</title></circle>"
            )
        if run:
            runs.append(run)
        for r in runs:
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in r)
            body.append(f'<polyline class="line {escape(css)}" points="{points}"/>')
    return _frame(title, desc, HEIGHT, body, "lines")


def stacked_columns(title, desc, labels, series) -> str:
    """Columns over time, one stacked segment per series: series = [(name, css, values)]."""
    body: list[str] = []
    totals = [sum(s[2][i] for s in series) for i in range(len(labels))]
    top = max(totals, default=0) or 1
    _y_axis(str(top), f"{top / 2:g}", body)
    _x_axis(labels, body)
    step = (RIGHT - LEFT) / max(len(labels), 1)
    for i, label in enumerate(labels):
        y = BOTTOM
        for name, css, values in series:
            v = values[i]
            if not v:
                continue
            h = v / top * (BOTTOM - TOP)
            y -= h
            body.append(
                f'<rect class="seg {escape(css)}" x="{LEFT + i * step + 1:.1f}" y="{y:.1f}" '
                f'width="{max(step - 2, 1):.1f}" height="{h:.1f}"><title>{escape(label)} · '
                f"{escape(name)}: {v}</title></rect>"
            )
    return _frame(title, desc, HEIGHT, body, "columns")


def stacked_bars(title, desc, rows, row_height=42) -> str:
    """One labelled 100 % bar per row: rows = [(label, [(name, css, value), ...])]; the
    label, above its bar, carries the row's total."""
    body = []
    for r, (label, parts) in enumerate(rows):
        total = sum(v for _, _, v in parts)
        y = r * row_height
        body.append(_text(2, y + 15, f"{label} ({total})", "label"))
        x = 2.0
        for name, css, v in parts:
            if not v:
                continue
            w = v / (total or 1) * (WIDTH - 4)
            body.append(
                f'<rect class="seg {escape(css)}" x="{x:.1f}" y="{y + 21}" width="{w:.1f}" '
                f'height="{row_height - 26}"><title>{escape(label)} · {escape(name)}: {v} '
                f"({v / total:.0%})</title></rect>"
            )
            x += w
    return _frame(title, desc, max(len(rows), 1) * row_height, body, "bars")


def heatmap(title, desc, grid, row_labels, levels=5) -> str:
    """A weekday × hour grid shaded by a 0-1 value (None: too few calls to say), with the
    days on the left and every sixth hour on top."""
    left, top, cell, body = 34.0, 14.0, 15.0, []
    for hour in range(0, 24, 6):
        body.append(_text(left + hour * cell, top - 4, f"{hour:02}:00"))
    for r, row in enumerate(grid):
        body.append(_text(left - 4, top + r * cell + cell - 4, row_labels[r], anchor="end"))
        for c, value in enumerate(row):
            if value is None:
                css = "heat-none"
            else:
                css = f"heat-{min(int(value * levels), levels - 1) if value > 0 else 0}"
            shown = "too few calls" if value is None else f"{value:.0%} failed"
            body.append(
                f'<rect class="{css}" x="{left + c * cell:.0f}" y="{top + r * cell:.0f}" '
                f'width="{cell - 1:.0f}" height="{cell - 1:.0f}"><title>{escape(row_labels[r])} '
                f"{c:02}:00 UTC: {shown}</title></rect>"
            )
    return _frame(title, desc, top + len(grid) * cell + 2, body, "heatmap")
