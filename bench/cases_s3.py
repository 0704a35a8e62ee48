"""Vaults on S3 (issue 16's targets), against one local SeaweedFS, side by side in one run:

- a full backup into an S3 vault (whole process) against bare parallel PUTs of the same stored bytes (16 MiB
  objects, 8 threads, boto3): what cutpoint adds over the store's own ingest rate;
- the same backup against restic's S3 backend on the same disk and server;
- a restore from the S3 vault (whole process, durable) against bare parallel GETs of the same objects.

The server runs on the same 2 cores, so each step also records the CPU seconds it cost: cutpoint's process, the
server and QEMU. Their sum over the cores is the shortest wall time the step could take here, and gives the best
ratio this machine allows (``*_bound``), whatever cutpoint did.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import harness
from harness import MiB, median, proc_cpu

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))     # tests.vault.s3server: the tests' server

PASS = "bench-passphrase"


def _client(server):  # type: ignore[no-untyped-def]
    import boto3
    import botocore.config
    return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
                        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                                      max_pool_connections=16,
                                                      # as cutpoint's backend: no CRC32 pass over each body
                                                      request_checksum_calculation="when_required",
                                                      response_checksum_validation="when_required"))


def _stored(client, bucket: str, prefix: str) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
    return out


def _bare_put(client, bucket: str, prefix: str, nbytes: int) -> float:  # type: ignore[no-untyped-def]
    """Seconds to PUT ``nbytes`` as 16 MiB objects with 8 threads (one reused random buffer)."""
    data = os.urandom(16 * MiB)
    sizes = [16 * MiB] * (nbytes // (16 * MiB)) + ([nbytes % (16 * MiB)] if nbytes % (16 * MiB) else [])
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda k: client.put_object(Bucket=bucket, Key=f"{prefix}/{k}", Body=data[:sizes[k]]),
                    range(len(sizes))))
    return time.perf_counter() - t0


def _bare_get(client, bucket: str, keys: list[str]) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda k: client.get_object(Bucket=bucket, Key=k)["Body"].read(), keys))
    return time.perf_counter() - t0


def run_case(ds: dict[str, Path], work: Path, runs: int) -> dict[str, object]:
    from tests.vault.s3server import weed_mini

    disk = ds["sys"]
    logical = disk.stat().st_size
    res: dict[str, list[float]] = {k: [] for k in ("cutpoint", "bare_put", "restic", "restore", "bare_get")}
    cpu: dict[str, list[float]] = {k: [] for k in ("cutpoint", "cutpoint_server", "cutpoint_qemu", "bare_put_server",
                                                   "restore", "restore_server", "bare_get_server")}
    cores = os.cpu_count() or 1
    stored_mib: list[float] = []
    with weed_mini(volume_mb=None) as server:        # the server's own volume size, as a deployment has it
        client = _client(server)
        env = {"CUTPOINT_S3_ENDPOINT": server.endpoint, "AWS_ACCESS_KEY_ID": server.access_key,
               "AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_DEFAULT_REGION": "us-east-1",
               "CUTPOINT_PASSPHRASE": PASS, "RESTIC_PASSWORD": PASS, "CUTPOINT_STATE": str(work / "s3-state"),
               "CUTPOINT_WORK": str(work / "cw")}
        with harness.bare_qemu({"sys": disk}) as vm:
            for i in range(runs):
                bucket = f"bench{i}"
                client.create_bucket(Bucket=bucket)
                url = f"s3://{bucket}/cp"
                harness.cutpoint("vault", "init", url, env=env)
                harness.cutpoint("vm", "add", "s3b", "--qmp", str(vm.qmp), "--vault", url, env=env)
                s0, q0 = proc_cpu(server.pid), proc_cpu(vm.proc.pid)
                t = harness.cutpoint("backup", "s3b", "--json", "--vault", url, env=env)
                res["cutpoint"].append(t.seconds)
                cpu["cutpoint"].append(t.cpu)
                cpu["cutpoint_server"].append(proc_cpu(server.pid) - s0)
                cpu["cutpoint_qemu"].append(proc_cpu(vm.proc.pid) - q0)
                packs = _stored(client, bucket, "cp/data/")
                nbytes = sum(s for _, s in packs)
                stored_mib.append(nbytes / MiB)
                s0 = proc_cpu(server.pid)
                res["bare_put"].append(_bare_put(client, bucket, "bare", nbytes))
                cpu["bare_put_server"].append(proc_cpu(server.pid) - s0)
                out = work / f"s3-restore-{i}"
                s0 = proc_cpu(server.pid)
                t = harness.cutpoint("restore", "s3b", "latest", "--to", str(out), "--vault", url, env=env)
                res["restore"].append(t.seconds)
                cpu["restore"].append(t.cpu)
                cpu["restore_server"].append(proc_cpu(server.pid) - s0)
                shutil.rmtree(out, ignore_errors=True)
                s0 = proc_cpu(server.pid)
                res["bare_get"].append(_bare_get(client, bucket, [k for k, _ in packs]))
                cpu["bare_get_server"].append(proc_cpu(server.pid) - s0)
                repo = f"s3:{server.endpoint}/{bucket}/restic"
                if shutil.which("restic"):
                    harness.run(["restic", "-r", repo, "init"], env)
                    res["restic"].append(harness.run(["restic", "-r", repo, "backup", str(disk)],
                                                     env).seconds)
    med = {k: median(v) for k, v in res.items()}
    c = {k: median(v) for k, v in cpu.items()}
    floor_backup = (c["cutpoint"] + c["cutpoint_server"] + c["cutpoint_qemu"]) / cores
    floor_restore = (c["restore"] + c["restore_server"]) / cores
    return {
        "logical_mib": logical / MiB, "stored_mib": median(stored_mib), "seconds": med, "runs": res,
        "cpu_seconds": c, "cpu_runs": cpu, "cores": cores,
        # the best ratios the CPU the steps cost allows on these cores (the server's share included)
        "backup_vs_bare_put_bound": med["bare_put"] / floor_backup,
        "restore_vs_bare_get_bound": med["bare_get"] / floor_restore,
        "backup_vs_bare_put": med["bare_put"] / med["cutpoint"],
        "backup_vs_restic": med["restic"] / med["cutpoint"] if res["restic"] else None,
        "restore_vs_bare_get": med["bare_get"] / med["restore"],
    }
