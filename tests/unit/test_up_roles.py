"""ROLES: what one host of `make run` runs, and which of its children it restarts
(config/up.py)."""

import pytest

from config import up
from config.up import RolesError, roles, served_as_deployed


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


# --- DEBUG (issue 13, item 12) ------------------------------------------------------------


def test_it_runs_the_product_with_debug_off_unless_told_otherwise(tmp_path, monkeypatch):
    monkeypatch.setattr("config.up.VAR_DIR", tmp_path)
    env = served_as_deployed({}, "127.0.0.1")
    assert env["DEBUG"] == "0"
    assert env["SECRET_KEY"] == (tmp_path / "secret_key").read_text()
    assert env["ALLOWED_HOSTS"] == "localhost,127.0.0.1,[::1]"
    assert env["HTTPS"] == "0"  # plain HTTP on this machine: cookies must still work
    assert "gallery.local" in served_as_deployed({}, "gallery.local")["ALLOWED_HOSTS"]


def test_it_keeps_what_the_environment_says():
    # The development switch, and a deploy's own settings, are left as they are.
    assert served_as_deployed({"DEBUG": "1"}, "127.0.0.1") == {}
    assert served_as_deployed({"DEBUG": "0", "SECRET_KEY": "s"}, "127.0.0.1") == {}
    env = served_as_deployed({"SECRET_KEY": "s", "HTTPS": "1", "ALLOWED_HOSTS": "a.b"}, "::")
    assert (env["SECRET_KEY"], env["HTTPS"], env["ALLOWED_HOSTS"]) == ("s", "1", "a.b")


def test_it_restarts_a_worker_caller_or_cron_with_a_growing_back_off():
    restarts = up.Restarts()
    assert [restarts.delay_after_exit("worker1", t) for t in (0, 10, 20, 30)] == [1, 2, 4, 8]
    assert restarts.delay_after_exit("caller1", 30) == 1  # its own count
    assert restarts.delay_after_exit("cron", 30) == 1


def test_it_forgets_exits_older_than_the_window():
    restarts = up.Restarts()
    for t in (0, 10, 20, 30):
        restarts.delay_after_exit("worker1", t)
    # The first four are out of the window: this exit is the first again.
    assert restarts.delay_after_exit("worker1", 30 + up.RESTART_WINDOW_S) == 1


def test_it_gives_up_on_a_crash_loop():
    restarts = up.Restarts()
    delays = [restarts.delay_after_exit("worker2", t) for t in range(up.RESTART_LIMIT)]
    assert None not in delays[:-1]
    assert delays[-1] is None  # the fifth exit within the window stops everything


def test_it_never_restarts_the_infrastructure_or_the_web():
    restarts = up.Restarts()
    for name in ("redis", "sandbox", "web", "s3"):
        assert restarts.delay_after_exit(name, 0) is None


def test_it_names_each_restarted_worker_afresh_even_after_the_window():
    worker = up.Child("worker1", ["rqworker", "--name", "host-42-1", "default"])
    restarts = up.Restarts()
    names = []
    for t in (0, 10, 10 + up.RESTART_WINDOW_S + 1):  # the third exit: the others forgotten
        restarts.delay_after_exit("worker1", t)
        names.append(up.restarted(worker).cmd[2])
    assert names == ["host-42-1+1", "host-42-1+2", "host-42-1+3"]
