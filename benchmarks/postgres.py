"""What the database benchmarks share: Django set up on a Postgres database, migrated."""


def setup_postgres() -> bool:
    """Set Django up and migrate; False (having said why) when DATABASE_URL is not
    Postgres, on which these benchmarks are defined."""
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        print("Set DATABASE_URL to a Postgres database (the benchmark is defined on Postgres).")
        return False
    call_command("migrate", verbosity=0)
    return True
