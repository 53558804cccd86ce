"""`python manage.py sandbox`: run the sandbox upstream server in the foreground."""

import signal
import threading
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from generator.upstream.sandbox import build_sandbox
from generator.upstream.sandbox.profiles import ProfileError
from generator.upstream.sandbox.server import make_server


def _port_of(url: str) -> int:
    """The port the app calls the sandbox on: SANDBOX_URL's, or its scheme's default."""
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


class Command(BaseCommand):
    help = "Run the sandbox upstream (Gemini and OpenAI-compatible image APIs) locally."

    def add_arguments(self, parser):
        parser.add_argument(
            "--port", type=int, default=None,
            help="Port to listen on (default: the port of SANDBOX_URL; 0: any free port).",
        )  # fmt: skip
        parser.add_argument(
            "--host", default="127.0.0.1",
            help="Address to listen on (default 127.0.0.1; the sandbox is never public).",
        )  # fmt: skip
        parser.add_argument(
            "--profile", default=None, help="Fault profile (default SANDBOX_PROFILE)."
        )
        parser.add_argument(
            "--time-scale", type=float, default=None,
            help="Multiplies every duration (default TIME_SCALE); 0.01 runs 100x faster.",
        )  # fmt: skip
        parser.add_argument("--seed", type=int, default=None, help="Seed (default SANDBOX_SEED).")

    def handle(self, *args, port, host, profile, time_scale, seed, **options):
        port = _port_of(settings.SANDBOX_URL) if port is None else port
        if not 0 <= port <= 65535:
            raise CommandError("--port must be between 0 and 65535")
        try:
            sandbox = build_sandbox(
                profile or settings.SANDBOX_PROFILE,
                settings.SANDBOX_SEED if seed is None else seed,
                settings.TIME_SCALE if time_scale is None else time_scale,
            )
        except ProfileError as exc:
            raise CommandError(str(exc)) from exc
        try:
            server = make_server(sandbox, host, port)
        except OSError as exc:
            raise CommandError(f"Cannot listen on {host}:{port}: {exc}") from exc
        bound = server.server_address[1]
        # The fixtures and `make run` read this exact line to learn the port.
        self.stdout.write(f"Sandbox listening on http://{host}:{bound}")
        self.stdout.write(
            f"profile {sandbox.profile.name}, time scale {sandbox.clock.scale:g}, seed {sandbox.seed}",
        )
        self.stdout.flush()
        stop = threading.Event()

        def on_signal(signum, frame):
            stop.set()
            # shutdown() waits for serve_forever to return: not from its own thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            server.server_close()
