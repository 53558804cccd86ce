"""`make run`: set up and start the whole product in the foreground.

Prepares the database and a demo account, then starts Redis (unless REDIS_URL is set),
the sandbox upstream (unless GEMINI_API_KEY is set), a local S3 server when
STORAGE=s3-local, the web server, WORKERS RQ workers and CALLERS caller processes (the
workers' upstream calls). Each child's output is prefixed with its name. Ctrl-C (or
SIGTERM) stops every child cleanly.

A worker, caller or the cron that exits (Redis went away for a moment, a crash, the OOM
killer) is started again after a back-off of 1, 2, 4... up to 30 s: they keep nothing of
their own (the database is the truth, the reconciler takes back what a dead one held).
One that exits RESTART_LIMIT times within RESTART_WINDOW_S, or any other child (Redis,
the sandbox, the web server, which restarts its own processes), stops everything with a
non-zero status, so a half-running product is never left behind and a supervisor above
(systemd, a container) sees the failure.

One `make run` per VAR_DIR: the first holds an flock on VAR_DIR/up.lock (taken before
anything starts) and writes its pid and address there; a second start refuses at once
with a message naming the running one, and touches nothing of it (exit status 3).

ROLES runs a subset, for several hosts sharing one database, Redis and bucket
(docs/deploy.md): the product's roles `web`, `workers`, `cron`, and the shared services
`redis`, `sandbox`, `s3`. A host that starts a shared service writes what the other
hosts need to reach it to VAR_DIR/services.env.
"""

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from config import seaweed
from config.env import local_secret_key
from config.redis_server import redis_command, wait_for_socket

BASE_DIR = Path(__file__).resolve().parent.parent
# Absolute: the socket and file paths written to services.env must work from anywhere.
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var")).resolve()
COLOURS = ["36", "33", "35", "32", "34", "31"]
PRODUCT_ROLES = ("web", "workers", "cron")
SERVICE_ROLES = ("redis", "sandbox", "s3")
# The bucket STORAGE=s3-local (the `s3` role) creates in its SeaweedFS.
LOCAL_BUCKET = "steadyshot"


ALREADY_RUNNING = 3  # the exit status of a second start in the same VAR_DIR
# Children that are started again when they exit: they hold nothing of their own.
RESTARTED = ("worker", "caller", "cron")
RESTART_LIMIT = 5  # exits within RESTART_WINDOW_S: a crash loop, stop everything
RESTART_WINDOW_S = 120.0
RESTART_MAX_DELAY_S = 30.0


class Restarts:
    """When to start an exited child again: None means stop everything."""

    def __init__(self):
        self.exits: dict[str, list[float]] = {}

    def delay_after_exit(self, name: str, now: float) -> float | None:
        if not name.startswith(RESTARTED):
            return None
        recent = [t for t in self.exits.get(name, []) if now - t < RESTART_WINDOW_S]
        recent.append(now)
        self.exits[name] = recent
        if len(recent) >= RESTART_LIMIT:
            return None
        return min(RESTART_MAX_DELAY_S, 2.0 ** (len(recent) - 1))


class RolesError(Exception):
    """ROLES cannot work with this environment; the message says what to set."""


def roles(env: dict) -> set[str]:
    """What this host runs. Unset ROLES: the whole product, with the services it is not
    given an address for (Redis without REDIS_URL, the sandbox without GEMINI_API_KEY,
    SeaweedFS with STORAGE=s3-local). A list: exactly those roles, and each service
    left out must be reachable through its variable."""
    local_s3 = env.get("STORAGE", "") == "s3-local"
    if not env.get("ROLES"):
        chosen = set(PRODUCT_ROLES)
        chosen |= {"redis"} if not env.get("REDIS_URL") else set()
        chosen |= {"sandbox"} if not env.get("GEMINI_API_KEY") else set()
        return chosen | ({"s3"} if local_s3 else set())
    chosen = {r.strip() for r in env["ROLES"].split(",") if r.strip()}
    unknown = chosen - set(PRODUCT_ROLES) - set(SERVICE_ROLES)
    if unknown:
        raise RolesError(
            f"ROLES: unknown role(s) {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(PRODUCT_ROLES + SERVICE_ROLES)}."
        )
    if local_s3:
        chosen.add("s3")
    if "redis" not in chosen and not env.get("REDIS_URL"):
        raise RolesError("ROLES leaves out redis: set REDIS_URL to the Redis every host shares.")
    if "sandbox" not in chosen and not (env.get("GEMINI_API_KEY") or env.get("SANDBOX_URL")):
        raise RolesError(
            "ROLES leaves out sandbox: set SANDBOX_URL to the shared sandbox, or "
            "GEMINI_API_KEY for the real models."
        )
    return chosen


