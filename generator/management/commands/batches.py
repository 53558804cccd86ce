from django.core.management.base import BaseCommand

from generator.batching import tick


class Command(BaseCommand):
    help = (
        "Move economy requests on: release those whose off-peak hour came, close, send "
        "and poll Batch mode batches, deliver their images or send their requests the "
        "normal way. What the cron runs; safe at any time, on any machine."
    )

    def handle(self, *args, **options):
        self.stdout.write(f"Batches: {tick()}")
