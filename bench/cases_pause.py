"""The guest's I/O pause of the cut (``pause_ms``) for 1, 2, 4 and 8 disks under the ordered-write load."""

from __future__ import annotations

import json
import os
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
            harness.cutpoint("vm", "add", name, "--qmp", str(vm.qmp), env=env)
            pauses = []
            for _ in range(cuts):
                time.sleep(0.2)
                res = json.loads(harness.cutpoint("backup", name, "--json", env=env).out)
                pauses.append(res["pause_ms"])
            out[str(n)] = {"median_ms": median(pauses), "max_ms": max(pauses), "runs": pauses,
                           "accel": vm.accel}
        finally:
            labvm.remove(name)
    return out