@dataclass
class Child:
    name: str
    cmd: list[str]
    process: subprocess.Popen | None = None
    colour: str = "0"
    env: dict = field(default_factory=dict)
    restarts: int = 0  # how many times it was started again


def log(name: str, colour: str, line: str) -> None:
    prefix = f"\033[{colour}m{name:>9} |\033[0m " if sys.stdout.isatty() else f"{name:>9} | "
    sys.stdout.write(prefix + line.rstrip("\n") + "\n")
    sys.stdout.flush()


def start(child: Child, env: dict) -> None:
    child.process = subprocess.Popen(
        child.cmd,
        cwd=BASE_DIR,
        env={**env, **child.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        # Own session: a terminal's Ctrl-C reaches only us, and we stop children in order.
        start_new_session=True,
    )

    def pump():
        for line in child.process.stdout:
            log(child.name, child.colour, line)

    threading.Thread(target=pump, daemon=True).start()


def kill_leftovers(child: Child) -> None:
    """Kill what an exited child left running in its process group (an RQ worker's
    forked scheduler outlives a worker killed outright, and keeps its lock)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, signal.SIGKILL)


def restarted(child: Child) -> Child:
    """The child counted as started again, with a `--name` it never had: RQ refuses a
    name that a dead worker still holds in Redis until its registration expires."""
    child.restarts += 1
    if "--name" in child.cmd:
        at = child.cmd.index("--name") + 1
        child.cmd[at] = f"{child.cmd[at].split('+')[0]}+{child.restarts}"  # no host has a +
    return child


def manage(*args: str) -> list[str]:
    return [sys.executable, str(BASE_DIR / "manage.py"), *args]


def run_step(args: list[str], env: dict) -> None:
    result = subprocess.run(args, cwd=BASE_DIR, env=env)
    if result.returncode:
        sys.exit(f"Set-up step failed: {' '.join(args[1:])}")


def stop_all(children: list[Child], grace: float = 10.0, product_grace: float = 10.0) -> None:
    """Stop the product first and its infrastructure last: workers finish or hand back
    their step (within `product_grace`) while Redis is still there to take it."""
    infrastructure = set(SERVICE_ROLES)
    for group, wait in (
        ([c for c in children if c.name not in infrastructure], product_grace),
        ([c for c in children if c.name in infrastructure], grace),
    ):
        for child in group:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + wait
        for child in group:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(child.name, child.colour, "did not stop in time; killing")
                child.process.kill()
                child.process.wait()


def main() -> int:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    port = env.get("PORT", "8000")
    host = env.get("HOST", "127.0.0.1")
    workers = int(env.get("WORKERS", "2"))
    try:
        chosen = roles(env)
    except RolesError as exc:
        print(exc, file=sys.stderr)
        return 2
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    where = f"http://{host}:{port}/" if "web" in chosen else f"roles {','.join(sorted(chosen))}"
    lock = hold_run_lock(VAR_DIR / "up.lock", where)
    if lock is None:
        return ALREADY_RUNNING
    env.update(served_as_deployed(env, host))

    children: list[Child] = []
    stopping = threading.Event()
    failed = ""

    def on_signal(signum, frame):
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    try:
        shared = {}
        if "redis" in chosen:
            cmd, socket = redis_command(VAR_DIR / "redis", persist=True)
            redis_child = Child("redis", cmd)
            children.append(redis_child)
            start(redis_child, env)
            wait_for_socket(socket, redis_child.process)
            shared["REDIS_URL"] = f"unix://{socket}?db=0"
        if "s3" in chosen:
            s3_child, s3_env = start_local_s3(env)
            children.append(s3_child)
            shared.update(s3_env)
        if "sandbox" in chosen:
            shared.update(upstream_env(env))
        env.update(shared)
        if shared:
            write_services_env(shared)

        if chosen & set(PRODUCT_ROLES):
            run_step(manage("migrate", "--noinput"), env)
            if env.get("DEBUG", "1").lower() in {"0", "false", "no", "off"}:
                run_step(manage("collectstatic", "--noinput", "-v0"), env)
            run_step(manage("ensure_demo"), env)

        if "sandbox" in chosen:
            children.extend(upstream_children(env))
        if "web" in chosen:
            children.append(Child("web", web_command(env, host, port)))
        if "cron" in chosen:
            # Periodic work: the reconciler (and monitoring's rollups and alerts).
            children.append(Child("cron", manage("rqcron", "config.cron")))
        for n in range(workers if "workers" in chosen else 0):
            children.append(
                Child(
                    f"worker{n + 1}",
                    manage("rqworker", "--with-scheduler", "--name", f"{os.uname().nodename}-{os.getpid()}-{n + 1}", "maintenance", "default"),
                )
            )  # fmt: skip
        # The workers' upstream calls, hundreds at once per caller (generator/caller).
        for n in range(int(env.get("CALLERS", "1")) if "workers" in chosen else 0):
            children.append(Child(f"caller{n + 1}", manage("caller")))
        for i, child in enumerate(children):
            child.colour = COLOURS[i % len(COLOURS)]
            if child.process is None:
                start(child, env)

        if "web" in chosen:
            print(f"\nSteadyshot is running at http://{host}:{port}/  (Ctrl-C stops everything)\n")
        else:
            print(f"\nRunning {', '.join(sorted(chosen))}  (Ctrl-C stops everything)\n")
        restarts, due = Restarts(), {}  # child name → when to start it again
        while not stopping.is_set():
            now = time.monotonic()
            for child in children:
                if child.name in due:
                    if now >= due[child.name]:
                        del due[child.name]
                        log(child.name, child.colour, "starting again")
                        start(restarted(child), env)
                    continue
                if child.process.poll() is None:
                    continue
                code = child.process.returncode
                delay = restarts.delay_after_exit(child.name, now)
                if delay is not None:
                    kill_leftovers(child)
                    log(
                        child.name,
                        child.colour,
                        f"exited with code {code}; restarting in {delay:g} s",
                    )
                    due[child.name] = now + delay
                    continue
                log(child.name, child.colour, f"exited with code {code}")
                # The product cannot go on without it (or it keeps dying): stop the rest
                # and say so with a non-zero status, for a supervisor above to see.
                failed = child.name
                if len(restarts.exits.get(child.name, ())) >= RESTART_LIMIT:
                    failed += f" (exited {RESTART_LIMIT} times in {RESTART_WINDOW_S:g} s)"
                stopping.set()
                break
            stopping.wait(0.5)
    finally:
        print("\nStopping…")
        # A worker's current step gets WORKER_STOP_GRACE_SECONDS to finish before it is
        # handed back (generator/worker.py); wait a little longer than that for it.
        step_grace = float(env.get("WORKER_STOP_GRACE_SECONDS") or 25)
        stop_all(children, product_grace=step_grace + 10)
        for child in children:
            if child.name == "s3":
                seaweed.remove_grpc_sockets(child.cmd)
    if failed:
        print(f"Stopped because {failed} exited.", file=sys.stderr)
        return 1
    return 0


def served_as_deployed(env: dict, host: str) -> dict:
    """The product runs with DEBUG off (our own 404 and 500 pages, no URL list or settings
    dump, hashed static files through WhiteNoise) unless DEBUG is set: `DEBUG=1 make run`
    is the development switch, and a deploy's explicit DEBUG=0 is left as it is. Off on
    this machine also needs a key (the one kept under VAR_DIR), its host names and plain
    HTTP; each can still be set."""
    if env.get("DEBUG"):
        return {}
    names = ["localhost", "127.0.0.1", "[::1]"]
    if host not in ("0.0.0.0", "::", *names):  # noqa: S104 (compared, not bound)
        names.append(host)
    return {
        "DEBUG": "0",
        "SECRET_KEY": env.get("SECRET_KEY") or local_secret_key(VAR_DIR),
        "ALLOWED_HOSTS": env.get("ALLOWED_HOSTS") or ",".join(names),
        "HTTPS": env.get("HTTPS") or "0",
    }


def hold_run_lock(path: Path, where: str):
    """The open lock file once this process holds VAR_DIR's run lock (kept open for the
    life of the process: the kernel releases the flock when it exits, however it exits),
    or None after saying which instance holds it. Children never inherit it (Popen
    closes every other descriptor)."""
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "pid unknown"
        handle.close()
        print(
            f"Steadyshot is already running from {path.parent} ({holder}). "
            "Stop it first (Ctrl-C in its terminal, or kill its pid), or start this one "
            "with another VAR_DIR and PORT. Nothing was started or changed.",
            file=sys.stderr,
        )
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, {where}\n")
    handle.flush()
    return handle


def web_command(env: dict, host: str, port: str) -> list[str]:
    """gunicorn with uvicorn workers serving config.asgi: WEB_PROCESSES processes, each
    running the pages in WEB_THREADS threads (read by config/asgi.py) and the
    OpenAI-compatible endpoint's waits on its event loop."""
    return [
        sys.executable, "-m", "gunicorn", "config.asgi:application",
        "--worker-class", "uvicorn_worker.UvicornWorker",
        "--bind", f"{host}:{port}",
        "--workers", env.get("WEB_PROCESSES", "2"),
        "--access-logfile", "-",
        "--graceful-timeout", "5",
    ]  # fmt: skip


