import functools
import hashlib
import secrets
import uuid
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.core.exceptions import ImproperlyConfigured
from django.core.validators import MinValueValidator
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.models import Case, When
from django.db.models.functions import Lower
from django.utils import timezone

from config import statements


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create(self, email, password, **extra):
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email, password=None, **extra):
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self._create(email, password, **extra)


class User(AbstractUser):
    """Signs in with an e-mail address; belongs to teams through memberships and works in
    one active team at a time."""

    username = None
    first_name = None
    last_name = None
    email = models.EmailField("e-mail address", unique=True)
    name = models.CharField("display name", max_length=80, blank=True)
    active_team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = []

    objects = UserManager()

    class Meta:
        constraints = [
            # E-mail addresses are unique whatever their case.
            models.UniqueConstraint(Lower("email"), name="user_email_ci_unique"),
        ]

    def __str__(self):
        return self.name or self.email

    @property
    def display_name(self) -> str:
        return self.name or self.email.split("@")[0]

    def get_full_name(self):
        return self.name or self.email

    def get_short_name(self):
        return self.display_name

    def teams(self):
        return Team.objects.filter(memberships__user=self).order_by("-is_personal", "name")

    def membership_in(self, team) -> "Membership | None":
        return Membership.objects.filter(team=team, user=self).first()

    def current_team(self) -> "Team":
        """The team the user works in: the active one while they are still a member of it,
        else their first team; a user who has none gets a personal team."""
        if self.active_team_id:
            # One query on every page and API call: the team, if still a member of it.
            team = _member_team(self.active_team_id, self.pk)
            if team is not None:
                self.active_team = team
                return team
        team = self.teams().first() or Team.create_personal(self)
        self.switch_team(team)
        return team

    def switch_team(self, team: "Team") -> None:
        self.active_team = team
        self.save(update_fields=["active_team"])


# New teams start with the limits configured in settings (None: unlimited); callables, so
# changing the settings needs no migration.
def default_images_per_day():
    return settings.QUOTA_DEFAULT_IMAGES_PER_DAY


def default_images_per_month():
    return settings.QUOTA_DEFAULT_IMAGES_PER_MONTH


def default_monthly_budget_usd():
    raw = settings.QUOTA_DEFAULT_MONTHLY_BUDGET_USD
    if raw in (None, ""):
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise ImproperlyConfigured(
            f"QUOTA_DEFAULT_MONTHLY_BUDGET_USD must be an amount like 50.00; got {raw!r}"
        ) from None
    if value < 0:
        raise ImproperlyConfigured("QUOTA_DEFAULT_MONTHLY_BUDGET_USD cannot be negative.")
    return value


def default_member_daily_cap():
    return settings.QUOTA_DEFAULT_MEMBER_DAILY_CAP


class Team(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=80)
    is_personal = models.BooleanField(default=False)
    created = models.DateTimeField(default=timezone.now)

    # Quotas (the quotas app), set by the owners; empty means unlimited. Days and
    # months run in settings.QUOTA_TIME_ZONE.
    images_per_day = models.PositiveIntegerField(
        null=True, blank=True, default=default_images_per_day
    )
    images_per_month = models.PositiveIntegerField(
        null=True, blank=True, default=default_images_per_month
    )
    monthly_budget_usd = models.DecimalField(
        "monthly budget (USD)",
        max_digits=10,
        decimal_places=2,
        null=True,
        blank=True,
        default=default_monthly_budget_usd,
        validators=[MinValueValidator(Decimal(0))],
    )
    member_daily_cap = models.PositiveIntegerField(
        "images per member per day", null=True, blank=True, default=default_member_daily_cap
    )

    def __str__(self):
        return self.name

    @classmethod
    @transaction.atomic
    def create_with_owner(cls, name: str, owner: User, *, is_personal=False) -> "Team":
        team = cls.objects.create(name=name, is_personal=is_personal)
        Membership.objects.create(team=team, user=owner, role=Membership.Role.OWNER)
        return team

    @classmethod
    def create_personal(cls, user: User) -> "Team":
        return cls.create_with_owner(f"{user.display_name}'s team", user, is_personal=True)

    def members(self):
        owners_first = Case(When(role=Membership.Role.OWNER, then=0), default=1)
        return self.memberships.select_related("user").order_by(owners_first, "user__email")

    def owner_count(self) -> int:
        return self.memberships.filter(role=Membership.Role.OWNER).count()

    def pending_invites(self):
        return self.invites.filter(
            accepted=None, revoked=None, expires__gt=timezone.now()
        ).order_by("-created")


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="membership_unique"),
        ]

    def __str__(self):
        return f"{self.user} in {self.team} ({self.get_role_display()})"

    @property
    def is_owner(self) -> bool:
        return self.role == self.Role.OWNER

    def is_last_owner(self) -> bool:
        return self.is_owner and self.team.owner_count() == 1


def _invite_token() -> str:
    return secrets.token_urlsafe(24)


def _invite_expiry():
    return timezone.now() + timedelta(days=settings.INVITE_TTL_DAYS)


