# quotas 0003 gave every ledger entry an admission time equal to its own creation time.
# A charge or refund counts for the day its request was admitted, which is the request's
# `created`: set it from there, so that use counted from the ledger alone matches what
# was counted from the requests before.

from django.db import migrations
from django.db.models import OuterRef, Subquery


def settlements_admitted_with_their_request(apps, schema_editor):
    UsageEntry = apps.get_model("quotas", "UsageEntry")
    GenerationRequest = apps.get_model("generator", "GenerationRequest")
    admitted = GenerationRequest.objects.filter(pk=OuterRef("request_id")).values("created")
    settled = UsageEntry.objects.filter(kind__in=["charge", "refund"])
    settled.filter(request_id__in=GenerationRequest.objects.values("pk")).update(
        admitted=Subquery(admitted[:1])
    )


class Migration(migrations.Migration):
    dependencies = [
        ("generator", "0003_request_finished_index"),
        ("quotas", "0003_count_from_the_ledger"),
    ]

    operations = [
        migrations.RunPython(settlements_admitted_with_their_request, migrations.RunPython.noop),
    ]
