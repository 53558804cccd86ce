"""Alert rules, evaluated over a recent window (cron, every minute), de-duplicated.

A rule that starts firing opens one Alert row and notifies once (ADMINS by e-mail, and
ALERT_WEBHOOK_URL if set); while it keeps firing the row is only touched; when it stops,
the row is resolved (kept as history) and a "resolved" notice goes out. The rules start
from docs/upstream.md's naive monitoring, but over windows with minimum counts
instead of lifetime totals.
"""

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import mail_admins
from django.db import IntegrityError, transaction
from django.utils import timezone
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from generator.models import GenerationRequest
from generator.resilience.taxonomy import Outcome
from monitoring import rollups, sources
from monitoring.models import Alert

# A webhook receiver that is restarting gets this many tries, about 1.5 s apart at most.
WEBHOOK_ATTEMPTS = 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Firing:
    rule: str
    subject: str
    message: str
    severity: str = Alert.Severity.WARNING
    details: dict = field(default_factory=dict)


def _delivered_rate(reqs, minutes) -> list[Firing]:
    total = sum(r["count"] for r in reqs)
    delivered = sum(r["count"] for r in reqs if r["status"] == "succeeded")
    if total < settings.ALERT_MIN_REQUESTS:
        return []
    share = delivered / total
    if share >= settings.ALERT_DELIVERED_RATE_BELOW:
        return []
    return [
        Firing(
            "delivered_rate",
            "",
            f"Only {share:.0%} of requests delivered in the last {minutes} min "
            f"({delivered} of {total}).",
            Alert.Severity.CRITICAL,
            {"delivered": delivered, "requests": total},
        )
    ]


def _share_503(attempts, minutes) -> list[Firing]:
    errors = sum(r["count"] for r in attempts if r["outcome"] != Outcome.SUCCESS)
    n503 = sum(r["http_503"] for r in attempts if r["outcome"] != Outcome.SUCCESS)
    if errors < settings.ALERT_MIN_ERRORS or n503 / errors <= settings.ALERT_503_SHARE_ABOVE:
        return []
    return [
        Firing(
            "errors_503",
            "",
            f"503s are {n503 / errors:.0%} of failed attempts in the last {minutes} min "
            f"({n503} of {errors}): the provider is overloaded or down.",
            details={"http_503": n503, "errors": errors},
        )
    ]


def _auth(attempts, minutes) -> list[Firing]:
    per_model = {}
    for r in attempts:
        if r["outcome"] == Outcome.AUTH:
            per_model[r["model"]] = per_model.get(r["model"], 0) + r["count"]
    return [
        Firing(
            "auth",
            model,
            f"{_attempts(n)} on {_name(model)} {'was' if n == 1 else 'were'} refused as "
            f"unauthorised (401/403) in the last {minutes} min: check the API key and the "
            "project's access.",
            Alert.Severity.CRITICAL,
            {"attempts": n},
        )
        for model, n in sorted(per_model.items())
        if n >= settings.ALERT_AUTH_ERRORS
    ]


def _attempts(n: int) -> str:
    return "1 attempt" if n == 1 else f"{n} attempts"


def _name(model: str) -> str:
    """A model as people know it ("Nano Banana Pro"), as everywhere on the page; the
    alert's subject keeps the id, which the admin's filters and the webhook match on."""
    return GenerationRequest.model_name(model)


def _breakers() -> list[Firing]:
    firing = []
    for b in sources.breakers() or []:
        if b.get("breaker") != "open":
            continue
        # sources.breakers() gives an open breaker the reason of its latest transition.
        why = b.get("why", "")
        firing.append(
            Firing(
                "breaker_open",
                b["model"],
                f"The circuit breaker for {_name(b['model'])} is open"
                + (f" ({why})" if why else "")
                + ": requests skip it until it recovers.",
                details={"open_until": str(b.get("open_until") or ""), "reason": why},
            )
        )
    return firing


def _quota() -> list[Firing]:
    usage = sources.quota_usage()
    if not usage:
        return []
    return [
        Firing(
            "team_quota",
            str(t["team_id"]),
            f"Team {t['team']} has used {float(t['percent']):.0f} % of its quota.",
            details={"percent": float(t["percent"])},
        )
        for t in usage.get("teams", [])
        if t.get("percent") is not None and float(t["percent"]) >= settings.ALERT_QUOTA_PERCENT
    ]


