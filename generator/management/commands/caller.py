"""`manage.py caller`: one caller process (generator/caller/process.py), as `make run`
starts CALLERS of them: it makes the workers' upstream calls, many at once."""

from django.core.management.base import BaseCommand

from generator.caller.process import main


class Command(BaseCommand):
    help = "Make the workers' upstream calls, up to CALLER_CONCURRENCY at once."

    def add_arguments(self, parser):
        parser.add_argument(
            "--concurrency",
            type=int,
            default=None,
            help="Calls in flight at most (default CALLER_CONCURRENCY).",
        )

    def handle(self, *args, concurrency=None, **options):
        main(concurrency)
