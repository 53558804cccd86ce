"""Image checks: generated images stored once with a thumbnail; uploads refused unless they
are real PNG, JPEG or WebP images within the size and pixel caps."""

import hashlib

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from generator.images import (
    ImageRejected,
    delivering,
    inspect,
    prepare_generated_image,
    store_generated_image,
    validate_reference,
)
from generator.models import GenerationRequest, Image
from tests.media import picture, private_media


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    private_media(settings, tmp_path)


@pytest.fixture
def request_row(alice, team):
    return GenerationRequest.objects.create(
        user=alice, team=team, prompt="a red fox", strategy="quality-first"
    )


def test_it_stores_the_original_and_a_jpeg_thumbnail(request_row):
    data = picture("PNG", (64, 48))
    image = store_generated_image(request_row, data)
    image.refresh_from_db()
    assert (image.width, image.height, image.mime, image.bytes) == (64, 48, "image/png", len(data))
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert image.file.read() == data
    assert image.file.name.startswith(f"images/{request_row.team_id}/")
    assert image.thumbnail.name.endswith(".jpg")
    with PILImage.open(image.thumbnail) as thumb:
        assert thumb.format == "JPEG"
        assert thumb.size == (32, 24)


def test_it_records_the_real_type_not_the_claimed_one(request_row):
    image = store_generated_image(request_row, picture("JPEG"))
    assert image.mime == "image/jpeg"
    assert image.file.name.endswith(".jpg")


@pytest.mark.parametrize("size, thumb", [((256, 128), (32, 16)), ((300, 200), (32, 21))])
def test_it_thumbnails_a_jpeg_at_its_full_size_s_ratio_and_keeps_its_real_size(
    request_row, size, thumb
):
    # A JPEG is decoded at a reduced scale for its thumbnail (256 → 32 is JPEG's 1/8;
    # 300 → 32 is not a scale of its own): the image keeps its real size all the same.
    image = store_generated_image(request_row, picture("JPEG", size))
    assert (image.width, image.height) == size
    with PILImage.open(image.thumbnail) as made:
        assert made.size == thumb


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_it_refuses_a_truncated_generated_image_it_would_thumbnail(fmt):
    data = picture(fmt, (256, 256), "RGB")
    with pytest.raises(ImageRejected, match="damaged"):
        prepare_generated_image(data[: len(data) - 40])


def test_it_is_idempotent_per_request(request_row):
    first = store_generated_image(request_row, picture())
    second = store_generated_image(request_row, picture("JPEG"))
    assert second.pk == first.pk
    assert Image.objects.filter(request=request_row).count() == 1


def test_it_writes_a_delivery_s_files_before_its_row_and_keeps_them_once_saved(request_row):
    with delivering(request_row, prepare_generated_image(picture())) as image:
        # In storage before the transaction that ends the request starts: that one
        # holds its locks for database statements only.
        names = [image.file.name, image.thumbnail.name]
        assert all(image.file.storage.exists(name) for name in names)
        assert not Image.objects.exists()
        image.save()
    assert all(image.file.storage.exists(name) for name in names)
    assert Image.objects.get().file.read() == picture()


def test_it_deletes_a_delivery_s_files_when_its_row_is_not_saved(request_row):
    with delivering(request_row, prepare_generated_image(picture())) as image:
        names = [image.file.name, image.thumbnail.name]  # the request was taken over
    assert not any(image.file.storage.exists(name) for name in names)


def test_it_deletes_a_delivery_s_files_when_its_transaction_fails(request_row):
    prepared = prepare_generated_image(picture())
    with pytest.raises(RuntimeError), delivering(request_row, prepared) as image:
        names = [image.file.name, image.thumbnail.name]
        raise RuntimeError("the database went away")
    assert not any(image.file.storage.exists(name) for name in names)
    assert not Image.objects.exists()


def test_it_refuses_bytes_that_are_not_an_image(request_row):
    with pytest.raises(ImageRejected):
        store_generated_image(request_row, b"<html>502 Bad Gateway</html>")
    assert not Image.objects.exists()


def test_it_keeps_transparency_in_the_thumbnail(request_row):
    image = store_generated_image(request_row, picture("PNG", (40, 40), "RGBA"))
    assert image.thumbnail.name.endswith(".webp")  # JPEG has no transparency
    with PILImage.open(image.thumbnail) as thumb:
        assert (thumb.format, thumb.mode) == ("WEBP", "RGBA")


def upload(data: bytes, name="ref.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/png")


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_it_accepts_png_jpeg_and_webp_references(fmt, mime):
    data = picture(fmt)
    assert validate_reference(upload(data)) == (data, mime)


def test_it_refuses_other_image_types():
    with pytest.raises(
        ValidationError, match="GIF images are not accepted; use PNG, JPEG or WebP"
    ):
        validate_reference(upload(picture("GIF"), "ref.gif"))


def test_it_refuses_a_file_that_is_not_an_image():
    with pytest.raises(ValidationError, match="not a readable image"):
        validate_reference(upload(b"%PDF-1.7 not an image", "ref.pdf"))


def test_it_refuses_a_truncated_image():
    data = picture("PNG", (300, 300))
    with pytest.raises(ValidationError, match="damaged"):
        validate_reference(upload(data[: len(data) // 2]))


def test_it_refuses_a_file_over_the_size_cap(settings):
    data = picture()
    settings.REFERENCE_MAX_BYTES = 100_000
    with pytest.raises(ValidationError, match=r"ref.png is 0.2 MB, over the limit of 0.1 MB"):
        validate_reference(upload(data + b"\0" * 200_000))
    # Sizes that round alike are given in bytes.
    settings.REFERENCE_MAX_BYTES = len(data) - 1
    with pytest.raises(ValidationError) as refused:
        validate_reference(upload(data))
    assert refused.value.messages == [
        f"ref.png is {len(data):,} bytes, over the limit of {len(data) - 1:,} bytes."
    ]


def test_it_refuses_an_image_over_the_pixel_cap():
    with pytest.raises(ValidationError, match=r"1200×1000 \(1.2 megapixels\); the limit is 1.0"):
        validate_reference(upload(picture("PNG", (1200, 1000), "L")))


def test_it_refuses_a_decompression_bomb_with_a_clear_message(settings, monkeypatch):
    # A bomb is an image whose header promises more pixels than Pillow will ever decode;
    # lowering Pillow's own limit below our cap exercises that path with a small file.
    settings.REFERENCE_MAX_PIXELS = 10**9
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValidationError, match="decompression bomb"):
        validate_reference(upload(picture("PNG", (100, 100))))


def test_it_inspect_reports_type_and_size():
    assert inspect(picture("WEBP", (10, 20)), 1000) == ("image/webp", 10, 20)
