"""STORAGE_URL and the AWS_* variables choose where images live (config/storage.py)."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.storage import FILESYSTEM, S3, media_storage_entry


def test_it_keeps_images_on_the_file_system_by_default():
    assert media_storage_entry("", {}) == {"BACKEND": FILESYSTEM}
    assert media_storage_entry("file:", {}) == {"BACKEND": FILESYSTEM}


def test_it_reads_the_bucket_prefix_and_keys_for_s3():
    env = {
        "AWS_S3_ENDPOINT_URL": "http://127.0.0.1:8333",
        "AWS_S3_REGION_NAME": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "key",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_S3_ADDRESSING_STYLE": "path",
    }
    entry = media_storage_entry("s3://images/steadyshot/prod/", env)
    options = entry["OPTIONS"]

    assert entry["BACKEND"] == S3
    assert (options["bucket_name"], options["location"]) == ("images", "steadyshot/prod")
    assert options["endpoint_url"] == "http://127.0.0.1:8333"
    assert options["region_name"] == "eu-west-1"
    assert (options["access_key"], options["secret_key"]) == ("key", "secret")
    assert options["addressing_style"] == "path"
    # Nothing public: no ACL on objects, only signed links if url() is ever called.
    assert options["default_acl"] is None
    assert options["querystring_auth"] is True


def test_it_leaves_unset_keys_to_boto3s_own_chain():
    options = media_storage_entry("s3://images", {"AWS_DEFAULT_REGION": "us-east-2"})["OPTIONS"]
    assert (options["access_key"], options["secret_key"], options["endpoint_url"]) == (
        None,
        None,
        None,
    )
    assert options["region_name"] == "us-east-2"
    assert options["location"] == ""


@pytest.mark.parametrize("url", ["gs://images", "s3://", "s3://key:secret@images", "/var/media"])
def test_it_refuses_a_storage_url_it_cannot_use(url):
    with pytest.raises(ImproperlyConfigured, match="STORAGE_URL"):
        media_storage_entry(url, {})
