from django.core.management.base import BaseCommand

from monitoring import jobs


class Command(BaseCommand):
    help = (
        jobs.roll_up.__doc__ or "Run the monitoring rollup job once (cron runs it periodically)."
    )

    def handle(self, *args, **options):
        self.stdout.write(str(jobs.roll_up()))
