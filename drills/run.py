"""The failure drills (`make drills`, or `python -m drills.run NAME...`): the whole
product as `make run` starts it (web, workers with the RQ scheduler, cron, the sandbox),
under steady load, while one thing goes wrong; then every accepted request must have
ended exactly once, the quota ledger must balance and no file may be left behind.

    worker-kill       SIGKILL the process holding a request mid-call (the caller); make
                      run starts it again
    scheduler-lock    SIGKILL the worker whose scheduler holds the lock while delayed
                      retries wait: the worker make run starts again finds the dead
                      scheduler's lock in Redis; the retries must run within seconds
    redis-flush       FLUSHALL, then Redis killed and started again empty
    postgres-drop     pg_terminate_backend on every connection of the product mid-job
                      (needs DRILL_DATABASE_URL on Postgres; skipped on SQLite)
    upstream-hang     the upstream stops answering past the read timeout
    upstream-close    the upstream closes connections without an answer
    upstream-garbage  the upstream answers 200 with broken JSON
    load              several users submitting for minutes with several workers:
                      accepted, delivered, lost (must be 0), p95 submit latency

Each drill runs in its own process with its own VAR_DIR (var/drills/<name>), its own
Redis on a unix socket (started by the drill, so that it can be flushed and killed
without stopping the product) and a fresh database: SQLite in VAR_DIR, or
DRILL_DATABASE_URL's Postgres database (dropped and created afresh; the drill appends
its name). A supervisor thread restarts `make run` whenever it exits, as systemd's
Restart=always would. Each drill prints its figures (also in var/drills/<name>.json)
and exits non-zero on a violation; with no name, every drill runs in turn and the exit
status is non-zero if any failed.
"""

import contextlib
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

import httpx
import redis as redis_client

from config.redis_server import redis_command, wait_for_socket
from drills import hosts
from drills.hosts import Host, Load, say, signal_all, tree

ROOT = hosts.ROOT
DIR = ROOT / "var" / "drills"
BASE_DATABASE_URL = os.environ.get("DRILL_DATABASE_URL", "")
DRAIN_S = 300  # the longest wait for the last requests to end
# The steady load under every drill: one submission this often (seconds), which two
# workers keep up with at TIME_SCALE 0.1 (a 20-40 s Pro call takes 2-4 s).
STEADY_EVERY = float(os.environ.get("DRILL_STEADY_EVERY", "2.0"))
# A retry later than this after its time, or after the restarted product was ready:
# the scheduler did not resume (RQ alone: up to 600 s).
RETRY_LATE_LIMIT_S = 60
LOAD_USERS = int(os.environ.get("DRILL_LOAD_USERS", "4"))
LOAD_RATE = float(os.environ.get("DRILL_LOAD_RATE", "1.0"))  # submissions per second
LOAD_MINUTES = float(os.environ.get("DRILL_LOAD_MINUTES", "2"))
LOAD_WORKERS = os.environ.get("DRILL_LOAD_WORKERS", "4")
PRO = "gemini-3-pro-image-preview"
# The upstream-hang drill's read timeout (real seconds): above a slow Pro call (40 s
# emulated, 4 s real) on a busy machine, far below the built-in 120-180 s.
READ_TIMEOUT_S = 10.0


class Stack(Host):
    """`make run` for one drill: ROLES web, workers, cron and sandbox, on the drill's
    own Redis."""

    @property
    def var_dir(self) -> Path:
        return DIR / self.name

    def log_text(self) -> str:
        path = self.var_dir / "up.log"
        return path.read_text(errors="replace") if path.exists() else ""


class Redis:
    """A redis-server on a unix socket in the drill's directory, without persistence:
    killed and started again, it comes back empty."""

    def __init__(self, directory: Path):
        self.cmd, self.socket = redis_command(directory, persist=False)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?db=0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        wait_for_socket(self.socket, self.process)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


