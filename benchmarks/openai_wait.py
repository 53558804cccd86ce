"""Benchmark: what N OpenAI-compatible calls cost the web server while they wait for the
chain, and how fast it answers everything else meanwhile.

    .venv/bin/python benchmarks/openai_wait.py --calls 50 --server asgi
    .venv/bin/python benchmarks/openai_wait.py --calls 50 --server wsgi   # the old server

Starts, in a scratch VAR_DIR: a private Redis, the sandbox, --workers RQ workers and one
web process, `asgi` (config.up.web_command: gunicorn with uvicorn workers, what `make
run` serves) or `wsgi` (gunicorn's threaded worker with WEB_THREADS threads, as before).
Then --calls clients each POST /v1/images/generations with a prompt the sandbox answers
after --slow seconds (`sandbox:slow=`), so every call waits. While they wait it reads the
web process's threads and resident memory from /proc, and times --probes sequential GETs
of /api/v1/generations (token, database, JSON) and /healthz. Finally it cancels the
requests and stops everything. Only loopback addresses are used.
"""

import argparse
import concurrent.futures
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.redis_server import redis_command, wait_for_socket  # noqa: E402
from config.up import manage, upstream_env, web_command  # noqa: E402


def proc_status(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return {"threads": int(fields["Threads"]), "rss_mb": int(fields["VmRSS"].split()[0]) / 1024}


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def web_worker_pid(master: int) -> int:
    """The pid of gunicorn's (only) worker process."""
    for _ in range(100):
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("gunicorn started no worker")


def wait_until_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", choices=["asgi", "wsgi"], default="asgi")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--slow", type=float, default=90.0, help="upstream seconds per call")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=8)
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--probe-timeout", type=float, default=5.0)
    args = parser.parse_args()

    var_dir = Path(tempfile.mkdtemp(prefix="openai-wait-"))
    # A SIGTERM (a timeout, Ctrl-C from a supervisor) still stops every child below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    env = {
        **os.environ,
        "VAR_DIR": str(var_dir),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "WEB_THREADS": str(args.web_threads),
        "TIME_SCALE": "1",
        "OPENAI_COMPAT_WAIT_SECONDS": "600",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "GEMINI_API_KEY"):
        env.pop(name, None)
    processes: list[subprocess.Popen] = []

    def spawn(name: str, cmd: list[str]) -> subprocess.Popen:
        log = (var_dir / f"{name}.log").open("w")
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    try:
        cmd, redis_socket = redis_command(var_dir / "redis", persist=False)
        wait_for_socket(redis_socket, spawn("redis", cmd))
        env["REDIS_URL"] = f"unix://{redis_socket}?db=0"
        env.update(upstream_env(env))
        subprocess.run(manage("migrate", "--noinput", "-v0"), cwd=ROOT, env=env, check=True)
        token = make_token(env)
        spawn("sandbox", manage("sandbox"))
        for n in range(args.workers):
            spawn(f"worker{n}", manage("rqworker", "--with-scheduler", "maintenance", "default"))
        port = free_port()
        if args.server == "asgi":
            web = spawn("web", web_command({"WEB_PROCESSES": "1"}, "127.0.0.1", port))
        else:
            web = spawn("web", [
                sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
                "--workers", "1", "--threads", str(args.web_threads),
            ])  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/healthz")
        wait_until_up(env["SANDBOX_URL"] + "/_sandbox/state")
        pid = web_worker_pid(web.pid)
        headers = {"Authorization": f"Bearer {token}"}
        probe(url, headers, 3, args.probe_timeout)  # warm up
        idle = proc_status(pid)
        idle_latency = probe(url, headers, args.probes, args.probe_timeout)

        def call():
            return httpx.post(
                f"{url}/v1/images/generations",
                json={"prompt": f"sandbox:slow={args.slow} a lighthouse"},
                headers=headers,
                timeout=600,
            )

        with concurrent.futures.ThreadPoolExecutor(args.calls) as pool:
            started = time.monotonic()
            calls = [pool.submit(call) for _ in range(args.calls)]
            time.sleep(min(5.0, args.slow / 4))  # let every call arrive and start waiting
            busy = proc_status(pid)
            busy_latency = probe(url, headers, args.probes, args.probe_timeout)
            busy = {k: max(v, proc_status(pid)[k]) for k, v in busy.items()}
            waiting = sum(not c.done() for c in calls)
            window = time.monotonic() - started
            # Calls still in the server's backlog are admitted after a cancel: repeat.
            while not all(c.done() for c in calls):
                cancel_all(env)
                concurrent.futures.wait(calls, timeout=5)
            answers = [c.result() for c in calls]

        statuses = sorted({a.status_code for a in answers})
        print(
            f"server {args.server}, {args.calls} calls, {args.workers} workers, slow {args.slow:.0f} s, web threads {args.web_threads}"
        )
        print(
            f"idle:  threads {idle['threads']}, RSS {idle['rss_mb']:.0f} MB, {fmt(idle_latency)}"
        )
        print(
            f"busy:  threads {busy['threads']}, RSS {busy['rss_mb']:.0f} MB, {fmt(busy_latency)} "
            f"({waiting} calls still waiting after {window:.0f} s)"
        )
        print(f"per waiting call: {(busy['threads'] - idle['threads']) / args.calls:.2f} threads, "
              f"{(busy['rss_mb'] - idle['rss_mb']) * 1024 / args.calls:.0f} KB")  # fmt: skip
        print(f"call answers (after cancel): {statuses}")
        return 0
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def make_token(env: dict) -> str:
    """A user with a team and an API token in the scratch database."""
    script = (
        "from accounts.models import ApiToken, Team, User\n"
        "user = User.objects.create_user('bench@example.com', 'x' * 16, name='Bench')\n"
        "user.switch_team(Team.create_with_owner('Bench', user))\n"
        "print(ApiToken.issue(user, 'bench')[1])\n"
    )
    result = subprocess.run(
        manage("shell", "-c", script),
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip().splitlines()[-1]


def cancel_all(env: dict) -> None:
    """Cancel every request: the queued ones end at once, and so do their calls."""
    script = (
        "from generator.models import GenerationRequest\n"
        "for r in GenerationRequest.objects.all(): r.cancel()\n"
    )
    subprocess.run(manage("shell", "-c", script), cwd=ROOT, env=env, check=True)


def probe(url: str, headers: dict, count: int, timeout: float) -> list[float | None]:
    """Latencies in ms of alternate GETs of the JSON API's list and /healthz; None for a
    probe that got no answer within `timeout`."""
    latencies = []
    for n in range(count):
        path = "/api/v1/generations" if n % 2 == 0 else "/healthz"
        start = time.monotonic()
        try:
            httpx.get(url + path, headers=headers, timeout=timeout).raise_for_status()
            latencies.append((time.monotonic() - start) * 1000)
        except httpx.TimeoutException:
            latencies.append(None)
    return latencies


def fmt(latencies: list[float | None]) -> str:
    answered = sorted(x for x in latencies if x is not None)
    lost = len(latencies) - len(answered)
    if not answered:
        return f"other requests: none answered ({lost} timed out)"
    p50 = statistics.median(answered)
    return f"other requests: p50 {p50:.0f} ms, max {answered[-1]:.0f} ms" + (
        f", {lost} of {len(latencies)} timed out" if lost else ""
    )


if __name__ == "__main__":
    sys.exit(main())
