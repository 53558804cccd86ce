"""Periodic work, run by `python manage.py rqcron config.cron` (make run starts it).

Every task here is idempotent and safe to run on several machines at once, so running
more than one cron process only costs a little duplicate work.
"""

from rq import cron

from generator.reconcile import reconcile

cron.register(reconcile, queue_name="default", interval=30, name="reconcile")

# --- policy and health ---

# --- quotas ---

# --- monitoring ---
