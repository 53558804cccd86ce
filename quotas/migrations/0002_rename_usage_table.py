from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("quotas", "0001_initial"),
        # accounts no longer claims the table before it is renamed.
        ("accounts", "0003_usage_entry_moved_to_quotas"),
    ]

    operations = [
        # The app's own table name, like every other model's.
        migrations.AlterModelTable(name="usageentry", table=None),
    ]
