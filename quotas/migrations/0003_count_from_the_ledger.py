# The ledger becomes enough to count use on its own: it names the request it settles by
# id (no foreign key into the generator) and carries the admission time of every entry.
# Existing entries get `admitted = created`; generator 0004 then sets each settlement's
# to its request's admission time, which only the generator's table knows.

from django.db import migrations, models
from django.db.models import F


def admitted_is_created(apps, schema_editor):
    UsageEntry = apps.get_model("quotas", "UsageEntry")
    UsageEntry.objects.update(admitted=F("created"))


class Migration(migrations.Migration):
    dependencies = [
        ("quotas", "0002_rename_usage_table"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="usageentry", name="usage_one_settlement_per_request"
        ),
        migrations.SeparateDatabaseAndState(
            # Same column, same values: only the foreign key constraint and its index go.
            database_operations=[
                migrations.AlterField(
                    model_name="usageentry",
                    name="request",
                    field=models.UUIDField(blank=True, null=True, db_column="request_id"),
                ),
            ],
            state_operations=[
                migrations.RemoveField(model_name="usageentry", name="request"),
                migrations.AddField(
                    model_name="usageentry",
                    name="request_id",
                    field=models.UUIDField(blank=True, null=True),
                ),
            ],
        ),
        migrations.AddConstraint(
            model_name="usageentry",
            constraint=models.UniqueConstraint(
                condition=models.Q(("kind__in", ["charge", "refund"])),
                fields=("request_id",),
                name="usage_one_settlement_per_request",
            ),
        ),
        migrations.AddField(
            model_name="usageentry",
            name="admitted",
            field=models.DateTimeField(null=True),
        ),
        migrations.RunPython(admitted_is_created, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="usageentry",
            name="admitted",
            field=models.DateTimeField(),
        ),
        migrations.AddIndex(
            model_name="usageentry",
            index=models.Index(fields=["team", "admitted"], name="usage_team_admitted"),
        ),
        migrations.AddIndex(
            model_name="usageentry",
            index=models.Index(fields=["admitted"], name="usage_admitted"),
        ),
    ]
