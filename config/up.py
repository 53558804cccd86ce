"""`make run`: set up and start the whole product in the foreground.

Prepares the database and a demo account, then starts Redis (unless REDIS_URL is set),
the sandbox upstream (unless GEMINI_API_KEY is set), the web server and WORKERS RQ
workers. Each child's output is prefixed with its name. Ctrl-C (or SIGTERM) stops every
child cleanly; if any child dies, the others are stopped too, so a half-running product
is never left behind.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from config.redis_server import redis_command, wait_for_socket

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
COLOURS = ["36", "33", "35", "32", "34", "31"]


@dataclass
class Child:
    name: str
    cmd: list[str]
    process: subprocess.Popen | None = None
    colour: str = "0"
    env: dict = field(default_factory=dict)


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


def manage(*args: str) -> list[str]:
    return [sys.executable, str(BASE_DIR / "manage.py"), *args]


def run_step(args: list[str], env: dict) -> None:
    result = subprocess.run(args, cwd=BASE_DIR, env=env)
    if result.returncode:
        sys.exit(f"Set-up step failed: {' '.join(args[1:])}")


def stop_all(children: list[Child], grace: float = 10.0) -> None:
    """Stop the product first and its infrastructure last: workers finish or hand back
    their job while Redis is still there to take it."""
    infrastructure = {"redis", "sandbox"}
    for group in (
        [c for c in children if c.name not in infrastructure],
        [c for c in children if c.name in infrastructure],
    ):
        for child in group:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
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
    VAR_DIR.mkdir(parents=True, exist_ok=True)

    children: list[Child] = []
    stopping = threading.Event()
    failed = ""

    def on_signal(signum, frame):
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    try:
        if not env.get("REDIS_URL"):
            cmd, socket = redis_command(VAR_DIR / "redis", persist=True)
            redis_child = Child("redis", cmd)
            children.append(redis_child)
            start(redis_child, env)
            wait_for_socket(socket, redis_child.process)
            env["REDIS_URL"] = f"unix://{socket}?db=0"

        env.update(upstream_env(env))
        run_step(manage("migrate", "--noinput"), env)
        if env.get("DEBUG", "1").lower() in {"0", "false", "no", "off"}:
            run_step(manage("collectstatic", "--noinput", "-v0"), env)
        run_step(manage("ensure_demo"), env)

        children.extend(upstream_children(env))
        children.append(Child("web", web_command(env, host, port)))
        # Periodic work: the reconciler (and monitoring's rollups and alerts).
        children.append(Child("cron", manage("rqcron", "config.cron")))
        for n in range(workers):
            children.append(
                Child(
                    f"worker{n + 1}",
                    manage("rqworker", "--with-scheduler", "--name", f"{os.uname().nodename}-{os.getpid()}-{n + 1}", "maintenance", "default"),
                )
            )  # fmt: skip
        for i, child in enumerate(children):
            child.colour = COLOURS[i % len(COLOURS)]
            if child.process is None:
                start(child, env)

        print(f"\nSteadyshot is running at http://{host}:{port}/  (Ctrl-C stops everything)\n")
        while not stopping.is_set():
            for child in children:
                if child.process.poll() is not None:
                    log(child.name, child.colour, f"exited with code {child.process.returncode}")
                    # One part of the product is gone: stop the rest and say so with a
                    # non-zero status, so a supervisor (systemd, a container) restarts us.
                    failed = child.name
                    stopping.set()
                    break
            stopping.wait(0.5)
    finally:
        print("\nStopping…")
        stop_all(children)
    if failed:
        print(f"Stopped because {failed} exited.", file=sys.stderr)
        return 1
    return 0


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


def upstream_children(env: dict) -> list[Child]:
    if env.get("GEMINI_API_KEY"):
        return []
    # It listens on SANDBOX_URL's port, which it reads from the environment itself.
    return [Child("sandbox", manage("sandbox"))]


if __name__ == "__main__":
    sys.exit(main())
