import secrets

from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand

from accounts.models import Team, User

DEMO_EMAIL = "demo@steadyshot.local"
# The demo operator is staff (it sees monitoring) and may read the request log that the
# monitoring page links to, in the admin; it may change nothing there.
DEMO_PERMISSIONS = (
    ("generator", "view_generationrequest"),
    ("generator", "view_attempt"),
    ("monitoring", "view_alert"),
)


def grant_demo_permissions(user: User) -> None:
    """Idempotent, so demo accounts created before the grant get it on the next run."""
    for app_label, codename in DEMO_PERMISSIONS:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )


class Command(BaseCommand):
    help = "Create the demo account (staff, with a team) if it does not exist, and print how to log in."

    def handle(self, *args, **options):
        credentials = settings.VAR_DIR / "demo-credentials.txt"
        existing = User.objects.filter(email=DEMO_EMAIL).first()
        if existing is not None:
            grant_demo_permissions(existing)
            where = f" (password in {credentials})" if credentials.exists() else ""
            self.stdout.write(f"Demo account: {DEMO_EMAIL}{where}")
            return
        password = secrets.token_urlsafe(12)
        user = User.objects.create_user(DEMO_EMAIL, password, name="Demo", is_staff=True)
        user.switch_team(Team.create_with_owner("Demo team", user))
        grant_demo_permissions(user)
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        credentials.write_text(f"{DEMO_EMAIL}\n{password}\n")
        credentials.chmod(0o600)
        self.stdout.write(self.style.SUCCESS(f"Demo account created: {DEMO_EMAIL} / {password}"))
