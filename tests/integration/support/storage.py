"""Image storage for integration tests: a real SeaweedFS S3 server (not a mock) and a
`media_storage` fixture that runs a test once on the file system and once on a private
bucket in it.

`seaweedfs` (session) starts `weed server -s3` on free loopback ports in a temporary
directory, with one bucket; each test gets its own prefix in it, so tests never see each
other's objects. `storage_env(settings)` gives the environment that points a worker
process at the storage the test's settings use.
"""

import subprocess
import uuid

import pytest
from django.core.files.storage import default_storage

from config.seaweed import (
    client,
    local_config,
    remove_grpc_sockets,
    wait_until_ready,
    weed_command,
)
from config.storage import is_s3, media_storage_entry
from tests.integration.support.processes import stop

BUCKET = "steadyshot-test"


class Seaweed:
    def __init__(self, config):
        self.config = config
        self.bucket = BUCKET

    def env(self, prefix: str = "") -> dict[str, str]:
        env = self.config.env(self.bucket)
        if prefix:
            env["STORAGE_URL"] += f"/{prefix}"
        return env

    def client(self):
        return client(self.config)

    def keys(self, prefix: str) -> list[str]:
        """Every object name under `prefix` in the bucket."""
        pages = self.client().get_paginator("list_objects_v2")
        return [
            entry["Key"]
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix)
            for entry in page.get("Contents", ())
        ]


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    config = local_config(tmp_path_factory.mktemp("seaweedfs"))
    cmd = weed_command(config)
    log = (config.directory / "weed.log").open("w")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(config, BUCKET, process)
        yield Seaweed(config)
    finally:
        # Its filer takes about 15 s to stop politely; the data is thrown away anyway.
        stop(process, timeout=3)
        log.close()
        remove_grpc_sockets(cmd)


@pytest.fixture(params=["filesystem", "s3"])
def media_storage(request, settings, tmp_path):
    """The test runs on both storages: "filesystem" (a private MEDIA_ROOT) and "s3" (a
    fresh prefix of the SeaweedFS bucket). Returns the storage files are written to."""
    settings.MEDIA_ROOT = tmp_path / "media"
    if request.param == "s3":
        return use_bucket(settings, request.getfixturevalue("seaweedfs"))
    return default_storage


def use_bucket(settings, seaweed: Seaweed):
    """Point the test's settings at a fresh prefix of the SeaweedFS bucket."""
    env = seaweed.env(f"t-{uuid.uuid4().hex[:12]}")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": media_storage_entry(env["STORAGE_URL"], env),
    }
    return default_storage


def storage_env(settings) -> dict[str, str]:
    """The variables that give a worker process the storage of the test's settings."""
    entry = settings.STORAGES["default"]
    if not is_s3(entry):
        return {"MEDIA_ROOT": str(settings.MEDIA_ROOT), "STORAGE_URL": ""}
    options = entry["OPTIONS"]
    url = f"s3://{options['bucket_name']}"
    if options["location"]:
        url += f"/{options['location']}"
    return {
        "STORAGE_URL": url,
        "AWS_S3_ENDPOINT_URL": options["endpoint_url"],
        "AWS_S3_REGION_NAME": options["region_name"],
        "AWS_S3_ADDRESSING_STYLE": options["addressing_style"],
        "AWS_ACCESS_KEY_ID": options["access_key"],
        "AWS_SECRET_ACCESS_KEY": options["secret_key"],
    }
