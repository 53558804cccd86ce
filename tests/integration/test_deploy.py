"""The production configuration passes Django's deployment checks."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "x" * 20 + "-not-a-real-key-but-long-and-random-enough-0123456789",
    "ALLOWED_HOSTS": "steadyshot.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://steadyshot.example.com",
    "DATABASE_URL": "postgres://steadyshot@db.internal:5432/steadyshot",
    "REDIS_URL": "redis://redis.internal:6379/0",
    "EMAIL_HOST": "smtp.internal",
}


def _check(env, tmp_path):
    # A deployed process has none of the test run's own switches (the browser tests set
    # DJANGO_ALLOW_ASYNC_UNSAFE for Playwright, which the deploy check rightly refuses).
    test_only = {"DJANGO_ALLOW_ASYNC_UNSAFE"}
    base = {k: v for k, v in os.environ.items() if k not in PRODUCTION and k not in test_only}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**base, **env, "VAR_DIR": str(tmp_path), "STATIC_ROOT": str(tmp_path / "static")},
        capture_output=True,
        text=True,
    )


def test_it_passes_the_deploy_checks_with_the_production_variables(tmp_path):
    result = _check(PRODUCTION, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_it_refuses_to_start_without_a_secret_key_in_production(tmp_path):
    env = {**PRODUCTION, "SECRET_KEY": ""}
    result = _check(env, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr
