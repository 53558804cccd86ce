import secrets

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.models import Team, User

DEMO_EMAIL = "demo@steadyshot.local"


class Command(BaseCommand):
    help = "Create the demo account (staff, with a team) if it does not exist, and print how to log in."

    def handle(self, *args, **options):
        credentials = settings.VAR_DIR / "demo-credentials.txt"
        if User.objects.filter(email=DEMO_EMAIL).exists():
            where = f" (password in {credentials})" if credentials.exists() else ""
            self.stdout.write(f"Demo account: {DEMO_EMAIL}{where}")
            return
        password = secrets.token_urlsafe(12)
        user = User.objects.create_user(DEMO_EMAIL, password, name="Demo", is_staff=True)
        user.switch_team(Team.create_with_owner("Demo team", user))
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        credentials.write_text(f"{DEMO_EMAIL}\n{password}\n")
        credentials.chmod(0o600)
        self.stdout.write(self.style.SUCCESS(f"Demo account created: {DEMO_EMAIL} / {password}"))
