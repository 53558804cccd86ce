"""GenerationRequest.reference_count: how many references a request was admitted with,
so that a step of a request without any (most) reads none. Filled in here for the
requests admitted before it."""

from django.db import migrations, models
from django.db.models import Count, OuterRef, Subquery


def count_references(apps, schema_editor):
    GenerationRequest = apps.get_model("generator", "GenerationRequest")
    links = GenerationRequest.references.through.objects
    counted = (
        links.filter(generationrequest_id=OuterRef("pk"))
        .values("generationrequest_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    GenerationRequest.objects.filter(pk__in=links.values("generationrequest_id")).update(
        reference_count=Subquery(counted)
    )


class Migration(migrations.Migration):
    dependencies = [("generator", "0007_prompt_trigram_index")]

    operations = [
        migrations.AddField(
            model_name="generationrequest",
            name="reference_count",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.RunPython(count_references, migrations.RunPython.noop, elidable=True),
    ]
