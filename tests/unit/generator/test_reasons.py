"""The policy's reasons in words: display names, not model ids."""

from generator.models import GenerationRequest
from generator.reasons import words
from generator.resilience.policy import Code, Reason
from generator.resilience.taxonomy import Outcome

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"


def say(reason):
    return words(reason, GenerationRequest.model_name)


def test_it_names_models_by_their_display_names():
    reason = Reason(Code.DOWNGRADE, FLASH, cause=Reason(Code.BREAKER_OPEN, PRO))
    assert say(reason) == (
        "Nano Banana Pro is down (its circuit breaker is open); downgrading to Nano Banana"
    )


def test_it_says_how_the_first_model_failed_through_the_wait_limit():
    reason = Reason(Code.OUT_OF_PATIENCE, PRO, Outcome.OVERLOADED, count=3, seconds=120)
    assert say(reason) == (
        "Nano Banana Pro was overloaded through your wait limit of 2 min (3 attempts)"
    )
    reason = Reason(Code.OUT_OF_PATIENCE, PRO, seconds=210)
    assert say(reason) == "Nano Banana Pro could not deliver within your wait limit of 3.5 min"
    reason = Reason(Code.QUOTA_PAST_PATIENCE, PRO, seconds=60)
    assert say(reason) == "Nano Banana Pro's quota had no free slot within your wait limit of 60 s"


def test_it_names_the_failure_behind_a_retry_that_waits_for_the_quota():
    assert say(Reason(Code.QUOTA_BUSY, PRO)) == "Nano Banana Pro's upstream quota has no headroom"
    assert say(Reason(Code.QUOTA_BUSY, PRO, Outcome.OVERLOADED)) == (
        "Nano Banana Pro failed (overloaded); its upstream quota has no headroom for the retry yet"
    )


def test_it_keeps_an_unknown_models_id():
    assert say(Reason(Code.CALLING, "retired-model")) == "calling retired-model"


def test_it_says_the_numbers_a_reason_carries():
    assert say(Reason(Code.FAILED_TIMES, PRO, Outcome.OVERLOADED, count=4)) == (
        "Nano Banana Pro failed 4 times (overloaded)"
    )
    assert say(Reason(Code.RATE_LIMITED, PRO, seconds=37.2)) == (
        "Nano Banana Pro is rate limited; retrying after the server's delay of 37 s"
    )
    assert say(Reason(Code.STRUGGLING, FLASH, rate=0.2)) == (
        "Nano Banana is struggling (20% success recently)"
    )


def test_it_has_words_for_every_code():
    for code in Code:
        cause = Reason(Code.NOT_FOUND, PRO)
        assert say(
            Reason(code, PRO, Outcome.OVERLOADED, count=2, seconds=5, rate=0.5, cause=cause)
        )


def test_it_says_when_a_model_failed_only_this_request():
    reason = Reason(Code.ONLY_THIS_REQUEST, PRO, Outcome.NO_IMAGE, count=3, rate=0.97)
    assert say(reason) == (
        "Nano Banana Pro was answering without an image for this request 3 times in a row "
        "while it served 97% of other calls"
    )
