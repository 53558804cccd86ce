"""Membership changes of one team happen one at a time (accounts/views.py, the team row's
lock): two owners demoting each other at the same moment leave the team one owner."""

import threading
import time

import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from accounts.models import Membership, Team

pytestmark = pytest.mark.django_db(transaction=True)


def _waiting_for_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0]


def test_it_keeps_an_owner_when_two_owners_demote_each_other_at_once(alice, bob, team):
    if connection.vendor != "postgresql":
        pytest.skip("holds a Postgres row lock")
    Membership.objects.filter(team=team, user=bob).update(role=Membership.Role.OWNER)
    answers = {}

    def demote(actor, target):
        client = Client()
        client.force_login(actor)
        membership = Membership.objects.get(team=team, user=target)
        url = reverse("accounts:member_role", args=[team.id, membership.id])
        answers[actor.email] = client.post(url, {"role": "member"}, follow=True)
        connection.close()

    threads = [
        threading.Thread(target=demote, args=(alice, bob)),
        threading.Thread(target=demote, args=(bob, alice)),
    ]
    with transaction.atomic():
        # An owner's change in flight: both requests arrive while the team is locked.
        Team.objects.select_for_update().get(pk=team.pk)
        for thread in threads:
            thread.start()
        # Until both wait for the lock (or, were there none, both are done).
        deadline = time.monotonic() + 60
        while _waiting_for_a_lock() < 2 and any(t.is_alive() for t in threads):
            assert time.monotonic() < deadline, "the two requests never reached the lock"
            time.sleep(0.05)
    for thread in threads:
        thread.join(timeout=60)

    assert team.owner_count() == 1
    said = sorted(
        "is now member" if "is now member" in a.content.decode() else "refused"
        for a in answers.values()
    )
    assert said == ["is now member", "refused"]
    refused = next(a for a in answers.values() if "is now member" not in a.content.decode())
    assert refused.status_code in (200, 403)