def firing(now: datetime) -> list[Firing]:
    minutes = settings.ALERT_WINDOW_MINUTES
    start = now - timedelta(minutes=minutes)
    reqs = rollups.requests_in(start, now)
    attempts = rollups.attempts_in(start, now)
    return [
        *_delivered_rate(reqs, minutes),
        *_share_503(attempts, minutes),
        *_auth(attempts, minutes),
        *_breakers(),
        *_quota(),
    ]


def evaluate(now: datetime | None = None) -> dict:
    """Open, refresh and resolve alerts; returns what changed (for the cron log)."""
    now = now or timezone.now()
    current = {(f.rule, f.subject): f for f in firing(now)}
    opened, resolved = [], []
    open_alerts = {(a.rule, a.subject): a for a in Alert.objects.filter(resolved=None)}
    for key, f in current.items():
        if key in open_alerts:
            Alert.objects.filter(pk=open_alerts[key].pk).update(last_seen=now, message=f.message)
            continue
        try:
            with transaction.atomic():
                alert = Alert.objects.create(
                    rule=f.rule,
                    subject=f.subject,
                    severity=f.severity,
                    message=f.message[:500],
                    details=f.details,
                    started=now,
                    last_seen=now,
                )
        except IntegrityError:
            continue  # another evaluator opened it first: it notifies, not us
        opened.append(alert)
    for key, alert in open_alerts.items():
        # Filtered update: only one evaluator resolves (and notifies) an episode.
        if key not in current and Alert.objects.filter(pk=alert.pk, resolved=None).update(
            resolved=now
        ):
            alert.resolved = now
            resolved.append(alert)
    for alert in opened:
        notify(alert, "firing")
    for alert in resolved:
        notify(alert, "resolved")
    return {"opened": len(opened), "resolved": len(resolved), "active": len(current)}


def notify(alert: Alert, state: str) -> None:
    """E-mail ADMINS and POST to the webhook; a failure is logged, never raised (the
    alert stays recorded and visible in the banner)."""
    subject = f"[{state}] {alert.message}"[:180]
    link = f"{settings.SITE_URL}/monitoring/"
    body = (
        f"{alert.message}\n\nRule: {alert.rule} {alert.subject}\n"
        f"Since: {alert.started:%Y-%m-%d %H:%M} UTC\n"
        + (f"Resolved: {alert.resolved:%Y-%m-%d %H:%M} UTC\n" if alert.resolved else "")
        + f"\n{link}\n"
    )
    try:
        mail_admins(subject, body, fail_silently=False)
    except Exception as exc:
        log.error("Could not e-mail the alert %s: %s", alert.pk, exc)
    if settings.ALERT_WEBHOOK_URL:
        payload = {
            "state": state,
            "rule": alert.rule,
            "subject": alert.subject,
            "severity": alert.severity,
            "message": alert.message,
            "details": alert.details,
            "started": alert.started.isoformat(),
            "resolved": alert.resolved.isoformat() if alert.resolved else None,
            "url": link,
        }
        post_webhook(settings.ALERT_WEBHOOK_URL, payload)
    Alert.objects.filter(pk=alert.pk).update(notified=True)


def post_webhook(url: str, payload: dict) -> bool:
    """POST the alert; a connection failure or a 5xx is tried again twice (a receiver
    restarting must not lose an alert), a 4xx is not (it will not change)."""
    if not url.startswith(("http://", "https://")):
        log.error("ALERT_WEBHOOK_URL must be an http(s) URL; got %r", url)
        return False
    try:
        return _post_with_retries(url, json.dumps(payload).encode())
    except Exception as exc:
        log.error("Could not post the alert to the webhook: %s", exc)
        return False


def _worth_retrying(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500
    return isinstance(exc, urllib.error.URLError | OSError)


@retry(
    retry=retry_if_exception(_worth_retrying),
    stop=stop_after_attempt(WEBHOOK_ATTEMPTS),
    wait=wait_exponential(multiplier=0.5, max=4),
    reraise=True,
)
def _post_with_retries(url: str, body: bytes) -> bool:
    # urllib, not httpx: httpx belongs to generator/upstream, and this is one small POST.
    request = urllib.request.Request(  # noqa: S310 (the caller checked the scheme)
        url,
        data=body,
        headers={"Content-Type": "application/json", "User-Agent": "steadyshot-alerts"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return 200 <= response.status < 300
