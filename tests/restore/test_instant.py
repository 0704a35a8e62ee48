"""--instant: a VM runs from the point at once on overlays backed by NBD; finish leaves it with no link to the vault."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from cutpoint.drivers.qmp.qmp import QmpSession
from cutpoint.lab import vm as lab
from cutpoint.lab.qemu_args import DiskSpec
from cutpoint.lab.verify import verify_dir
from cutpoint import pids
from cutpoint.restore.launch import stop
from tests.helpers import cutpoint

pytestmark = pytest.mark.vm


def _wait(path: Path, pattern: str, timeout: float = 60) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, path.read_text(errors="replace") if path.exists() else "")
        if m:
            return m
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in {path}: {path.read_text(errors='replace')[-2000:]}")


@pytest.mark.both_formats
def test_instant_restore_runs_at_once_and_finish_cuts_the_link(tmp_path: Path) -> None:
    src = lab.up("src", [DiskSpec(64 << 20), DiskSpec(16 << 20, fmt="raw")])
    cutpoint("vm", "add", "src", "--qmp", str(src.qmp), check=True)
    time.sleep(1)
    point = json.loads(cutpoint("backup", "src", "--json", check=True).out)["point"]
    lab.down("src")
    ref = tmp_path / "ref"
    cutpoint("restore", "src", point, "--to", str(ref), check=True)
    k = verify_dir(ref).k

    t0 = time.monotonic()
    r = cutpoint("restore", "src", point, "--instant", "fast", "--json")
    wall = time.monotonic() - t0
    assert r.code == 0, r.err
    res = json.loads(r.out)
    print(f"instant restore: time to running {res['time_to_running_s']} s (command {wall:.2f} s)")
    d = Path(res["dir"])
    assert _wait(d / "console.log", r"CUTPOINT-WORKLOAD-STARTED seq=(\d+)").group(1) == str(k + 1)

    st = json.loads(cutpoint("instant", "status", "fast", "--json", check=True).out)
    assert st["state"] in ("streaming", "streamed") and st["server_running"], st
    b = cutpoint("backup", "fast")
    assert b.code == 2 and "instant finish" in b.err, b.err

    fin = json.loads(cutpoint("instant", "finish", "fast", "--json", check=True).out)
    assert fin["state"] == "finished" and fin["server_stopped"]
    modes = [j["detail"].get("mode") for j in json.loads(cutpoint("jobs", "--json", check=True).out)
             if j["kind"] == "restore" and j["state"] == "succeeded"]
    assert modes[:2] == ["instant-finish", "instant"], modes                # both steps are jobs
    with QmpSession(res["qmp"]) as s:
        nodes = s.cmd("query-named-block-nodes", flat=True)
        assert s.cmd("query-status")["status"] == "running"
    assert [n for n in nodes if n["drv"] == "nbd"] == [] and not pids.alive(res["server_pid"])
    assert not Path(res["socket"]).exists()
    assert cutpoint("instant", "finish", "fast").code == 2
    _wait(d / "console.log", r"CUTPOINT-WORKLOAD seq=")
    json.loads(cutpoint("backup", "fast", "--json", check=True).out)       # an ordinary protected VM now

    stop(Path(res["qmp"]), res["pid"])
    verdict = verify_dir(d)
    assert verdict.ok and verdict.k > k, verdict.summary()