class Supervisor(threading.Thread):
    """Starts `make run` again whenever it exits (Restart=always, RestartSec=1)."""

    def __init__(self, stack: Stack):
        super().__init__(daemon=True)
        self.stack = stack
        self.stopping = threading.Event()
        self.restarts: list[float] = []  # monotonic times of each restart

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            if self.stack.process.poll() is not None and not self.stopping.is_set():
                time.sleep(1)
                say(f"make run exited ({self.stack.process.returncode}); starting it again")
                self.stack.start()
                self.restarts.append(time.monotonic())


@dataclass
class Drill:
    name: str
    stack: Stack
    redis: Redis
    tokens: list[str]
    load: Load
    supervisor: Supervisor
    extra: list[Load] = field(default_factory=list)
    report: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def submit(self, words: str, count: int, prefix: str) -> Load:
        """Submit `count` requests whose prompts carry `words` (trigger words), now."""
        batch = Load([self.stack], self.tokens, prefix=prefix, words=words)
        client = httpx.Client(timeout=30)
        for n in range(1, count + 1):
            batch._submit(client, n)
        client.close()
        self.extra.append(batch)
        return batch

    def accepted(self) -> list[str]:
        return [pk for batch in (self.load, *self.extra) for pk in batch.accepted]


# --- processes -----------------------------------------------------------------------


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def kill_tree(pid: int) -> list[int]:
    """SIGKILL pid and everything below it, frozen first (hosts.Host.kill's way)."""
    pids = tree(pid)
    signal_all(pids, signal.SIGSTOP)
    pids = sorted(set(pids + [p for q in pids for p in tree(q)]))
    signal_all(pids, signal.SIGKILL)
    return pids


def running_requests() -> list:
    from generator.models import GenerationRequest, Status

    # Held by a process (host:pid): not between two holders (the queue of calls).
    return list(GenerationRequest.objects.filter(status=Status.RUNNING, claimed_by__contains=":"))


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise RuntimeError(f"{what} within {timeout:.0f} s")


# --- the drills ------------------------------------------------------------------------


def worker_kill(d: Drill) -> None:
    d.submit(f"sandbox:slow=60@{PRO}*1 a heron", 4, "slowcall")
    # A request held mid-call by the caller making it (a worker holds one only for the
    # milliseconds of deciding or recording).
    held = wait_for(
        lambda: [r for r in running_requests() if _is_caller(r.claimed_by)],
        60,
        "no call was in flight",
    )[0]
    holder = int(held.claimed_by.rsplit(":", 1)[1])
    mark = len(d.stack.log_text())
    pids = kill_tree(holder)
    killed = time.monotonic()
    say(f"SIGKILLed {held.claimed_by} (its {len(pids)} processes) holding request {held.pk}")
    wait_for(lambda: restarted(d, mark), 120, "the caller was not started again")
    d.report["restarted_after_s"] = round(time.monotonic() - killed, 1)
    ended = _wait_moved_on(held.pk, held.step, 240)
    d.report["killed_request_moved_on_after_s"] = round(ended - killed, 1)


def restarted(d: Drill, mark: int) -> bool:
    """make run started a dead child again since its log was `mark` long (or, had it
    exited instead, the drill's supervisor started make run again)."""
    return bool(d.supervisor.restarts) or "starting again" in d.stack.log_text()[mark:]


def _is_caller(claimed_by: str) -> bool:
    pid = claimed_by.rsplit(":", 1)[1]
    try:
        return b"caller" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def _wait_moved_on(pk, step: int, timeout: float) -> float:
    from generator.models import GenerationRequest, Status

    def moved():
        row = GenerationRequest.objects.get(pk=pk)
        return row.step > step or row.status != Status.RUNNING

    wait_for(moved, timeout, f"request {pk} was never taken back")
    return time.monotonic()


