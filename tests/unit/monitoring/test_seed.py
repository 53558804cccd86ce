from collections import Counter

from django.core.management import call_command

from generator.models import Attempt, GenerationRequest
from monitoring.models import AttemptRollup


def test_it_seeds_exactly_the_asked_counts_and_rolls_them_up(db):
    call_command("seed_monitoring", attempts=500, requests=150, days=2, batch=100)
    assert GenerationRequest.objects.count() == 150
    assert Attempt.objects.count() == 500
    rolled = Counter()
    for row in AttemptRollup.objects.filter(period="hour"):
        rolled[row.outcome] += row.count
    assert rolled == Counter(Attempt.objects.values_list("outcome", flat=True))
