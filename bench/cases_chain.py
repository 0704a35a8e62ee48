"""What incremental forever and deduplication buy: a second full of unchanged disks, a clone VM sharing a base image,
incrementals after 1% and 10% of the data changed, and restore throughput against a plain copy."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import harness
from harness import MiB, median

GRAIN = 64 << 10


def _write_fraction(qmp: Path, disks: dict[str, int], fraction: float, seed: int, run: int = GRAIN) -> int:
    """Overwrite ``fraction`` of every disk in writes of ``run`` bytes at random aligned offsets, through QEMU's
    block layer (as a guest would: dirty bitmaps see it). ``run`` = 64 KiB scatters the change over the disk (the
    worst case for chunked storage); 1 MiB runs are closer to how filesystems and databases write. Returns bytes
    written."""
    from cutpoint.drivers.qmp.qmp import QmpSession

    rnd = random.Random(seed)
    total = 0
    with QmpSession(qmp) as s:
        for node, size in disks.items():
            n = max(1, int(size * fraction) // run)
            for off in rnd.sample(range(size // run), n):
                pattern = rnd.randrange(1, 255)
                s.cmd("human-monitor-command",
                      command_line=f'qemu-io -d /machine/peripheral/{node}-dev/virtio-backend '
                                   f'"write -P {pattern} {off * run} {run}"')
                total += run
    return total


def run_case(ds: dict[str, Path], work: Path, runs: int) -> dict[str, object]:
    out: dict[str, object] = {}
    vault = work / "vault-chain"
    shutil.rmtree(vault, ignore_errors=True)
    env = {"CUTPOINT_VAULT": str(vault), "CUTPOINT_WORK": str(work / "cw")}
    # private copies: this case writes to the disks
    disks = {}
    for name, src in ds.items():
        dst = work / f"chain-{name}.raw"
        subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
        disks[name] = dst
    os.sync()       # the copies written back now: the full's syncfs would flush them too, and look slower than it is
    sizes = {n: p.stat().st_size for n, p in disks.items()}
    logical = sum(sizes.values())
    with harness.bare_qemu(disks) as vm:
        harness.cutpoint("vault", "init", "--no-encrypt", env=env)
        harness.cutpoint("vm", "add", "vm1", "--qmp", str(vm.qmp), env=env)
        full = harness.cutpoint("backup", "vm1", "--json", env=env)
        fres = json.loads(full.out)
        out["full"] = {"seconds": full.seconds, "duration_s": fres["duration_s"], "rss_mib": full.rss_mib,
                       "read_bytes": sum(d["read_bytes"] for d in fres["disks"]),
                       "stored_bytes": sum(d["stored_bytes"] for d in fres["disks"])}
        again = harness.cutpoint("backup", "vm1", "--full", "--json", env=env)
        ares = json.loads(again.out)
        out["second_full_unchanged"] = {"seconds": again.seconds,
                                        "stored_bytes": sum(d["stored_bytes"] for d in ares["disks"]),
                                        "read_bytes": sum(d["read_bytes"] for d in ares["disks"])}
        for label, pct, run in (("1pct_clustered", 1, MiB), ("1pct", 1, GRAIN), ("10pct", 10, GRAIN)):
            secs, durs, reads, stored = [], [], [], []
            for r in range(runs):
                written = _write_fraction(vm.qmp, sizes, pct / 100, seed=pct * 100 + r, run=run)
                inc = harness.cutpoint("backup", "vm1", "--json", env=env)
                ires = json.loads(inc.out)
                assert ires["mode"] == "incremental", ires["full_reason"]
                secs.append(inc.seconds)
                durs.append(ires["duration_s"])
                reads.append(sum(d["read_bytes"] for d in ires["disks"]))
                stored.append(sum(d["stored_bytes"] for d in ires["disks"]))
            out[f"incremental_{label}"] = {
                "changed_bytes": written, "write_size": run, "seconds": median(secs), "duration_s": median(durs),
                "read_bytes": median(reads), "stored_bytes": median(stored),
                "time_vs_full": median(secs) / full.seconds, "duration_vs_full": median(durs) / fres["duration_s"],
                "read_vs_full": median(reads) / out["full"]["read_bytes"]}      # type: ignore[index]
        # restore throughput of the newest point vs a plain copy of the same data
        rsecs, csecs = [], []
        for r in range(runs):
            target = work / f"restore-{r}"
            shutil.rmtree(target, ignore_errors=True)
            t = harness.cutpoint("restore", "vm1", "latest", "--to", str(target), "--json", env=env)
            rsecs.append(t.seconds)
            t0 = time.perf_counter()
            for p in disks.values():
                harness.convert_durably(p, work / "copy.raw")
                (work / "copy.raw").unlink()
            csecs.append(time.perf_counter() - t0)
            shutil.rmtree(target, ignore_errors=True)
        out["restore"] = {"cutpoint_mib_s": logical / MiB / median(rsecs), "qemu_img_convert_mib_s":
                          logical / MiB / median(csecs), "ratio": median(csecs) / median(rsecs)}
    # a clone VM: a qcow2 overlay on the same base with 16 MiB of its own changes, in the same vault
    clone = work / "clone-sys.qcow2"
    clone.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(disks["sys"]), str(clone)],
                   check=True)
    with harness.bare_qemu({"sys": clone}) as vm2:
        _write_fraction(vm2.qmp, {"sys": sizes["sys"]}, 16 * MiB / sizes["sys"], seed=7)
        harness.cutpoint("vm", "add", "clone", "--qmp", str(vm2.qmp), env=env)
        c = json.loads(harness.cutpoint("backup", "clone", "--json", env=env).out)
        out["clone_vm"] = {"logical_bytes": sizes["sys"], "changed_bytes": 16 * MiB,
                           "stored_bytes": sum(d["stored_bytes"] for d in c["disks"])}
    for p in disks.values():
        p.unlink()
    clone.unlink()
    return out
