"""A property-based run over every page and form of the site (the APIs have theirs:
tests/integration/generator/test_api_properties.py). Every URL the site serves, found by
walking the URL configuration, gets generated queries, form fields, uploads and path
ids, signed in as a team owner or signed out. Whatever comes in, the answer is never a
5xx, and a refusal (a 4xx, or a form shown again with its errors) changes no row and
writes no file (issue 13, "Guard it for good").

Bounded for the suite's time budget (MAX_EXAMPLES per URL, more for the richest forms in
EXAMPLES; derandomized so that a run is reproducible); raise them locally to search
harder.
"""

import uuid
from datetime import timedelta

import pytest
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts.models import ApiToken, Invite, Membership
from generator.models import Status
from generator.resilience.catalogue import ASPECT_RATIOS, IMAGE_SIZES
from generator.resilience.strategies import STRATEGIES
from tests.conftest import PASSWORD
from tests.media import picture, private_media
from tests.unit.generator.test_views import make_request

pytestmark = pytest.mark.django_db

MAX_EXAMPLES = 8
# The APIs (their own property run), the admin (Django's) and Swagger UI (ninja's).
SKIPPED = ("admin/", "api/", "v1/")

# Every name a form or view of the site reads, and a few it does not.
FIELDS = [
    # prompt
    "prompt", "strategy", "aspect_ratio", "image_size", "count", "deadline", "remix_of",
    # accounts
    "email", "name", "password1", "password2", "username", "password", "old_password",
    "new_password1", "new_password2", "role", "next", "invite",
    # gallery, bulk, detail
    "ids", "action", "confirm", "description", "scope", "member", "model", "fell_back",
    "status", "since", "until", "q", "batch", "before", "select", "download", "remix",
    # quotas, monitoring
    "images_per_day", "images_per_month", "monthly_budget_usd", "member_daily_cap",
    "window", "sort", "usort",
    "unknown",
]  # fmt: skip

TRICKY = [
    "", " ", "0", "-1", "1", "4", "5", "99999999999999999999999", "1e309", "NaN", "0.005",
    "quality-first", "stability-first", "economy", "4K", "1K", "21:9", "owner", "member",
    "delete", "zip", "yes", "team", "mine", "favourites", "succeeded",
    "2027-13-45T00:00", "2027-01-01T25:00", "1999-01-01T00:00", "2099-01-01T00:00",
    "2026-02-30", "not-a-uuid", str(uuid.UUID(int=0)), "/\\evil.com", "//evil.com",
    "https://evil.com/", "/gallery/", "a\x00b", "<script>alert(1)</script>", "x" * 5000,
    "é" * 300, "🦊", "%00", "../../etc/passwd",
]  # fmt: skip

# Text a browser can send (a lone surrogate cannot be encoded in a form at all).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)


# What each form reads: most examples fill them (plausibly or not), so that generated
# submissions get past the first check to the rules behind it.
ROUTE_FIELDS = {
    "new/": ["prompt", "strategy", "aspect_ratio", "image_size", "count", "deadline", "remix_of"],
    "signup/": ["email", "name", "password1", "password2", "next"],
    "login/": ["username", "password", "next"],
    "password/reset/": ["email"],
    "password/change/": ["old_password", "new_password1", "new_password2"],
    "password/reset/<uidb64>/<token>/": ["new_password1", "new_password2"],
    "tokens/": ["name"],
    "teams/new/": ["name"],
    "teams/<uuid:team_id>/": ["invite"],
    "teams/<uuid:team_id>/rename/": ["name"],
    "teams/<uuid:team_id>/switch/": ["next"],
    "teams/<uuid:team_id>/members/<uuid:membership_id>/role/": ["role"],
    "teams/<uuid:team_id>/quota/edit/": [
        "images_per_day", "images_per_month", "monthly_budget_usd", "member_daily_cap",
    ],
    "gallery/": ["scope", "strategy", "status", "since", "until", "q", "batch", "before"],
    "gallery/selected/": ["ids", "action", "confirm"],
    "images/<uuid:request_id>/cancel/": ["next"],
    "images/<uuid:request_id>/favourite/": ["next"],
    "images/<uuid:request_id>/description/": ["description"],
    "monitoring/": ["window", "sort", "usort"],
}  # fmt: skip
# The form routes that matter most, searched harder.
EXAMPLES = {"new/": 50, "teams/<uuid:team_id>/": 16, "signup/": 16, "gallery/selected/": 16}
PHRASE = "a long and unusual phrase"
PLAUSIBLE = {
    "prompt": st.sampled_from(["a lighthouse at dusk", "sandbox:blocked a fox"]),
    "strategy": st.sampled_from(STRATEGIES),
    "aspect_ratio": st.sampled_from(ASPECT_RATIOS),
    "image_size": st.sampled_from(IMAGE_SIZES),
    "count": st.integers(0, 5).map(str),
    # Empty, tomorrow (accepted), past and too far ahead (refused).
    "deadline": st.sampled_from(
        [
            "",
            f"{timezone.now() + timedelta(days=1):%Y-%m-%dT%H:%M}",
            "2000-01-01T00:00",
            "2099-01-01T00:00",
        ]
    ),
    "email": st.sampled_from(["dora@example.com", "alice@example.com", "nobody@example.com"]),
    "username": st.sampled_from(["alice@example.com", "ALICE@example.com "]),
    "password": st.sampled_from([PASSWORD, "wrong"]),
    "old_password": st.sampled_from([PASSWORD, "wrong"]),
    "password1": st.just(PHRASE),
    "password2": st.sampled_from([PHRASE, "another phrase"]),
    "new_password1": st.just(PHRASE),
    "new_password2": st.sampled_from([PHRASE, "another phrase"]),
    "role": st.sampled_from(["owner", "member"]),
    "action": st.sampled_from(["delete", "zip"]),
    "confirm": st.sampled_from(["yes", "no"]),
    "images_per_day": st.integers(-1, 3).map(str),
    "monthly_budget_usd": st.sampled_from(["", "0.01", "10", "-5", "1e3"]),
}