def upstream_env(env: dict) -> dict:
    """Environment for the upstream: the sandbox's address when no Gemini key is set (a
    free loopback port unless SANDBOX_URL names one), passed to the web and workers."""
    if env.get("GEMINI_API_KEY"):
        return {}
    if env.get("SANDBOX_URL"):
        return {"SANDBOX_URL": env["SANDBOX_URL"]}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return {"SANDBOX_URL": f"http://127.0.0.1:{s.getsockname()[1]}"}


def start_local_s3(env: dict) -> tuple[Child, dict]:
    """SeaweedFS under VAR_DIR/seaweedfs with the bucket created: the `s3` role
    (STORAGE=s3-local). Its keys and port are kept there, so the images stay readable
    across restarts; S3_LOCAL_PORT pins the port."""
    port = int(env["S3_LOCAL_PORT"]) if env.get("S3_LOCAL_PORT") else None
    config = seaweed.local_config(VAR_DIR / "seaweedfs", s3_port=port)
    child = Child("s3", seaweed.weed_command(config))
    start(child, env)
    seaweed.wait_until_ready(config, LOCAL_BUCKET, child.process)
    log("s3", "0", f"S3 (SeaweedFS) listening on {config.endpoint}, bucket {LOCAL_BUCKET}")
    return child, config.env(LOCAL_BUCKET)


def write_services_env(shared: dict) -> None:
    """VAR_DIR/services.env: how other hosts on this machine reach the services this one
    runs (`set -a; . var/services/services.env; set +a`). It holds the bucket's keys."""
    path = VAR_DIR / "services.env"
    path.write_text("".join(f"{name}={value}\n" for name, value in sorted(shared.items())))
    path.chmod(0o600)


def upstream_children(env: dict) -> list[Child]:
    if env.get("GEMINI_API_KEY"):
        return []
    # It listens on SANDBOX_URL's port, which it reads from the environment itself.
    return [Child("sandbox", manage("sandbox"))]


if __name__ == "__main__":
    sys.exit(main())
