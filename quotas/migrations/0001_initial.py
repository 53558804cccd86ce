# The usage ledger moves from accounts to quotas without touching its rows: this
# migration only tells Django's state that quotas owns the existing table, and
# accounts 0003 removes it from accounts' state. 0002 then renames the table.

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("accounts", "0002_quotas_and_usage_ledger"),
        ("generator", "0003_request_finished_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="UsageEntry",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "kind",
                            models.CharField(
                                choices=[
                                    ("reserve", "Reserved"),
                                    ("charge", "Charged"),
                                    ("refund", "Refunded"),
                                ],
                                max_length=10,
                            ),
                        ),
                        ("images", models.PositiveIntegerField()),
                        ("amount_usd", models.DecimalField(decimal_places=4, max_digits=12)),
                        (
                            "reserved_usd",
                            models.DecimalField(decimal_places=4, default=0, max_digits=12),
                        ),
                        ("model", models.CharField(blank=True, max_length=80)),
                        ("reason", models.CharField(blank=True, max_length=200)),
                        ("created", models.DateTimeField(default=django.utils.timezone.now)),
                        (
                            "request",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="usage_entries",
                                to="generator.generationrequest",
                            ),
                        ),
                        (
                            "team",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="usage_entries",
                                to="accounts.team",
                            ),
                        ),
                        (
                            "user",
                            models.ForeignKey(
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "verbose_name_plural": "usage entries",
                        "db_table": "accounts_usageentry",
                        "indexes": [
                            models.Index(fields=["team", "-created"], name="usage_team_created")
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                condition=models.Q(("kind__in", ["charge", "refund"])),
                                fields=("request",),
                                name="usage_one_settlement_per_request",
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
