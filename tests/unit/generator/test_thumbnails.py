"""A delivered image gets its thumbnail after the delivery commits; until then the
thumbnail's address shows the image itself."""

import io

import pytest
from django.urls import reverse
from PIL import Image as PILImage

from generator.images import add_thumbnail, prepare_generated_image, save_generated_image
from tests.media import picture
from tests.unit.generator.test_views import make_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def delivered(settings, tmp_path, alice, team):
    """An image delivered a moment ago: stored, its thumbnail not made yet."""
    settings.MEDIA_ROOT = tmp_path
    row = make_request(alice, team, status="running")
    return save_generated_image(row, prepare_generated_image(picture(), thumbnail=False))


def _shown(client, image) -> tuple[str, str]:
    response = client.get(reverse("generator:thumbnail", args=[image.request_id]))
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    return response["Content-Type"], PILImage.open(io.BytesIO(body)).format


def test_it_shows_the_image_itself_until_its_thumbnail_is_made(delivered, alice, client_for):
    assert not delivered.thumbnail
    assert _shown(client_for(alice), delivered) == ("image/png", "PNG")


def test_it_makes_the_thumbnail_once(delivered, alice, client_for):
    assert add_thumbnail(delivered)
    delivered.refresh_from_db()
    assert _shown(client_for(alice), delivered) == ("image/jpeg", "JPEG")
    assert not add_thumbnail(delivered)  # a second time changes nothing


def test_it_shows_a_transparent_image_s_thumbnail_as_webp(
    settings, tmp_path, alice, team, client_for
):
    settings.MEDIA_ROOT = tmp_path
    row = make_request(alice, team, status="running")
    prepared = prepare_generated_image(picture("PNG", (64, 48), "RGBA"))
    image = save_generated_image(row, prepared)
    assert _shown(client_for(alice), image) == ("image/webp", "WEBP")
