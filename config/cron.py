"""Periodic work, run by `python manage.py rqcron config.cron` (make run starts it).

Every task here is idempotent and safe to run on several machines at once, so running
more than one cron process only costs a little duplicate work. All of them go to the
"maintenance" queue, which workers serve before generation steps.
"""

from django.conf import settings
from rq import cron

from generator.batching import tick as batches
from generator.reconcile import reconcile
from generator.retention import purge_deleted, sweep_orphan_files
from monitoring import jobs as monitoring

TASKS = [
    (reconcile, 30, "reconcile"),
    (batches, settings.BATCH_TICK_SECONDS, "batches"),
    (purge_deleted, 3600, "purge-deleted"),
    (sweep_orphan_files, 3600, "sweep-orphan-files"),
    (monitoring.roll_up, 60, "monitoring-rollup"),
    (monitoring.evaluate_alerts, 60, "monitoring-alerts"),
    (monitoring.prune, 3600, "monitoring-prune"),
]

for task, seconds, name in TASKS:
    cron.register(task, queue_name="maintenance", interval=seconds, name=name)
