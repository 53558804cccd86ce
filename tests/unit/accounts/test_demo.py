"""The demo operator (`manage.py ensure_demo`) and the admin link: the menu offers the
admin only to those it shows something, and the demo operator can read the request log
that the monitoring page links to."""

import pytest
from django.core.management import call_command
from django.urls import reverse

from accounts.management.commands.ensure_demo import DEMO_EMAIL
from accounts.models import User

pytestmark = pytest.mark.django_db


def test_it_lets_the_demo_operator_read_the_request_log_it_is_shown(client, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    call_command("ensure_demo")
    demo = User.objects.get(email=DEMO_EMAIL)
    client.force_login(demo)
    body = client.get(reverse("home")).content.decode()
    assert f'href="{reverse("admin:index")}"' in body
    assert client.get(reverse("admin:index")).status_code == 200
    for name in ("generator_attempt_changelist", "generator_generationrequest_changelist"):
        assert client.get(reverse(f"admin:{name}")).status_code == 200
    # Read-only: it may change nothing there.
    assert not demo.has_perm("generator.change_generationrequest")


def test_it_grants_an_existing_demo_account_on_the_next_run(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    User.objects.create_user(DEMO_EMAIL, "x" * 16, name="Demo", is_staff=True)
    call_command("ensure_demo")
    assert User.objects.get(email=DEMO_EMAIL).has_perm("generator.view_attempt")


def test_it_hides_the_admin_from_staff_it_would_show_nothing(client_for, staff):
    body = client_for(staff).get(reverse("home")).content.decode()
    assert f'href="{reverse("admin:index")}"' not in body
    assert f'href="{reverse("monitoring:dashboard")}"' in body
