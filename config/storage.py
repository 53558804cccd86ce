"""Where images live: the file system under MEDIA_ROOT (the default) or a private
S3-compatible bucket, chosen by STORAGE_URL.

    STORAGE_URL unset or file:     FileSystemStorage under MEDIA_ROOT (one machine)
    STORAGE_URL=s3://BUCKET[/PREFIX]   django-storages' S3Storage (several machines)

The bucket's other settings use the names boto3 and django-storages users know:
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (unset: boto3's own chain, e.g. an instance
role), AWS_S3_ENDPOINT_URL (SeaweedFS, MinIO, R2...; unset: AWS), AWS_S3_REGION_NAME
and AWS_S3_ADDRESSING_STYLE. Objects are written without an ACL, so they are as private
as the bucket; members only ever get them through the views' access checks.
"""

from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

FILESYSTEM = "django.core.files.storage.FileSystemStorage"
S3 = "storages.backends.s3.S3Storage"


def media_storage_entry(url: str, env: dict) -> dict:
    """The STORAGES["default"] entry for STORAGE_URL, reading the AWS_* names from env."""
    if not url or url in {"file:", "file://"}:
        return {"BACKEND": FILESYSTEM}
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ImproperlyConfigured(
            f"STORAGE_URL must be s3://BUCKET[/PREFIX] or unset (the file system); got {url!r}"
        )
    if not parts.netloc or parts.username or parts.password:
        raise ImproperlyConfigured(
            "STORAGE_URL is s3://BUCKET[/PREFIX]; give the keys in AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY, not in the URL (got {url!r})."
        )
    from botocore.config import Config

    return {
        "BACKEND": S3,
        "OPTIONS": {
            "bucket_name": parts.netloc,
            "location": parts.path.strip("/"),
            "endpoint_url": env.get("AWS_S3_ENDPOINT_URL") or None,
            "region_name": env.get("AWS_S3_REGION_NAME") or env.get("AWS_DEFAULT_REGION") or None,
            "access_key": env.get("AWS_ACCESS_KEY_ID") or None,
            "secret_key": env.get("AWS_SECRET_ACCESS_KEY") or None,
            "addressing_style": env.get("AWS_S3_ADDRESSING_STYLE") or None,
            "signature_version": "s3v4",
            # Never public: no ACL on write (the bucket's private default), and url()
            # would only ever hand out a signed, short-lived link.
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": 300,
            # Names are random (uuid4): never probe the bucket for a free one.
            "file_overwrite": True,
            # An object is read into memory up to this size, into a temporary file past it.
            "max_memory_size": 8 * 1024 * 1024,
            # A bucket that does not answer fails a request in seconds, not minutes.
            "client_config": Config(
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        },
    }


def is_s3(storage_entry: dict) -> bool:
    return storage_entry.get("BACKEND") == S3