def scheduler_lock(d: Drill) -> None:
    from django.utils import timezone
    from rq.scheduler import SCHEDULER_KEY_TEMPLATE, SCHEDULER_LOCKING_KEY_TEMPLATE

    from generator import queue
    from generator.models import GenerationRequest, Status

    connection = queue.get_queue().connection
    batch = d.submit("sandbox:rate_limited*1 a kestrel", 6, "retry")
    ids = list(batch.accepted)

    def waiting():
        rows = GenerationRequest.objects.filter(pk__in=ids, status=Status.WAITING)
        return [r for r in rows if r.waiting_until and r.waiting_until > timezone.now()]

    waits = wait_for(waiting, 90, "no retry waited")
    holder = connection.get(SCHEDULER_LOCKING_KEY_TEMPLATE % queue.QUEUE).decode()
    pid = int(connection.hget(SCHEDULER_KEY_TEMPLATE % holder, "pid"))
    worker = parent_of(pid)
    mark = len(d.stack.log_text())
    kill_tree(worker)
    killed = time.monotonic()
    say(f"SIGKILLed the worker {worker} whose scheduler {pid} held the lock; {len(waits)} wait")
    wait_for(lambda: restarted(d, mark), 120, "the worker was not started again")
    d.report["lock_still_held_at_restart"] = (
        connection.get(SCHEDULER_LOCKING_KEY_TEMPLATE % queue.QUEUE) is not None
    )
    d.stack.wait_ready()
    ready = timezone.now()
    d.report["ready_again_after_kill_s"] = round(time.monotonic() - killed, 1)
    hosts.wait_final([str(r.pk) for r in waits], DRAIN_S)
    late = []
    for row in waits:
        retry = row.attempts.filter(started__gte=row.waiting_until).order_by("number").first()
        if retry is not None:
            # Due while the product was down: it could not run before it was back.
            due = max(row.waiting_until, ready)
            late.append((retry.started - due).total_seconds())
    d.report["waiting_retries"] = len(waits)
    d.report["retries_late_s_max"] = round(max(late), 1) if late else None
    d.report["lock_taken_over"] = "scheduler lock of queue default released" in d.stack.log_text()
    if len(late) < len(waits):
        d.problems.append(f"{len(waits) - len(late)} waiting retries never ran")
    if late and max(late) > RETRY_LATE_LIMIT_S:
        d.problems.append(f"a retry ran {max(late):.0f} s after its time (or the restart)")


def redis_flush(d: Drill) -> None:
    from generator.models import GenerationRequest, Status

    d.submit("sandbox:rate_limited*1 a plover", 4, "flushwait")
    d.submit(f"sandbox:slow=40@{PRO}*1 a swift", 3, "flushrun")
    time.sleep(5)
    d.report["open_at_flush"] = dict(
        Counter(
            GenerationRequest.objects.exclude(
                status__in=[Status.SUCCEEDED, Status.FAILED, Status.CANCELED]
            ).values_list("status", flat=True)
        )
    )
    connection = redis_client.Redis.from_url(d.redis.url)
    connection.flushall()
    d.redis.kill()
    say(f"Redis flushed and killed with {d.report['open_at_flush']} open; back in 3 s")
    time.sleep(3)
    d.redis.start()
    d.report["redis_down_s"] = 3


def postgres_drop(d: Drill) -> None:
    from django.db import connection

    d.submit(f"sandbox:slow=40@{PRO}*1 an owl", 4, "pgdrop")
    wait_for(running_requests, 60, "no request was running")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        d.report["connections_terminated"] = cursor.fetchone()[0]
    say(f"terminated {d.report['connections_terminated']} Postgres connections mid-job")
    time.sleep(2)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        d.report["connections_terminated_again"] = cursor.fetchone()[0]


def _upstream(words: str, count: int = 6):
    def run(d: Drill) -> None:
        from generator.models import Attempt

        batch = d.submit(words, count, "fault")
        hosts.wait_final(list(batch.accepted), DRAIN_S)
        outcomes = Counter(
            Attempt.objects.filter(request__in=list(batch.accepted)).values_list(
                "outcome", flat=True
            )
        )
        d.report["fault_requests"] = len(batch.accepted)
        d.report["fault_attempt_outcomes"] = dict(outcomes)
        if sum(outcomes.values()) <= len(batch.accepted):
            d.problems.append("the upstream fault was never met: no request retried")

    return run


