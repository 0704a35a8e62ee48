"""Instant restore: time from the command to a running VM, for a 1 GiB and an 8 GiB disk (issue 9).

For each size: a lab VM whose workload writes across the whole disk is backed up, stopped, and restored with
``restore --instant``. Reported, never asserted: ``time_to_running_s`` (QEMU up and its monitor answering, as the
command reports it), ``time_to_workload_s`` (the guest has read its disks and resumed the workload: the VM is
really usable), and ``finish_s`` (streaming every byte local and dropping the NBD link). Writes
bench/results/instant.json.

    python bench/instant_restore.py [--sizes 1,8]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GiB = 1 << 30
RESULTS = Path(__file__).resolve().parent / "results"


def cli(*args: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "cutpoint.cli.main", *args, "--json"], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"cutpoint {' '.join(args)} failed: {p.stderr.strip()}")
    return json.loads(p.stdout) if p.stdout.strip() else {}


def one(size_gib: int) -> dict:
    from cutpoint.lab import vm as lab
    from cutpoint.lab.qemu_args import DiskSpec
    from cutpoint.restore.launch import stop

    name = f"bench{size_gib}g"
    src = lab.up(name, [DiskSpec(size_gib * GiB)])
    time.sleep(2)
    if not (Path(os.environ["CUTPOINT_VAULT"]) / "config.json").exists():
        cli("vault", "init", "--no-encrypt")
    cli("vm", "add", name, "--qmp", str(src.qmp))
    point = cli("backup", name)
    lab.down(name)
    t0 = time.monotonic()
    res = cli("restore", name, point["point"], "--instant", f"{name}-i")
    console = Path(res["dir"]) / "console.log"
    while not re.search(r"CUTPOINT-WORKLOAD-STARTED", console.read_text(errors="replace") if console.exists()
                        else ""):
        if time.monotonic() - t0 > 120:
            raise SystemExit(f"{name}: workload did not resume within 120 s")
        time.sleep(0.05)
    workload_s = time.monotonic() - t0
    t1 = time.monotonic()
    cli("instant", "finish", f"{name}-i")
    finish_s = time.monotonic() - t1
    stop(Path(res["qmp"]), res["pid"])
    return {"disk_gib": size_gib, "stored_bytes": point["disks"][0]["stored_bytes"],
            "time_to_running_s": res["time_to_running_s"], "time_to_workload_s": round(workload_s, 2),
            "finish_s": round(finish_s, 2), "bytes_streamed": size_gib * GiB}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,8", help="disk sizes in GiB, comma separated")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="cp-bench-instant-", dir="/tmp"))
    for k, sub in (("CUTPOINT_VAULT", "vault"), ("CUTPOINT_WORK", "work"), ("CUTPOINT_LAB", "lab"),
                   ("CUTPOINT_VMS", "vms")):
        os.environ.setdefault(k, str(base / sub))
    rows = [one(int(s)) for s in args.sizes.split(",")]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "instant.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"{'disk':>6} {'to running':>11} {'to workload':>12} {'finish':>8}")
    for r in rows:
        print(f"{r['disk_gib']:>4}Gi {r['time_to_running_s']:>10.2f}s {r['time_to_workload_s']:>11.2f}s "
              f"{r['finish_s']:>7.1f}s")


if __name__ == "__main__":
    main()
