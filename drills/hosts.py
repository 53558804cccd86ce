"""The multi-host drill (`make drill-hosts`): three "hosts" on this machine share one
Postgres, one Redis and one S3 bucket; one host is killed outright mid-run and the
others are restarted one at a time, under steady load. Nothing may be lost or doubled.

    services   ROLES=redis,sandbox,s3 make run: a private Redis on a unix socket (never
               the shared 6379), the sandbox upstream, SeaweedFS with the bucket
    host-a/b/c ROLES=web,workers,cron make run, each with its own VAR_DIR and port

The drill, all on loopback:
1. submits a request every SUBMIT_EVERY seconds through the hosts' web servers in turn
   (the JSON API, three teams); a host that refuses the connection is skipped, as a
   reverse proxy would;
2. SIGKILLs host-c's whole process tree (its web, cron, workers and work horses) while
   it holds running requests, and times how long the survivors take to take them over
   (their leases expire, the reconciler hands them back);
3. restarts host-a then host-b with SIGTERM (workers finish or hand back their step),
   each back up before the next goes down; then brings host-c back;
4. stops submitting, waits for every accepted request to end, and checks: none lost,
   none twice, none failed, every image readable through every host, the quota ledger
   balanced.

It needs a Postgres it may create a database in (DRILL_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/steady_drill_hosts, dropped and created afresh).
The figures go to stdout and var/drill-hosts/report.json; the exit status is 0 only
when every check passed.
"""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import dj_database_url
import httpx

ROOT = Path(__file__).resolve().parent.parent
DIR = ROOT / "var" / "drill-hosts"
DATABASE_URL = os.environ.get(
    "DRILL_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/steady_drill_hosts"
)
SUBMIT_EVERY = float(os.environ.get("DRILL_SUBMIT_EVERY", "1.0"))
STEADY_S = 30  # load on three healthy hosts before the kill
AFTER_KILL_S = 20  # load on two hosts after the kill, before the restarts
DRAIN_S = 300  # the longest wait for the last requests to end

# Every host runs production settings (DEBUG off) with the defaults that matter here
# left alone: LEASE_SECONDS 30 and the reconciler every 30 s decide the take-over time.
# Emulated time runs 10x (a 20-40 s Pro call takes 2-4 s), and a stopping worker gives
# its step 2 s before handing it back, so the restarts exercise both paths. A request's
# time budget (1200 s, 120 s at 10x) is raised to 6 real minutes: the drill is about
# hosts dying and restarting, and on a shared two-core machine a queue that waits for
# CPU would otherwise fail requests "out of time" for reasons that are not the drill's.
HOST_ENV = {
    "POLICY_REQUEST_BUDGET_S": "3600",
    "DEBUG": "0",
    "SECRET_KEY": "drill-" + "x" * 50,
    "HTTPS": "0",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "TIME_SCALE": "0.1",
    "WORKERS": "2",
    "WEB_PROCESSES": "1",
    "WEB_THREADS": "4",
    "WORKER_STOP_GRACE_SECONDS": "2",
    "PYTHONUNBUFFERED": "1",
}
HANDED_BACK_LOG = "handed back: the worker is stopping"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# --- processes ---------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(pid: int) -> list[int]:
    """pid and every process below it (make run starts each child in its own session,
    and RQ's work horses make their own process group, so no group signal reaches all)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += tree(int(child))
    return found


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@dataclass
class Host:
    name: str
    env: dict
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def var_dir(self) -> Path:
        return DIR / self.name

    def start(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        log = (self.var_dir / "up.log").open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "config.up"],
            cwd=ROOT,
            env={**self.env, "VAR_DIR": str(self.var_dir), "PORT": str(self.port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def wait_ready(self, timeout: float = 180.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.var_dir / 'up.log'}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} was not ready within {timeout:.0f} s")

    def stop(self, timeout: float = 90.0) -> float:
        """SIGTERM to make run, as a process manager would; seconds until it exited."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        return time.monotonic() - started

    def kill(self) -> list[int]:
        """SIGKILL the whole process tree at once: frozen first, so that nothing can fork
        or clean up in between; returns the pids it had."""
        pids = tree(self.process.pid)
        signal_all(pids, signal.SIGSTOP)
        pids = sorted(set(pids + [p for pid in pids for p in tree(pid)]))
        signal_all(pids, signal.SIGKILL)
        self.process.wait()
        return pids

    def handed_back(self) -> int:
        text = (self.var_dir / "up.log").read_text(errors="replace")
        return text.count(HANDED_BACK_LOG)


# --- load ------------------------------------------------------------------------------


