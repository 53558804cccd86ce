# The usage ledger now belongs to the quotas app (quotas 0001 took over the table as
# it is); accounts forgets it without dropping anything.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_quotas_and_usage_ledger"),
        ("quotas", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="UsageEntry")],
            database_operations=[],
        ),
    ]
