"""Benchmark: what one image costs the workers and the caller (issue 17).

    createdb -h 127.0.0.1 -U postgres caller_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/caller_bench \\
    REDIS_URL=redis://127.0.0.1:6393/0 \\
        .venv/bin/python benchmarks/cost_per_image.py --workers 1 --requests 300 --slow-calls 150

Migrates the database, FLUSHES the Redis database REDIS_URL names, then starts the
sandbox, --workers RQ workers (`rqworker --with-scheduler`, as `make run`) and one caller
(`manage.py caller`) with TIME_SCALE 0.0001, and measures two things:

1. zero latency: --requests quality-first requests submitted at once (through
   generator.admission, in this process; with --http N, through the web server as
   `make run` starts it, `POST /api/v1/generations` from N client threads) while the
   sandbox answers at once; delivered per second per worker, and the CPU time each
   process spent per request (/proc; admission's, this process's while it submits, or
   the web server's, its master and worker processes);
2. slow upstream: the sandbox's clock set to real time and --slow-calls requests whose
   every call takes --slow seconds (`sandbox:slow=`): (a) end to end, the most calls in
   flight at once (the sandbox's count); (b) the caller alone: the calls are queued
   while no caller runs, then a fresh caller, measured once ready, takes them all: the
   most in flight at once and its resident memory then, against before, per call.

Everything runs on loopback; the processes are stopped at the end.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from config.up import manage, served_as_deployed, web_command  # noqa: E402

CALLS_KEY = "steadyshot:calls"  # generator.caller.calls.CALLS_KEY, read before Django is set up

TICK = os.sysconf("SC_CLK_TCK")
# Not the product's own processes: the upstream's stand-in and the shared services.
SERVICES = ("sandbox", "postgres", "redis")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime + stime, and those of its children waited for (RQ's forked work horses)
    return sum(int(f) for f in fields[11:15]) / TICK


def family(pid: int) -> list[int]:
    """The process and its children (a web server's master and its worker processes)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(child) for child in children)]


def family_cpu_s(pids: list[int]) -> float:
    return sum(cpu_s(pid) for pid in pids)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def settled_rss(pid: int) -> float:
    """The process's RSS once it stopped growing (Django and the caller loaded)."""
    time.sleep(3)
    last = rss_mb(pid)
    while True:
        time.sleep(1)
        now = rss_mb(pid)
        if abs(now - last) < 0.1:
            return now
        last = now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name: str, args: list[str], env: dict, log_dir: Path) -> subprocess.Popen:
    log = (log_dir / f"{name}.log").open("w")
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def profile(out: str, pids: dict[str, int]) -> list[subprocess.Popen]:
    """py-spy on the product's processes (not the sandbox), until SIGINT."""
    Path(out).mkdir(parents=True, exist_ok=True)
    spies = []
    for name, pid in pids.items():
        if name == "sandbox":
            continue
        # --gil: only the samples of the thread holding the GIL, the process's Python CPU
        # (a thread waiting on a socket inside a C call is not counted as working).
        command = [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--nonblocking",
            "--gil",
        ]
        command += ["--format", "raw", "--output", f"{out}/{name}.txt"]
        spies.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
    time.sleep(1)  # attached
    return spies


