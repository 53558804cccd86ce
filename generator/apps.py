from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _upper(value):
    return value.upper() if isinstance(value, str) else value


def _unicode_upper_on_sqlite(sender, connection, **kwargs):
    """SQLite's own UPPER() and LIKE fold ASCII letters alone ("é" stays "é"); Postgres
    folds every letter. With Python's upper() as SQLite's UPPER(), the gallery's search
    (GenerationRequestQuerySet.filtered) finds "Café" by "CAFÉ" on both databases."""
    if connection.vendor == "sqlite":
        connection.connection.create_function("UPPER", 1, _upper, deterministic=True)


class GeneratorConfig(AppConfig):
    name = "generator"
    verbose_name = "Image generation"

    def ready(self):
        connection_created.connect(_unicode_upper_on_sqlite, dispatch_uid="generator-sqlite-upper")
