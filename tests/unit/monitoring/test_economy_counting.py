"""Economy requests and their Batch mode lines are counted apart: not in the call
statistics, the tiles or the series, but in their own section; and the failure table by
hour the monitoring rollups learn is what the off-peak scheduler reads."""

import re
from datetime import UTC, datetime, timedelta

from django.urls import reverse
from django.utils import timezone

from generator import economy
from generator.models import BATCH_PROVIDER, Attempt, GenerationRequest, Route, UpstreamBatch
from monitoring import rollups
from monitoring.models import AttemptRollup, Period
from tests.factories import FLASH, PRO, make_request


def test_it_batch_lines_are_not_counted_as_calls(alice):
    now = timezone.now()
    row = make_request(
        alice, created=now - timedelta(minutes=10), attempts=[(PRO, "success", 1, 9000, 200)]
    )
    Attempt.objects.create(
        request=row, number=2, model=PRO, provider=BATCH_PROVIDER, outcome="overloaded",
        started=now - timedelta(minutes=9), latency_ms=39_600_000, http_status=503,
    )  # fmt: skip

    rollups.roll_up(now)
    counted = rollups.attempts_in(now - timedelta(hours=1), now)

    assert [(r["outcome"], r["count"]) for r in counted] == [("success", 1)]


def test_it_economy_requests_have_their_own_section_and_stay_out_of_the_tiles(
    client_for, staff, alice
):
    now = timezone.now()
    make_request(alice, created=now - timedelta(minutes=30))
    batch = UpstreamBatch.objects.create(
        model=PRO, image_size="1K", state="succeeded", lines=2, delivered=1
    )
    on_time = make_request(
        alice, created=now - timedelta(minutes=50), strategy="economy", served_model=PRO
    )
    late = make_request(
        alice, created=now - timedelta(minutes=50), strategy="economy", served_model=FLASH
    )
    GenerationRequest.objects.filter(pk=on_time.pk).update(
        route=Route.BATCH, upstream_batch=batch, deadline=now, cost_usd="0.067"
    )
    GenerationRequest.objects.filter(pk=late.pk).update(
        route=Route.DIRECT, deadline=now - timedelta(hours=1), cost_usd="0.039"
    )

    html = client_for(staff).get(reverse("monitoring:dashboard") + "?window=1h").content.decode()

    tile = re.search(r'id="tile-requests".*?</div>', html, re.S).group(0)
    assert ">1<" in tile  # the quality-first request only
    section = re.search(r'<table id="economy".*?</table>', html, re.S).group(0)
    cells = re.findall(r'data-label="([^"]+)">(.*?)</td>', section, re.S)
    values = {label: re.sub(r"<[^>]+>", " ", text).split() for label, text in cells}
    assert values["Batch"] == ["1"] and values["Directly"] == ["1"]
    assert values["By the deadline"][-3:] == ["1", "of", "2"]
    assert values["Charged"] == ["$0.11"]
    assert "1 succeeded" in html and "2 sent, 1 delivered" in html


def test_it_the_off_peak_scheduler_reads_the_table_the_rollups_learn(db):
    at = datetime(2026, 11, 20, 17, tzinfo=UTC)
    for outcome, count in (("success", 6), ("overloaded", 4)):
        AttemptRollup.objects.create(
            period=Period.HOUR, bucket=at, model=PRO, outcome=outcome, count=count
        )
    AttemptRollup.objects.create(
        period=Period.HOUR, bucket=at, model=FLASH, outcome="overloaded", count=9
    )

    table = economy.failures_by_hour(PRO, at + timedelta(days=1))

    assert table[17] == (4, 10)
    assert sum(total for _, total in table) == 10