class Backends:
    """The CPU time of the Postgres backends serving the product's processes (every
    backend of this database but the benchmark's own), sampled while they live: a
    backend that ends between two samples loses at most its last interval."""

    def __init__(self):
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.sample(start=True)

    def sample(self, start: bool = False) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            pids = [row[0] for row in cursor.fetchall()]
        for pid in pids:
            try:
                spent = cpu_s(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
            # A backend born during the round counts from zero (its start included).
            self.first.setdefault(pid, spent if start else 0.0)
            self.last[pid] = spent

    def spent(self) -> float:
        self.sample()
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


def redis_cpu_s(conn) -> float:
    """The Redis server's CPU time (all its clients: use a Redis of your own)."""
    info = conn.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def wait_final(ids, timeout: float, backends: Backends | None = None) -> tuple[float, dict]:
    from collections import Counter

    from generator.models import FINAL_STATUSES, GenerationRequest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = GenerationRequest.objects.filter(pk__in=ids).values_list("status", flat=True)
        states = Counter(rows)
        if backends is not None:
            backends.sample()
        if sum(states[s] for s in FINAL_STATUSES) == len(ids):
            return time.monotonic(), dict(states)
        time.sleep(0.1)
    raise SystemExit(f"not final after {timeout:.0f} s: {dict(states)}")


def prompt_for(n: int, prompts: int) -> str:
    """The n-th zero-latency prompt: all different, or cycling through `prompts` of them."""
    return f"a lighthouse {n % prompts if prompts else n}"


def submit_over_http(base_url: str, token: str, count: int, clients: int, args) -> list:
    """`count` submissions through the JSON API from `clients` threads, each with its own
    keep-alive connection, as fast as the server answers (or the n-th at n / --rate
    seconds); the ids of the requests."""
    from concurrent.futures import ThreadPoolExecutor

    prompts, rate = args.prompts, args.rate
    start = time.monotonic()

    def client(numbers: range) -> list:
        ids = []
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
            for n in numbers:
                if rate:
                    time.sleep(max(0.0, start + n / rate - time.monotonic()))
                answer = http.post("/api/v1/generations", json={"prompt": prompt_for(n, prompts)})
                if answer.status_code != 202:
                    raise SystemExit(f"submission {n}: {answer.status_code} {answer.text}")
                ids += [row["id"] for row in answer.json()["data"]]
        return ids

    with ThreadPoolExecutor(clients) as pool:
        shares = pool.map(client, (range(c, count, clients) for c in range(clients)))
        return [pk for share in shares for pk in share]


def submit_slow(args, user, team, tag: str) -> list:
    from generator.admission import Submission, submit

    ids = []
    for n in range(args.slow_calls):
        prompt = f"sandbox:slow={args.slow:g} a slow lighthouse {tag}{n}"
        ids += [r.pk for r in submit(user, team, Submission(prompt=prompt))]
    return ids


def watch(sandbox_url: str, pid: int, idle: float, args) -> tuple[int, float]:
    """(the most calls in flight at once, the caller's RSS then) until they are done."""
    peak, peak_rss = 0, idle
    deadline = time.monotonic() + args.slow * 4 + 60
    while time.monotonic() < deadline:
        state = httpx.get(f"{sandbox_url}/_sandbox/state", timeout=5).json()
        if state["in_flight"] > peak:
            peak, peak_rss = state["in_flight"], rss_mb(pid)
        if state["max_in_flight"] >= args.slow_calls or (peak and not state["in_flight"]):
            break
        time.sleep(0.1)
    return peak, peak_rss


def slow_round(args, user, team, sandbox_url: str, pid: int, tag: str):
    idle = rss_mb(pid)
    ids = submit_slow(args, user, team, tag)
    peak, peak_rss = watch(sandbox_url, pid, idle, args)
    _, states = wait_final(ids, timeout=args.slow * 4 + 120)
    httpx.post(f"{sandbox_url}/_sandbox/reset", json={}, timeout=10)
    httpx.post(f"{sandbox_url}/_sandbox/time-scale", json={"scale": 1.0}, timeout=10)
    return peak, idle, peak_rss, states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--prompts",
        type=int,
        default=0,
        metavar="K",
        help="cycle the zero-latency round through K prompts (0: every prompt different). "
        "The sandbox paints each prompt once: it competes less with the product for the "
        "cores, and the product's work per request is the same",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        metavar="R",
        help="with --http, submit R requests a second (0: as fast as the server answers). "
        "Below what the cores can serve, the processes do not queue for the cores, and "
        "their CPU per request is their own, not the cost of sharing 2 of them",
    )
    parser.add_argument("--slow-calls", type=int, default=150)
    parser.add_argument("--slow", type=float, default=5.0, help="seconds per slow call")
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        help="profile the workers, the caller and the web server's workers during the "
        "zero-latency round with py-spy (pip install py-spy): DIR/<process>.txt, collapsed "
        "stacks of the samples holding the GIL",
    )
    parser.add_argument(
        "--http",
        type=int,
        metavar="N",
        help="submit the zero-latency round through the web server (as make run starts it) "
        "from N client threads, and count the web server's CPU as admission's",
    )
    parser.add_argument(
        "--no-caller",
        action="store_true",
        help="the code before the callers (main before issue 17): workers make the calls",
    )
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        raise SystemExit("Set DATABASE_URL (a scratch Postgres) and REDIS_URL (a scratch Redis).")

    sandbox_url = f"http://127.0.0.1:{free_port()}"
    log_dir = Path(os.environ.get("VAR_DIR", ROOT / "var")) / "bench-cost"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SANDBOX_URL": sandbox_url,
        "TIME_SCALE": "0.0001",
        # 200 s at this scale: main before issue 17 had no floor (REQUEST_BUDGET_FLOOR_S).
        "POLICY_REQUEST_BUDGET_S": "2000000",
        "PYTHONUNBUFFERED": "1",
        "VAR_DIR": str(log_dir),
        "LOG_LEVEL": "WARNING",
        # As `make run` serves it (config/up.py): DEBUG off, so no query is kept in memory
        # or formatted for a debug log (DEBUG=1 in the environment keeps it on).
        **served_as_deployed(dict(os.environ), "127.0.0.1"),
    }
    env.pop("GEMINI_API_KEY", None)
    os.environ.update({k: env[k] for k in ("SANDBOX_URL", "TIME_SCALE", "VAR_DIR")})
    subprocess.run(manage("migrate", "--noinput", "-v0"), cwd=ROOT, env=env, check=True)

    import django

    django.setup()
    import redis

    from accounts.models import Team, User
    from generator.admission import Submission, submit

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    stamp = time.time_ns()
    user = User.objects.create_user(f"bench-{stamp}@example.com", "x", name="Bench")
    team = Team.create_with_owner(f"Bench {stamp}", user)
    user.switch_team(team)

    processes = {"sandbox": start("sandbox", manage("sandbox"), env, log_dir)}
    for n in range(args.workers):
        processes[f"worker{n + 1}"] = start(
            f"worker{n + 1}",
            # The queues `make run`'s workers listen on.
            manage(
                "rqworker",
                "--with-scheduler",
                "--name",
                f"bench-{stamp}-{n}",
                "maintenance",
                "default",
            ),
            env,
            log_dir,
        )
    if not args.no_caller:
        processes["caller"] = start("caller", manage("caller"), env, log_dir)
    web_url = None
    if args.http:
        from accounts.models import ApiToken

        web_port = str(free_port())
        web_url = f"http://127.0.0.1:{web_port}"
        token = ApiToken.issue(user, "bench")[1]
        processes["web"] = start("web", web_command(env, "127.0.0.1", web_port), env, log_dir)
    try:
        for url in filter(
            None, (f"{sandbox_url}/_sandbox/state", web_url and f"{web_url}/healthz")
        ):
            for _ in range(100):
                try:
                    httpx.get(url, timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
        time.sleep(3)  # the workers and the caller load Django
        print(f"load average before: {os.getloadavg()}")

        # 1. Zero latency.
        pids = {name: p.pid for name, p in processes.items() if name != "web"}
        spied = dict(pids)
        if web_url:  # the web server's worker processes too (not its master)
            spied |= {f"web-{pid}": pid for pid in family(processes["web"].pid)[1:]}
        spies = profile(args.py_spy, spied) if args.py_spy else []
        conn = redis.Redis.from_url(os.environ["REDIS_URL"])
        cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
        redis_before, backends = redis_cpu_s(conn), Backends()
        started = time.monotonic()
        ids = []
        if web_url:
            # The web server's processes: admission, the API's view, token, HTTP and
            # access log; the statements of all that are in the web server's own
            # Postgres backends, counted with Postgres.
            web = family(processes["web"].pid)
            admission_before = family_cpu_s(web)
            ids = submit_over_http(web_url, token, args.requests, args.http, args)
            admission = family_cpu_s(web) - admission_before
        else:
            # Admission runs in this process: its CPU is what a web process spends on the
            # submission past the HTTP layer. Its statements run in this process's own
            # Postgres backend, which the Postgres figure leaves out (it also polls for
            # the results): --http counts them.
            admission_before = time.process_time()
            for n in range(args.requests):
                submission = Submission(prompt=prompt_for(n, args.prompts))
                ids += [r.pk for r in submit(user, team, submission)]
            admission = time.process_time() - admission_before
        submitted = time.monotonic()
        ended, states = wait_final(ids, timeout=600, backends=backends)
        elapsed = ended - started
        spent = {name: cpu_s(pid) - cpu_before[name] for name, pid in pids.items()}
        spent["web server" if web_url else "admission"] = admission
        spent["postgres"] = backends.spent()
        spent["redis"] = redis_cpu_s(conn) - redis_before
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        print(f"\nzero latency: {args.requests} requests, {args.workers} worker(s): {states}")
        print(f"  submitted in {submitted - started:.1f} s, all final after {elapsed:.1f} s")
        print(f"  delivered per second: {args.requests / elapsed:.2f}", end="")
        print(f" ({args.requests / elapsed / args.workers:.2f} per worker)")
        per_request = {name: s / args.requests * 1000 for name, s in spent.items()}
        for name, ms in per_request.items():
            print(f"  CPU per request, {name}: {ms:.1f} ms")
        # The sandbox stands in for the upstream: not the product's CPU.
        front = "web server" if web_url else "admission"
        product = sum(ms for name, ms in per_request.items() if name not in (*SERVICES, front))
        with_admission = product + per_request[front]
        whole = with_admission + per_request["postgres"] + per_request["redis"]
        print(f"  CPU per request, workers and caller: {product:.1f} ms", end="")
        print(f" = {1000 / product:.1f} requests/s per core")
        print(f"  CPU per request, with {front}: {with_admission:.1f} ms", end="")
        print(f" = {1000 / with_admission:.1f} requests/s per core")
        print(f"  CPU per request, with {front}, Postgres and Redis: {whole:.1f} ms", end="")
        print(f" = {1000 / whole:.1f} requests/s per core")
        print(f"  load average after: {os.getloadavg()}")

        # 2. Every call takes --slow seconds.
        httpx.post(f"{sandbox_url}/_sandbox/reset", json={}, timeout=10)
        httpx.post(f"{sandbox_url}/_sandbox/time-scale", json={"scale": 1.0}, timeout=10)
        name = "worker1" if args.no_caller else "caller"
        caller = processes[name]
        # a. End to end: the workers start the calls as fast as they can.
        peak, idle, peak_rss, states = slow_round(args, user, team, sandbox_url, caller.pid, "a")
        print(
            f"\nslow upstream, end to end: {args.slow_calls} requests, every call {args.slow:g} s"
        )
        print(f"  {states}; most calls in flight at once: {peak}")
        print(f"  {name} RSS: {idle:.1f} MB before, {peak_rss:.1f} MB at the peak")
        if args.no_caller:
            return
        # b. The caller alone: the calls are queued first (no caller running), then a
        # fresh caller, measured once it is ready, takes them all at once.
        caller.send_signal(signal.SIGTERM)
        caller.wait(timeout=60)
        conn = redis.Redis.from_url(os.environ["REDIS_URL"])
        ids = submit_slow(args, user, team, "b")
        while conn.llen(CALLS_KEY) < len(ids):
            time.sleep(0.2)
        conn.rename(CALLS_KEY, f"{CALLS_KEY}:held")
        processes["caller"] = caller = start("caller-b", manage("caller"), env, log_dir)
        idle = settled_rss(caller.pid)
        conn.rename(f"{CALLS_KEY}:held", CALLS_KEY)
        peak, peak_rss = watch(sandbox_url, caller.pid, idle, args)
        _, states = wait_final(ids, timeout=args.slow * 4 + 120)
        per_call = (peak_rss - idle) * 1024 / peak if peak else 0
        print(f"\nslow upstream, one caller given {args.slow_calls} calls at once: {states}")
        print(f"  most calls in flight at once: {peak}")
        print(f"  caller RSS: {idle:.1f} MB ready, {peak_rss:.1f} MB with {peak} in flight")
        print(f"  memory per call in flight: {per_call:.0f} KB")
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