class Load(threading.Thread):
    """Submits one request every SUBMIT_EVERY seconds to the next host in turn."""

    def __init__(
        self,
        hosts: list[Host],
        tokens: list[str],
        every: float = SUBMIT_EVERY,
        prefix: str = "drill",
        words: str = "a lighthouse at dusk",
    ):
        super().__init__(daemon=True)
        self.hosts = hosts
        self.tokens = tokens
        self.every = every  # seconds between two submissions
        self.prefix = prefix  # each submission's tag: the first word of its prompt
        self.words = words  # the rest of the prompt (trigger words go here)
        self.latencies: list[float] = []  # seconds each accepted submission took
        self.stopping = threading.Event()
        self.accepted: dict[str, str] = {}  # request id -> tag
        self.unknown: list[str] = []  # tags whose answer never came back
        self.refused = 0  # every host refused the connection: never accepted
        self.rejected: Counter = Counter()  # HTTP status of any other answer
        self.per_host: Counter = Counter()
        self.redirected = 0  # submissions that went to another host than planned
        self.sent = 0

    def run(self) -> None:
        client = httpx.Client(timeout=15)
        turn = 0
        while not self.stopping.wait(self.every):
            turn += 1
            self._submit(client, turn)
        client.close()

    def _submit(self, client: httpx.Client, turn: int) -> None:
        tag = f"{self.prefix}-{turn:05d}"
        token = self.tokens[turn % len(self.tokens)]
        body = {"prompt": f"{tag} {self.words}", "strategy": "quality-first"}
        self.sent += 1
        for offset in range(len(self.hosts)):
            host = self.hosts[(turn + offset) % len(self.hosts)]
            began = time.monotonic()
            try:
                response = client.post(
                    f"{host.url}/api/v1/generations",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.ConnectError:
                continue  # never reached the host: safe to send elsewhere
            except httpx.TransportError:
                self.unknown.append(tag)  # sent, answer lost: looked up in the database
                return
            self.redirected += offset > 0
            if response.status_code == 202:
                self.latencies.append(time.monotonic() - began)
                self.accepted[response.json()["data"][0]["id"]] = tag
                self.per_host[host.name] += 1
            else:
                self.rejected[response.status_code] += 1
            return
        self.refused += 1


# --- the drill -------------------------------------------------------------------------


def create_database(url: str = DATABASE_URL) -> None:
    import psycopg

    config = dj_database_url.parse(url)
    name = config["NAME"]
    admin = psycopg.connect(
        host=config["HOST"] or "127.0.0.1",
        port=config["PORT"] or 5432,
        user=config["USER"] or "postgres",
        password=config["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def start_services() -> tuple[Host, dict]:
    services = Host(
        "services",
        {**os.environ, **HOST_ENV, "ROLES": "redis,sandbox,s3", "DATABASE_URL": DATABASE_URL},
    )
    for name in ("REDIS_URL", "STORAGE_URL", "GEMINI_API_KEY", "SANDBOX_URL"):
        services.env.pop(name, None)
    shared_file = services.var_dir / "services.env"
    shared_file.unlink(missing_ok=True)
    services.start()
    deadline = time.monotonic() + 120
    while not shared_file.exists():
        if services.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the services did not start; see {services.var_dir}/up.log")
        time.sleep(0.3)
    time.sleep(0.5)  # the sandbox starts right after the file is written
    shared = dict(line.split("=", 1) for line in shared_file.read_text().splitlines())
    return services, shared


def setup_django(shared: dict) -> None:
    os.environ.update({**shared, "DATABASE_URL": DATABASE_URL, **HOST_ENV})
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def make_tokens(count: int) -> list[str]:
    from accounts.models import ApiToken, Team, User

    tokens = []
    for n in range(count):
        user = User.objects.create_user(
            f"drill{n}@example.com", "drill-password-123", name=f"D{n}"
        )
        user.switch_team(Team.create_with_owner(f"Drill team {n}", user))
        tokens.append(ApiToken.issue(user, "drill")[1])
    return tokens


def running_on(pids: set[int]) -> set[str]:
    from generator.models import GenerationRequest, Status

    rows = GenerationRequest.objects.filter(status=Status.RUNNING).values_list("pk", "claimed_by")
    # claimed_by is host:pid of the work horse (generator.jobs.worker_name()).
    return {str(pk) for pk, holder in rows if holder and int(holder.rsplit(":", 1)[1]) in pids}


def wait_final(ids: list[str], timeout: float) -> None:
    from generator.models import FINAL_STATUSES, GenerationRequest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        open_ = GenerationRequest.objects.filter(pk__in=ids).exclude(status__in=FINAL_STATUSES)
        if not open_.exists():
            return
        time.sleep(1)


def postgres_connections() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


class Sampler(threading.Thread):
    """The most Postgres connections the drill's database had at once."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0
        self.stopping = threading.Event()

    def run(self):
        from django.db import connection

        while not self.stopping.wait(1):
            self.peak = max(self.peak, postgres_connections())
        connection.close()


def verify(load: Load, hosts: list[Host], tokens: list[str], report: dict) -> list[str]:

    from generator.models import GenerationRequest, Image, Status

    problems = []
    accepted = dict(load.accepted)
    # An answer lost on the way back: the request counts if the database has it.
    for tag in load.unknown:
        for row in GenerationRequest.objects.filter(prompt__startswith=f"{tag} "):
            accepted[str(row.pk)] = tag
    rows = {str(r.pk): r for r in GenerationRequest.objects.filter(pk__in=list(accepted))}
    states = Counter(r.status for r in rows.values())
    lost = [pk for pk in accepted if pk not in rows or rows[pk].status not in _final()]
    tags = Counter(r.prompt.split(" ", 1)[0] for r in GenerationRequest.objects.all())
    duplicates = sorted(tag for tag, n in tags.items() if n > 1)
    images_per_request = Counter(
        Image.objects.filter(request__in=list(rows)).values_list("request", flat=True)
    )
    report.update(
        sent=load.sent,
        accepted=len(accepted),
        answer_lost_but_accepted=len(accepted) - len(load.accepted),
        refused_by_every_host=load.refused,
        rejected=dict(load.rejected),
        sent_to_another_host=load.redirected,
        accepted_per_host=dict(load.per_host),
        delivered=states[Status.SUCCEEDED],
        failed=states[Status.FAILED],
        canceled=states[Status.CANCELED],
        lost=len(lost),
        duplicates=len(duplicates) + sum(n > 1 for n in images_per_request.values()),
        recovered_requests=sum(r.recoveries > 0 for r in rows.values()),
    )
    if lost:
        problems.append(f"{len(lost)} accepted requests never ended: {lost[:5]}")
    if duplicates:
        problems.append(f"submissions stored twice: {duplicates[:5]}")
    if states[Status.FAILED] or states[Status.CANCELED]:
        reasons = Counter(r.error_code for r in rows.values() if r.status != Status.SUCCEEDED)
        problems.append(f"requests that did not deliver: {dict(reasons)}")
    if load.rejected:
        problems.append(f"submissions refused with an error: {dict(load.rejected)}")

    # Every image through every host, compared with the hash stored at delivery.
    owner_token = {}
    for n, token in enumerate(tokens):
        owner_token[f"drill{n}@example.com"] = token
    unreadable = 0
    reads = 0
    client = httpx.Client(timeout=30)
    for image in Image.objects.filter(request__in=list(rows)).select_related("request__user"):
        token = owner_token[image.request.user.email]
        for host in hosts:
            reads += 1
            response = client.get(
                f"{host.url}/api/v1/generations/{image.request_id}/image",
                headers={"Authorization": f"Bearer {token}"},
            )
            if (
                response.status_code != 200
                or hashlib.sha256(response.content).hexdigest() != image.sha256
            ):
                unreadable += 1
    client.close()
    report.update(image_reads=reads, image_reads_failed=unreadable)
    if unreadable:
        problems.append(f"{unreadable} of {reads} image reads through the hosts failed")

    report["ledger"] = ledger(len(rows), states)
    if not report["ledger"]["balanced"]:
        problems.append(f"the quota ledger does not balance: {report['ledger']}")
    return problems


def ledger(requests: int, states: Counter) -> dict:
    """The quota ledger's totals, and whether it balances: `requests` reserved, each
    settled exactly once (a charge per success, a refund per failure or cancel), as much
    released as reserved, nothing still reserved. `states` counts the requests' statuses."""
    from django.apps import apps

    from generator.models import GenerationRequest, QuotaState, Status

    entry = next(m for m in apps.get_models() if m.__name__ == "UsageEntry")
    kinds = Counter()
    settled_per_request = Counter()
    reserved_usd = released_usd = 0
    for e in entry.objects.all():
        kinds[e.kind] += e.images
        if e.kind == "reserve":
            reserved_usd += e.amount_usd
        else:
            released_usd += e.reserved_usd
            settled_per_request[e.request_id] += 1
    still_reserved = GenerationRequest.objects.filter(quota_state=QuotaState.RESERVED).count()
    balanced = (
        kinds["reserve"] == requests
        and kinds["charge"] == states[Status.SUCCEEDED]
        and kinds["refund"] == states[Status.FAILED] + states[Status.CANCELED]
        and reserved_usd == released_usd
        and all(n == 1 for n in settled_per_request.values())
        and still_reserved == 0
    )
    return {
        "reserved_images": kinds["reserve"],
        "charged_images": kinds["charge"],
        "refunded_images": kinds["refund"],
        "reserved_usd": str(reserved_usd),
        "released_usd": str(released_usd),
        "still_reserved": still_reserved,
        "balanced": balanced,
    }


def _final():
    from generator.models import FINAL_STATUSES

    return FINAL_STATUSES


def main() -> int:
    began = time.monotonic()
    # A clean slate: the previous run's Redis dump, bucket and logs would muddle this one.
    shutil.rmtree(DIR, ignore_errors=True)
    DIR.mkdir(parents=True)
    report: dict = {"command": "make drill-hosts", "submit_every_s": SUBMIT_EVERY}
    say(f"database {DATABASE_URL} (created afresh)")
    create_database()
    services, shared = start_services()
    say(f"services up: Redis {shared['REDIS_URL']}, S3 {shared['AWS_S3_ENDPOINT_URL']}")
    host_env = {**os.environ, **shared, **HOST_ENV, "DATABASE_URL": DATABASE_URL}
    host_env["ROLES"] = "web,workers,cron"
    hosts = [Host(name, dict(host_env)) for name in ("host-a", "host-b", "host-c")]
    load = sampler = None
    try:
        # The first host migrates the database; the others start together once it has.
        hosts[0].start()
        say(f"{hosts[0].name} ready on {hosts[0].url} in {hosts[0].wait_ready():.1f} s")
        for host in hosts[1:]:
            host.start()
        for host in hosts[1:]:
            say(f"{host.name} ready on {host.url} in {host.wait_ready():.1f} s")
        setup_django(shared)
        tokens = make_tokens(3)
        sampler = Sampler()
        sampler.start()
        load = Load(hosts, tokens)
        load.start()
        say(f"steady load: one request every {SUBMIT_EVERY} s through the three hosts")
        time.sleep(STEADY_S)

        victim = hosts[2]
        deadline = time.monotonic() + 60
        while not running_on(set(tree(victim.process.pid))):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{victim.name} never held a running request")
            time.sleep(0.1)
        pids = set(victim.kill())
        killed_at = time.monotonic()
        orphaned = running_on(pids)
        say(f"SIGKILLed {victim.name}'s {len(pids)} processes; it held {len(orphaned)} requests")
        pending, taken = set(orphaned), {}
        while pending and time.monotonic() - killed_at < 180:
            for pk in pending - running_on(pids):
                taken[pk] = time.monotonic() - killed_at
            pending -= set(taken)
            time.sleep(0.25)
        report["killed_host_processes"] = len(pids)
        report["killed_host_running_requests"] = len(orphaned)
        report["takeover_s"] = round(max(taken.values()), 1) if taken else None
        say(f"the survivors took over all of them within {report['takeover_s']} s")
        if pending:
            raise RuntimeError(f"requests never taken over: {sorted(pending)}")
        time.sleep(AFTER_KILL_S)

        restarts = []
        for host in hosts[:2]:
            stopped = host.stop()
            host.start()
            back = host.wait_ready()
            restarts.append(
                {"host": host.name, "stop_s": round(stopped, 1), "ready_again_s": round(back, 1)}
            )
            say(f"restarted {host.name}: stopped in {stopped:.1f} s, ready {back:.1f} s later")
        report["rolling_restart"] = restarts
        victim.start()
        say(f"{victim.name} back, ready in {victim.wait_ready():.1f} s")
        time.sleep(5)
        load.stopping.set()
        load.join()
        say(f"load stopped after {load.sent} submissions; waiting for the last ones")
        wait_final(list(load.accepted), DRAIN_S)
        sampler.stopping.set()
        report["handed_back_on_stop"] = sum(h.handed_back() for h in hosts)
        report["peak_postgres_connections"] = sampler.peak
        problems = verify(load, hosts, tokens, report)
    finally:
        if load is not None:
            load.stopping.set()
        for host in [*hosts, services]:
            if host.process is not None and host.process.poll() is None:
                try:
                    host.stop(timeout=60)
                except subprocess.TimeoutExpired:
                    host.kill()
    report["duration_s"] = round(time.monotonic() - began)
    report["problems"] = problems
    (DIR / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    say("PASSED" if not problems else "FAILED: " + "; ".join(problems))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