def often(probability_in_5: int):
    """True `probability_in_5` times in 5."""
    return st.integers(0, 4).map(lambda n: n < probability_in_5)


def field_value(name: str, ids: list[str]):
    """Mostly what the form expects (ids of this world's rows for id fields), else
    anything."""
    plausible = PLAUSIBLE.get(name)
    if name in ("ids", "remix_of", "batch", "before", "invite"):
        plausible = st.one_of(st.sampled_from(ids), st.lists(st.sampled_from(ids), max_size=3))
    if plausible is None:
        return values(ids)
    return often(4).flatmap(lambda yes: plausible if yes else values(ids))


def values(ids: list[str]):
    scalar = st.one_of(st.sampled_from(TRICKY + ids), TEXT)
    return st.one_of(scalar, st.lists(scalar, min_size=2, max_size=3))


def uploads():
    good = st.sampled_from(["PNG", "JPEG", "WEBP"]).map(picture)
    content = st.one_of(good, st.binary(max_size=200), st.just(picture()[:60]))
    name = st.sampled_from(["ref.png", "ref.jpg", "ref.gif", "noext", "../x.png"])
    any_file = st.builds(lambda n, c: SimpleUploadedFile(n, c), name, content)
    image = st.builds(lambda c: SimpleUploadedFile("ref.png", c), good)
    # Often only images: a submission's other rules (and the storage) come into play.
    return st.one_of(st.lists(image, min_size=1, max_size=5), st.lists(any_file, max_size=4))


def routes() -> list[str]:
    """Every URL pattern of the site, as "a/<uuid:b>/" strings, minus SKIPPED."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, route)
            elif not route.startswith(SKIPPED):
                yield route

    return sorted(set(walk(get_resolver().url_patterns)))


ROUTES = routes()


@pytest.fixture
def world(alice, bob, team, settings, tmp_path):
    """A team with some of everything a URL can name: requests, an invite, a token."""
    private_media(settings, tmp_path)
    done = make_request(alice, team)
    queued = make_request(bob, team, status=Status.QUEUED, prompt="a queued cat")
    invite = Invite.objects.create(team=team, created_by=alice)
    token, _ = ApiToken.issue(alice, "ci")
    ids = {
        "team_id": [str(team.pk)],
        "request_id": [str(done.pk), str(queued.pk)],
        "invite_id": [str(invite.pk)],
        "membership_id": [str(m.pk) for m in Membership.objects.filter(team=team)],
        "token_id": [str(token.pk)],
        "token": [invite.token],
    }
    return ids


def concrete(route: str, ids: dict, data) -> str:
    """`route` with each <converter:name> replaced by a real id or a random value."""
    parts = route.split("<")
    path = parts[0]
    for part in parts[1:]:
        spec, rest = part.split(">", 1)
        name = spec.split(":")[-1]
        choices = [*ids.get(name, []), str(uuid.UUID(int=7)), "MQ", "nope"]
        if spec.startswith("uuid:"):
            choices = [c for c in choices if _is_uuid(c)]
        path += data.draw(st.sampled_from(choices)) + rest
    return "/" + path


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _shows_form_errors(response) -> bool:
    """A page that shows a form again with its errors: the submission was refused."""
    form = response.context.get("form") if response.context else None
    return bool(getattr(form, "errors", None))


# Bookkeeping that any authenticated call updates, refused or not.
BOOKKEEPING = {"last_login", "last_used"}


def _kept_fields(model) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields if f.name not in BOOKKEEPING]


def snapshot(media) -> tuple:
    """Every row of the product's own apps, and the files under MEDIA_ROOT (the API's
    property run checks the same)."""
    rows = tuple(
        tuple(model.objects.order_by("pk").values_list(*_kept_fields(model)))
        for label in ("accounts", "quotas", "generator")
        for model in apps.get_app_config(label).get_models()
    )
    files = tuple(sorted(str(p) for p in media.rglob("*"))) if media.exists() else ()
    return rows, files


@pytest.mark.parametrize("route", ROUTES)
def test_it_never_answers_5xx_and_a_refusal_changes_nothing(route, client, alice, world, settings):
    flat = [v for vs in world.values() for v in vs]

    @hypothesis_settings(
        max_examples=EXAMPLES.get(route, MAX_EXAMPLES),
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=st.data())
    def check(data):
        client.logout()
        if data.draw(often(4), label="signed in"):
            client.force_login(alice)
        form = route in ROUTE_FIELDS
        method = "post" if data.draw(often(4 if form else 2), label="post") else "get"
        names = [n for n in ROUTE_FIELDS.get(route, []) if data.draw(st.integers(0, 9))]
        names += data.draw(st.lists(st.sampled_from(FIELDS), max_size=3), label="extra")
        fields = {name: data.draw(field_value(name, flat), label=name) for name in names}
        path = concrete(route, world, data)
        if method == "post" and data.draw(often(4 if route == "new/" else 1), label="files"):
            fields["references"] = data.draw(uploads())
        before = snapshot(settings.MEDIA_ROOT)

        client.raise_request_exception = False
        response = getattr(client, method)(path, fields)

        # Readiness says 503 when Redis does not answer: here it never does (no Redis).
        answers_503 = route == "readyz" and response.status_code == 503
        assert response.status_code < 500 or answers_503, (method, path, fields)
        refused = response.status_code >= 400 or _shows_form_errors(response)
        if refused:
            assert snapshot(settings.MEDIA_ROOT) == before, (method, path, fields)

    check()
