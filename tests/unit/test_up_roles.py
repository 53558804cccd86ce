"""ROLES: what one host of `make run` runs (config/up.py)."""

import pytest

from config.up import RolesError, roles


def test_it_runs_everything_on_one_machine_by_default():
    assert roles({}) == {"web", "workers", "cron", "redis", "sandbox"}


def test_it_starts_only_the_services_it_has_no_address_for():
    env = {"REDIS_URL": "redis://db:6379/0", "GEMINI_API_KEY": "k", "STORAGE": "s3-local"}
    assert roles(env) == {"web", "workers", "cron", "s3"}


def test_it_runs_exactly_the_roles_listed():
    env = {"ROLES": "web, workers", "REDIS_URL": "redis://db:6379/0", "SANDBOX_URL": "http://s"}
    assert roles(env) == {"web", "workers"}
    assert roles({"ROLES": "redis,sandbox,s3"}) == {"redis", "sandbox", "s3"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROLES": "web,mail"}, "unknown role"),
        ({"ROLES": "web", "SANDBOX_URL": "http://s"}, "set REDIS_URL"),
        ({"ROLES": "workers", "REDIS_URL": "redis://db:6379/0"}, "set SANDBOX_URL"),
    ],
)
def test_it_refuses_roles_that_cannot_work(env, message):
    with pytest.raises(RolesError, match=message):
        roles(env)