def load(d: Drill) -> None:
    d.load.stopping.set()  # the steady load gives way to the users
    d.load.join()
    users = [
        Load([d.stack], [token], every=LOAD_USERS / LOAD_RATE, prefix=f"user{n}")
        for n, token in enumerate(d.tokens[:LOAD_USERS])
    ]
    for user in users:
        user.start()
    say(f"{LOAD_USERS} users, {LOAD_RATE}/s in all, for {LOAD_MINUTES} min")
    time.sleep(LOAD_MINUTES * 60)
    for user in users:
        user.stopping.set()
    for user in users:
        user.join()
    d.extra.extend(users)
    latencies = sorted(x for user in users for x in user.latencies)
    d.report["users"] = LOAD_USERS
    d.report["rate_per_s"] = LOAD_RATE
    d.report["minutes"] = LOAD_MINUTES
    d.report["workers"] = int(LOAD_WORKERS)
    if latencies:
        d.report["submit_latency_p50_ms"] = round(latencies[len(latencies) // 2] * 1000)
        d.report["submit_latency_p95_ms"] = round(
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))] * 1000
        )


def catalogue_with_short_timeouts(path: Path) -> Path:
    from generator.resilience.catalogue import DEFAULT_MODELS

    path.write_text(
        "".join(f'[models."{m}"]\nread_timeout_s = {READ_TIMEOUT_S}\n\n' for m in DEFAULT_MODELS)
    )
    return path


DRILLS = {
    "worker-kill": (worker_kill, {}),
    "scheduler-lock": (scheduler_lock, {}),
    "redis-flush": (redis_flush, {}),
    "postgres-drop": (postgres_drop, {}),
    "upstream-hang": (_upstream(f"sandbox:slow=100000@{PRO}*1 a crane"), {"catalogue": True}),
    "upstream-close": (_upstream("sandbox:disconnect*1 a wren"), {}),
    "upstream-garbage": (_upstream("sandbox:malformed*1 a gull"), {}),
    "load": (load, {"WORKERS": LOAD_WORKERS}),
}


# --- checks ----------------------------------------------------------------------------


def orphan_files() -> list[str]:
    """Files under MEDIA_ROOT that no row points to (images, thumbnails, references)."""
    from django.conf import settings

    from generator.models import Image, ReferenceImage

    root = Path(settings.MEDIA_ROOT)
    if not root.exists():
        return []
    known = set(ReferenceImage.objects.values_list("file", flat=True))
    for image, thumbnail in Image.objects.values_list("file", "thumbnail"):
        known |= {image, thumbnail}
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and str(p.relative_to(root)) not in known
    )


def merged(loads: list[Load]) -> Load:
    """One Load with every submission of `loads`, for hosts.verify."""
    whole = Load(loads[0].hosts, loads[0].tokens)
    for one in loads:
        whole.accepted.update(one.accepted)
        whole.unknown += one.unknown
        whole.refused += one.refused
        whole.rejected.update(one.rejected)
        whole.per_host.update(one.per_host)
        whole.redirected += one.redirected
        whole.sent += one.sent
        whole.latencies += one.latencies
    return whole


# --- running one ---------------------------------------------------------------------


def database_url(name: str) -> str:
    if not BASE_DATABASE_URL:
        return ""
    base, _, query = BASE_DATABASE_URL.partition("?")
    return f"{base}_{name.replace('-', '_')}" + (f"?{query}" if query else "")


