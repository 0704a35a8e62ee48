"""The guest's I/O pause of the cut (``pause_ms``) for 1, 2, 4 and 8 disks under the ordered-write load."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import harness
from harness import MiB, median


def run_case(work: Path, cuts: int) -> dict[str, object]:
    from cutpoint.lab import vm as labvm

    out: dict[str, object] = {}
    env = {"CUTPOINT_VAULT": str(work / "vault-pause"), "CUTPOINT_WORK": str(work / "cw")}
    os.environ["CUTPOINT_LAB"] = str(work / "lab")
    for n in (1, 2, 4, 8):
        shutil.rmtree(env["CUTPOINT_VAULT"], ignore_errors=True)
        name = f"pause{n}"
        vm = labvm.up(name, [labvm.DiskSpec(32 * MiB) for _ in range(n)])
        try:
            harness.cutpoint("vault", "init", "--no-encrypt", env=env)
            harness.cutpoint("vm", "add", name, "--qmp", str(vm.qmp), env=env)
            time.sleep(2.5)                              # a few progress lines without any cut: the baseline
            before = _latencies(vm.console)
            pauses = []
            for _ in range(cuts):
                time.sleep(0.2)
                res = json.loads(harness.cutpoint("backup", name, "--json", env=env).out)
                pauses.append(res["pause_ms"])
            time.sleep(1.2)                              # the progress line covering the last cut
            during = _latencies(vm.console)[len(before):]
            out[str(n)] = {"median_ms": median(pauses), "max_ms": max(pauses), "runs": pauses, "accel": vm.accel,
                           "guest_max_write_ms_baseline": max(before, default=None),
                           "guest_max_write_ms_during_cuts": max(during, default=None)}
        finally:
            labvm.remove(name)
    out["app_2_disks"] = _app(work, env, cuts)
    return out


def _latencies(console: Path) -> list[float]:
    """The workload's per-second largest single-write latency (ms), from its progress lines on the console."""
    text = console.read_text(errors="replace") if console.exists() else ""
    return [float(m) for m in re.findall(r"CUTPOINT-WORKLOAD seq=\d+ rate=\S+ max_ms=([\d.]+)", text)]


def _app(work: Path, env: dict[str, str], cuts: int) -> dict[str, object]:
    """App-consistent cuts of a 2-disk guest with qemu-ga and ext4 mounts: frozen_ms beside pause_ms."""
    from cutpoint.lab import vm as labvm

    shutil.rmtree(env["CUTPOINT_VAULT"], ignore_errors=True)
    vm = labvm.up("pauseapp", [labvm.DiskSpec(64 * MiB) for _ in range(2)], agent=True)
    try:
        harness.cutpoint("vault", "init", "--no-encrypt", env=env)     # no command creates a vault implicitly
        harness.cutpoint("vm", "add", "pauseapp", "--qmp", str(vm.qmp), env=env)
        rows = []
        for _ in range(cuts):
            time.sleep(0.2)
            res = json.loads(harness.cutpoint("backup", "pauseapp", "--consistency", "app", "--json", env=env).out)
            rows.append(res)
        got = [r["consistency"] for r in rows]
        return {"consistency": got, "pause_ms": median([r["pause_ms"] for r in rows]),
                "frozen_ms": median([r["frozen_ms"] for r in rows if r["frozen_ms"] is not None]),
                "fallback_reasons": [r["fallback_reason"] for r in rows if r["fallback_reason"]]}
    finally:
        labvm.remove("pauseapp")
