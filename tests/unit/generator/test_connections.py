"""The long-lived processes check their database connection at most once a second per
thread (generator/connections.py), and always after an error."""

import threading

from django.db import connection

from generator import connections


def test_it_checks_the_connection_once_a_second_and_after_an_error(monkeypatch):
    checks, now = [], [1000.0]
    monkeypatch.setattr(connections, "close_old_connections", lambda: checks.append(now[0]))
    monkeypatch.setattr(connections.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(connections, "_checked", threading.local())

    connections.refresh()
    now[0] += 0.5
    connections.refresh()  # within the second: no round trip
    connection.errors_occurred = True
    try:
        connections.refresh()  # an error since: checked at once
    finally:
        connection.errors_occurred = False
    now[0] += 1.0
    connections.refresh()

    assert checks == [1000.0, 1000.5, 1001.5]


def test_it_checks_each_threads_connection_on_its_own(monkeypatch):
    checks = []
    monkeypatch.setattr(connections, "close_old_connections", lambda: checks.append(1))
    monkeypatch.setattr(connections, "_checked", threading.local())

    connections.refresh()
    other = threading.Thread(target=connections.refresh)
    other.start()
    other.join()

    assert len(checks) == 2
