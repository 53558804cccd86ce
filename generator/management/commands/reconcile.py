from django.core.management.base import BaseCommand

from generator.reconcile import reconcile


class Command(BaseCommand):
    help = (
        "Take back requests from dead workers, re-queue requests whose job vanished from "
        "Redis, and settle quota left reserved. Safe to run at any time, on any machine."
    )

    def handle(self, *args, **options):
        self.stdout.write(f"Reconciled: {reconcile()}")
