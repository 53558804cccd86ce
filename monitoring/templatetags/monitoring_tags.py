from django import template

register = template.Library()


@register.filter
def pct(value):
    """0.724 -> "72.4 %"; None (too few to say) -> "—"."""
    if value is None:
        return "—"
    return f"{value * 100:.1f} %"


@register.filter
def secs(ms):
    """Milliseconds as seconds for people: 1234 -> "1.2 s"; None -> "—"."""
    if ms is None:
        return "—"
    return f"{ms / 1000:.1f} s"


@register.filter
def index(sequence, i):
    """sequence[i], for the header that belongs to a cell of a loop."""
    return sequence[i]


@register.filter
def duration(step):
    """A slot's length for people: timedelta(minutes=5) -> "5 min", 1 hour -> "hour"."""
    from monitoring.dashboard import duration as describe

    return describe(step)
