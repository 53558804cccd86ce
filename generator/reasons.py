"""The policy's reasons in words, made where they are shown (the request's status and
fallback lines, the attempt log, the detail page and the API), with the models'
display names. The policy itself (generator/resilience/policy.py) says only codes and
numbers."""

from collections.abc import Callable

from generator.resilience.policy import Code, Reason
from generator.resilience.taxonomy import Outcome


def duration_words(s: float) -> str:
    """A duration as a person reads it: "45 s", "2 min", "3.5 min", "11 h"."""
    if s >= 5400:
        hours = round(s / 1800) / 2  # to the half hour
        return f"{hours:g} h"
    if s >= 90:
        minutes = round(s / 30) / 2  # to the half minute
        return f"{minutes:g} min"
    return f"{s:.0f} s"


def day_and_time(moment) -> str:
    """A time with its day, "4 Dec 17:42", for words read later, perhaps the next day,
    where a time alone would be wrong."""
    return f"{moment.day} {moment:%b %H:%M}"


# How a model was failing, for "Nano Banana Pro was overloaded through your wait limit".
_FAILING = {
    Outcome.OVERLOADED: "overloaded",
    Outcome.UNAVAILABLE: "unavailable",
    Outcome.SERVER_ERROR: "failing with server errors",
    Outcome.TIMEOUT: "timing out",
    Outcome.NETWORK: "unreachable",
    Outcome.NO_IMAGE: "answering without an image",
    Outcome.MALFORMED: "answering with unreadable responses",
    Outcome.RATE_LIMITED: "rate limited",
}


def words(reason: Reason | None, name: Callable[[str], str]) -> str:
    """One line a person can read; `name(model_id)` gives a model's display name."""
    if reason is None:
        return ""
    m = name(reason.model) if reason.model else ""
    outcome = reason.outcome
    match reason.code:
        case Code.DELIVERED:
            return f"Delivered by {m}"
        case Code.CALLING:
            return f"calling {m}"
        case Code.BACKOFF:
            return f"{m} failed ({outcome}); retrying with backoff"
        case Code.RATE_LIMITED:
            return f"{m} is rate limited; retrying after the server's delay of {duration_words(reason.seconds)}"
        case Code.BREAKER_OPEN:
            return f"{m} is down (its circuit breaker is open)"
        case Code.OUT_OF_PATIENCE:
            limit = duration_words(reason.seconds)
            if not reason.count:
                return f"{m} could not deliver within your wait limit of {limit}"
            how = _FAILING.get(outcome, "failing")
            tries = f"{reason.count} attempt{'s' if reason.count > 1 else ''}"
            return f"{m} was {how} through your wait limit of {limit} ({tries})"
        case Code.QUOTA_PAST_PATIENCE:
            return f"{m}'s quota had no free slot within your wait limit of {duration_words(reason.seconds)}"
        case Code.QUOTA_BUSY:
            if outcome:
                return (
                    f"{m} failed ({outcome}); its upstream quota has no headroom for the retry yet"
                )
            return f"{m}'s upstream quota has no headroom"
        case Code.ALL_BUSY:
            return "Every model's upstream quota is busy; trying again shortly."
        case Code.DAILY_QUOTA:
            return f"{m}'s daily quota is used up"
        case Code.NOT_FOUND:
            return f"{m} is not found upstream"
        case Code.STRUGGLING:
            return f"{m} is struggling ({reason.rate or 0:.0%} success recently)"
        case Code.ONLY_THIS_REQUEST:
            how = _FAILING.get(outcome, "failing")
            return (
                f"{m} was {how} for this request {reason.count} times in a row while it "
                f"served {reason.rate or 0:.0%} of other calls"
            )
        case Code.FAILED_TIMES:
            what = f" ({outcome})" if outcome else ""
            return f"{m} failed {reason.count} times{what}"
        case Code.NOT_RETRIED:
            label = Outcome(outcome).label if outcome else "failed"
            return f"{m}: {label}; not retried"
        case Code.ATTEMPTS_USED:
            return f"gave up after {reason.count} attempts (the last: {m} {outcome})"
        case Code.DEADLINE_PASSED:
            return "the deadline passed"
        case Code.OUT_OF_TIME:
            return "out of time"
        case Code.ALL_TRIED:
            return f"every model in the chain was tried ({reason.count} attempts)"
        case Code.NONE_LEFT:
            return f"{words(reason.cause, name)}, and no model is left in the chain"
        case Code.NO_MODEL:
            return "no model in the chain"
        case Code.NONE_IN_TIME:
            return f"{words(reason.cause, name)}; no model can be called before the time is up"
        case Code.DOWNGRADE:
            return f"{words(reason.cause, name)}; downgrading to {m}"
    raise ValueError(f"no words for {reason.code}")
