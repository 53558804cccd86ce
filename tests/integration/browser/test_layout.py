"""Every page at a phone's 390 px and a laptop's 1366 px: it fits the screen (no sideways
scroll, no table hiding columns), the header stays one row on a phone, and a screenshot
of each is kept (var/artifacts/screenshots/ or $SCREENSHOT_DIR) so a change in layout
is seen."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from generator.models import GenerationRequest, Status
from monitoring import rollups
from quotas.models import UsageEntry
from quotas.services import set_limits
from tests.factories import FLASH, PRO, make_request
from tests.integration.browser.conftest import DESKTOP, PHONE, assert_fits

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = [("390", PHONE), ("1366", DESKTOP)]


@pytest.fixture
def site(alice, bob, staff, team, images):
    """A team with limits, a ledger and a gallery; an hour and the hour before it of
    traffic for the monitoring page."""
    set_limits(
        team,
        images_per_day=50,
        images_per_month=1000,
        monthly_budget_usd=Decimal("100.00"),
        member_daily_cap=20,
    )
    for row in images:
        UsageEntry.objects.create(
            team=team,
            user=row.user,
            request_id=row.pk,
            admitted=row.created,
            kind=UsageEntry.Kind.CHARGE,
            images=1,
            amount_usd=Decimal("0.134"),
            reserved_usd=Decimal("0.134"),
            model=row.served_model,
        )
    now = timezone.now()
    for minutes_ago in range(2, 118, 3):
        fell_back = minutes_ago % 4 == 0
        failed = minutes_ago % 13 == 0
        attempts = [(PRO, "overloaded", 1, 1500, 503)] if fell_back or failed else []
        if failed:
            attempts.append((FLASH, "blocked", 4, 900, 200))
        else:
            attempts.append((FLASH if fell_back else PRO, "success", 5, 20_000, 200))
        make_request(
            alice if minutes_ago % 2 else bob,
            created=now - timedelta(minutes=minutes_ago, seconds=40),
            status="failed" if failed else "succeeded",
            served_model=FLASH if fell_back else PRO,
            fell_back=fell_back,
            strategy="stability-first" if minutes_ago % 5 == 0 else "quality-first",
            attempts=attempts,
        )
    rollups.roll_up()
    return {"team": team, "images": images}


def pages_of_a_member(site) -> dict[str, str]:
    team, images = site["team"], site["images"]
    queued = GenerationRequest.objects.get(status=Status.QUEUED)
    return {
        "home": "/",
        "prompt": "/new/",
        "gallery": "/gallery/",
        "gallery-filtered": "/gallery/?scope=mine&status=succeeded",
        "detail": f"/images/{images[0].pk}/",
        "detail-fell-back": f"/images/{images[1].pk}/",
        "detail-queued": f"/images/{queued.pk}/",
        "delete": f"/images/{images[0].pk}/delete/",
        "teams": "/teams/",
        "team": f"/teams/{team.pk}/",
        "quota": f"/teams/{team.pk}/quota/",
        "quota-edit": f"/teams/{team.pk}/quota/edit/",
        "tokens": "/tokens/",
        "password": "/password/change/",
        "not-found": "/images/00000000-0000-0000-0000-000000000000/",
    }


def visit(t, who: str, name: str, path: str, width: str) -> None:
    response = t.goto(path)
    assert response.status in (200, 404), f"{path}: {response.status}"
    t.load_lazy_images()
    assert_fits(t, f"{who} {name} at {width} px")
    t.screenshot(f"{who}-{name}-{width}")


@pytest.mark.parametrize(("width", "viewport"), WIDTHS)
def test_it_fits_every_page_of_an_owner(tab, alice, site, width, viewport):
    t = tab(viewport)
    t.log_in(alice)
    for name, path in pages_of_a_member(site).items():
        visit(t, "owner", name, path, width)
    assert [e for e in t.errors if "Content Security Policy" in e] == []


@pytest.mark.parametrize(("width", "viewport"), WIDTHS)
def test_it_fits_every_page_of_a_member(tab, bob, site, width, viewport):
    t = tab(viewport)
    t.log_in(bob)
    for name in ("home", "gallery", "detail", "quota", "team"):
        visit(t, "member", name, pages_of_a_member(site)[name], width)


@pytest.mark.parametrize(("width", "viewport"), WIDTHS)
def test_it_fits_every_page_of_staff(tab, staff, site, redis_conn, width, viewport):
    t = tab(viewport)
    t.log_in(staff)
    for name, path in {
        "monitoring": "/monitoring/",
        "monitoring-15m": "/monitoring/?window=15m",
        "monitoring-7d": "/monitoring/?window=7d",
        "home": "/",
        "quota": f"/teams/{site['team'].pk}/quota/",
    }.items():
        visit(t, "staff", name, path, width)
    assert [e for e in t.errors if "Content Security Policy" in e] == []


@pytest.mark.parametrize(("width", "viewport"), WIDTHS)
def test_it_fits_every_page_of_a_visitor(tab, db, width, viewport):
    t = tab(viewport)
    for name, path in {
        "home": "/",
        "login": "/login/",
        "signup": "/signup/",
        "password-reset": "/password/reset/",
    }.items():
        visit(t, "visitor", name, path, width)


def test_it_keeps_the_phone_header_to_one_row_with_a_menu(tab, staff, site):
    t = tab(PHONE)
    t.log_in(staff)
    t.goto("/gallery/")
    header = t.page.locator(".site-header .bar").bounding_box()
    assert header["height"] < 70, header
    # The main links are in the menu: closed, they take no room; open, they work.
    main = t.page.get_by_role("navigation", name="Main")
    expect(main).to_have_count(0)
    t.page.locator(".menu summary").click()
    expect(main.get_by_role("link", name="Monitoring")).to_be_visible()
    t.screenshot("staff-menu-open-390")
    main.get_by_role("link", name="New image").click()
    t.page.wait_for_url("**/new/")