def run_one(name: str) -> int:
    began = time.monotonic()
    body, options = DRILLS[name]
    url = database_url(name)
    report: dict = {"drill": name, "command": f"make drills DRILL={name}"}
    report["started"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report["load_average_at_start"] = round(os.getloadavg()[0], 1)
    report["database"] = "postgres" if url else "sqlite"
    if name == "postgres-drop" and not url:
        report["skipped"] = "needs DRILL_DATABASE_URL on Postgres"
        print(json.dumps(report, indent=2))
        return 0
    directory = DIR / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    if url:
        hosts.create_database(url)
    redis = Redis(directory / "redis")
    redis.start()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"REDIS_URL", "DATABASE_URL", "GEMINI_API_KEY", "SANDBOX_URL", "STORAGE_URL"}
    }
    env.update(hosts.HOST_ENV)
    env.update(ROLES="web,workers,cron,sandbox", REDIS_URL=redis.url)
    env.update({k: v for k, v in options.items() if k != "catalogue"})
    if url:
        env["DATABASE_URL"] = url
    if options.get("catalogue"):
        env["MODEL_CATALOGUE_FILE"] = str(catalogue_with_short_timeouts(directory / "models.toml"))
        report["read_timeout_s"] = READ_TIMEOUT_S
    stack = Stack(name, env)
    supervisor = load_ = None
    problems: list[str] = []
    try:
        stack.start()
        report["ready_s"] = round(stack.wait_ready(), 1)
        os.environ.update({**env, "VAR_DIR": str(stack.var_dir)})
        os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
        import django

        django.setup()
        tokens = hosts.make_tokens(max(3, LOAD_USERS))
        supervisor = Supervisor(stack)
        supervisor.start()
        load_ = Load([stack], tokens, every=STEADY_EVERY)
        load_.start()
        say(f"{name}: make run up on {stack.url} in {report['ready_s']} s; steady load on")
        time.sleep(10)
        drill = Drill(name, stack, redis, tokens, load_, supervisor, report=report)
        body(drill)
        time.sleep(10)
        load_.stopping.set()
        load_.join()
        accepted = drill.accepted()
        say(f"{name}: load stopped, {len(accepted)} accepted; waiting for the last ones")
        hosts.wait_final(accepted, DRAIN_S)
        supervisor.stopping.set()
        problems = drill.problems + hosts.verify(
            merged([load_, *drill.extra]), [stack], tokens, report
        )
        orphans = orphan_files()
        report["orphan_files"] = len(orphans)
        if orphans:
            problems.append(f"{len(orphans)} files no row points to: {orphans[:3]}")
        report["make_run_restarts"] = len(supervisor.restarts)
    except Exception as exc:  # the drill itself broke: a violation too
        problems.append(f"the drill could not run: {exc!r}")
    finally:
        if supervisor is not None:
            supervisor.stopping.set()
        if load_ is not None:
            load_.stopping.set()
        if stack.process is not None and stack.process.poll() is None:
            try:
                stack.stop(timeout=60)
            except subprocess.TimeoutExpired:
                stack.kill()
        # Anything the drill SIGKILLed left its children: none may outlive the drill.
        for pid in _leftovers(stack.var_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            redis.kill()
    report["duration_s"] = round(time.monotonic() - began)
    report["load_average_at_end"] = round(os.getloadavg()[0], 1)
    report["problems"] = problems
    (DIR / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    say(f"{name}: PASSED" if not problems else f"{name}: FAILED: " + "; ".join(problems))
    return 0 if not problems else 1


def _leftovers(var_dir: Path) -> list[int]:
    """Processes still running with this drill's VAR_DIR in their environment."""
    found = []
    marker = f"VAR_DIR={var_dir}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
    return found


def main(argv: list[str]) -> int:
    names = argv or list(DRILLS)
    unknown = [n for n in names if n not in DRILLS]
    if unknown:
        print(f"Unknown drill(s) {', '.join(unknown)}; choose from {', '.join(DRILLS)}.")
        return 2
    if len(names) == 1:
        return run_one(names[0])
    # One process per drill: each has its own Django settings (database, Redis).
    results = {}
    for name in names:
        code = subprocess.run([sys.executable, "-m", "drills.run", name], cwd=ROOT).returncode
        results[name] = "passed" if code == 0 else f"FAILED ({code})"
    print(json.dumps(results, indent=2))
    return 0 if all(r == "passed" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
