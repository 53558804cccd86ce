"""Periodic work, run by `python manage.py rqcron config.cron` (make run starts it).

Every task here is idempotent and safe to run on several machines at once, so running
more than one cron process only costs a little duplicate work.
"""

from rq import cron

from generator.reconcile import reconcile
from generator.retention import purge_deleted

cron.register(reconcile, queue_name="maintenance", interval=30, name="reconcile")
cron.register(purge_deleted, queue_name="maintenance", interval=3600, name="purge-deleted")

# --- policy and health ---

# --- quotas ---

# --- monitoring ---
from monitoring import jobs as monitoring_jobs  # noqa: E402

cron.register(
    monitoring_jobs.roll_up, queue_name="maintenance", interval=60, name="monitoring-rollup"
)
cron.register(
    monitoring_jobs.evaluate_alerts,
    queue_name="maintenance",
    interval=60,
    name="monitoring-alerts",
)
cron.register(
    monitoring_jobs.prune, queue_name="maintenance", interval=3600, name="monitoring-prune"
)