class Invite(models.Model):
    """A single-use link that lets whoever opens it join the team as a member."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invites")
    token = models.CharField(max_length=64, unique=True, default=_invite_token, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField(default=_invite_expiry)
    accepted = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    revoked = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"Invite to {self.team}"

    def problem(self) -> str:
        """Why this invite can no longer be used, or "" when it can."""
        if self.revoked:
            return "This invite link was withdrawn by the team's owner."
        if self.accepted:
            return "This invite link has already been used."
        if self.expires <= timezone.now():
            return "This invite link has expired."
        return ""

    @transaction.atomic
    def accept(self, user: User) -> Membership:
        """Join the user to the team and use up the invite. A user who already belongs to
        the team keeps their role and leaves the invite unused for someone else."""
        # The filtered update claims the invite, so two people opening the same link at
        # the same time cannot both join with it.
        existing = user.membership_in(self.team)
        if existing:
            return existing
        claimed = Invite.objects.filter(
            pk=self.pk, accepted=None, revoked=None, expires__gt=timezone.now()
        ).update(accepted=timezone.now(), accepted_by=user)
        if not claimed:
            raise Invite.Unusable(self.problem() or "This invite link can no longer be used.")
        membership = Membership.objects.create(team=self.team, user=user)
        user.switch_team(self.team)
        return membership

    class Unusable(Exception):
        pass


class ApiToken(models.Model):
    """A personal token for the JSON API. Only a hash is stored; the token is shown once."""

    PREFIX = "sst_"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=80)
    # The first characters of the token, shown in lists so a user can tell tokens apart.
    hint = models.CharField(max_length=12)
    # sha256 of the whole token; looked up on every API call.
    digest = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(default=timezone.now)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.name} ({self.hint}…)"

    @staticmethod
    def hash(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def issue(cls, user: User, name: str) -> tuple["ApiToken", str]:
        raw = cls.PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, hint=raw[:8], digest=cls.hash(raw))
        return token, raw

    @classmethod
    def _live(cls, digest: str, using: str = DEFAULT_DB_ALIAS) -> "ApiToken | None":
        """The token with this digest, not revoked, of an active user, with its user: what
        `select_related("user").filter(digest=…, revoked=None, user__is_active=True)`
        finds, in SQL written once (config/statements.py: every API call runs it)."""
        with connections[using].cursor() as cursor:
            cursor.execute(_live_token_sql(using), [digest, True])
            row = cursor.fetchone()
        if row is None:
            return None
        width = len(cls._meta.concrete_fields)
        token = statements.reader(cls, using).instance(using, row[:width])
        user = statements.reader(User, using).instance(using, row[width:])
        cls._meta.get_field("user").set_cached_value(token, user)
        return token

    @classmethod
    def authenticate(cls, raw: str) -> User | None:
        token = cls._live(cls.hash(raw))
        if token is None:
            return None
        # One write a minute at most: the API may be called many times a second.
        now = timezone.now()
        if token.last_used is None or now - token.last_used > timedelta(minutes=1):
            cls.objects.filter(pk=token.pk).update(last_used=now)
        return token.user


def _member_team(team_id, user_id, using: str = DEFAULT_DB_ALIAS) -> "Team | None":
    """`Team.objects.filter(pk=team_id, memberships__user=user_id).first()`, in SQL
    written once (config/statements.py: every page and API call runs it)."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            _member_team_sql(using),
            [
                statements.db_value(Team, using, "id", team_id),
                statements.db_value(Membership, using, "user", user_id),
            ],
        )
        row = cursor.fetchone()
    return None if row is None else statements.reader(Team, using).instance(using, row)


def _column(using: str, meta, name: str) -> str:
    quote = connections[using].ops.quote_name
    return f"{quote(meta.db_table)}.{quote(meta.get_field(name).column)}"


@functools.cache
def _member_team_sql(using: str) -> str:
    quote = connections[using].ops.quote_name
    team, membership = Team._meta, Membership._meta
    # Names from the models' metadata, quoted by the backend; every value a parameter.
    return (
        f"SELECT {statements.select_list(Team, using)} FROM {quote(team.db_table)}"  # noqa: S608
        f" INNER JOIN {quote(membership.db_table)}"
        f" ON {_column(using, membership, 'team')} = {_column(using, team, 'id')}"
        f" WHERE {_column(using, team, 'id')} = %s AND {_column(using, membership, 'user')} = %s"
    )


@functools.cache
def _live_token_sql(using: str) -> str:
    quote = connections[using].ops.quote_name
    token, user = ApiToken._meta, User._meta
    column = functools.partial(_column, using)
    # Names from the models' metadata, quoted by the backend; every value a parameter.
    return (
        f"SELECT {statements.select_list(ApiToken, using)}, {statements.select_list(User, using)}"  # noqa: S608
        f" FROM {quote(token.db_table)} INNER JOIN {quote(user.db_table)}"
        f" ON {column(token, 'user')} = {column(user, 'id')}"
        f" WHERE {column(token, 'digest')} = %s AND {column(token, 'revoked')} IS NULL"
        f" AND {column(user, 'is_active')} = %s"
    )
