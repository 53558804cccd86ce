"""The gallery's prompt search, indexed on Postgres (docs/decisions.md, "Search").

GenerationRequestQuerySet.filtered() searches with `prompt__icontains`, which Django
writes on Postgres as `UPPER("prompt"::text) LIKE UPPER('%…%')`: a trigram GIN index on
that very expression serves it (a leading-wildcard LIKE can use no b-tree), and the
search means what it always meant (a case-insensitive substring). SQLite has no such
index and keeps scanning: the migration does nothing there.
"""

from django.db import migrations

INDEX = "req_prompt_trgm"
CREATE = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    # IF NOT EXISTS: on a big table an operator may build it first, CONCURRENTLY.
    f"CREATE INDEX IF NOT EXISTS {INDEX} ON generator_generationrequest "
    'USING gin ((UPPER("prompt"::text)) gin_trgm_ops)',
]
DROP = [f"DROP INDEX IF EXISTS {INDEX}"]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for sql in statements:
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("generator", "0006_economy_batches"),
    ]

    operations = [
        migrations.RunPython(_run(CREATE), _run(DROP), elidable=False),
    ]
