"""``cutpoint serve`` for real: a subprocess, a paused QEMU, a test-only schedule every 2 s.

It makes points, prunes them by the policy, gc frees what only pruned points used, and the API returns exactly the
catalog's points. Then a second run is stopped with SIGTERM in the middle of a backup: it exits 0, the job is
``interrupted`` (not ``running``), no partial point or manifest exists, QEMU holds nothing of the backup, and the next
backup is still incremental from the last point.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cutpoint.paths import work_home
from tests.helpers import assert_clean, blockdev_args, cutpoint, guest_write, make_image


class Served:
    def __init__(self, tmp: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.log = tmp / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cutpoint.cli.main", "serve", "--port", "0", "--tick", "0.2", "--gc-grace", "0",
             "--backoff", "1"], stdout=subprocess.DEVNULL, stderr=open(self.log, "w"),
            env={**os.environ, **(env or {})})
        self.token = cutpoint("serve", "--show-token", check=True).out.strip()
        deadline = time.monotonic() + 30
        while not (m := re.search(r"API on (http://\S+)", self.log.read_text())):
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.05)
        self.url = m.group(1)

    def get(self, path: str, token: str | None = "") -> Any:
        req = urllib.request.Request(self.url + path)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token or self.token}")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def until(self, what: str, cond, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            got = cond()
            if got:
                return got
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; log:\n{self.log.read_text()}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def served(tmp_path: Path):
    started: list[Served] = []

    def start(name: str, env: dict[str, str] | None = None) -> Served:
        s = Served(tmp_path, name, env)
        started.append(s)
        return s
    yield start
    for s in started:
        s.kill()


def _manifests(vm: str) -> set[str]:
    d = Path(os.environ["CUTPOINT_VAULT"]) / "points" / vm
    return {p.name.split(".")[0] for p in d.iterdir() if not p.name.startswith(".")} if d.exists() else set()


def test_serve_schedules_prunes_serves_and_stops_cleanly(bare_qemu, served, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUTPOINT_TEST_SCHEDULES", "1")
    sys_img = make_image(tmp_path / "sys.qcow2", "64M", writes=["write -P 0x11 0 4M", "write -P 0x12 4M 4M",
                                                              "write -P 0x22 40M 4M"])
    data_img = make_image(tmp_path / "data.qcow2", "32M", writes=["write -P 0x33 4M 8M"])
    vm = bare_qemu(blockdev_args(sys_img, "sys") + blockdev_args(data_img, "data"))
    cutpoint("vm", "add", "web", "--qmp", str(vm.qmp), check=True)
    p0 = json.loads(cutpoint("backup", "web", "--json", check=True).out)["point"]
    guest_write(vm.qmp, "sys-dev", "write -P 0x44 0 4M")      # p0's first chunk is now p0's alone
    cutpoint("policy", "create", "fast", "--every-seconds", "2", "--keep-last", "2", check=True)
    cutpoint("vm", "set", "web", "--policy", "fast", check=True)

    srv = served("first")
    with pytest.raises(urllib.error.HTTPError) as e:
        srv.get("/vms", token=None)
    assert e.value.code == 401 and "reason" in json.loads(e.value.read())
    assert srv.get("/health", token=None)["scheduler"] is True

    def pruned_and_collected() -> Any:
        jobs = srv.get("/jobs?limit=100")
        prunes = [j for j in jobs if j["kind"] == "prune" and p0 in j["detail"].get("removed", [])]
        gcs = [j for j in jobs if j["kind"] == "gc" and j["state"] == "succeeded"]
        return (prunes, gcs) if prunes and gcs else None
    prunes, gcs = srv.until("a prune of p0 and a gc", pruned_and_collected)
    # the chunk only p0 had (4 MiB of 0x11: one chunk, at 4 MiB or at 64 KiB); in format v4 the index leaf of sys
    # that p0 wrote stays, as the base the later points' delta leaves are read over (format.md §18.5)
    assert gcs[0]["detail"]["removed_chunks"] == 1 and gcs[0]["detail"]["packs_seen"] > 0, gcs
    backups = [j for j in srv.get("/jobs?kind=backup&limit=100") if j["state"] == "succeeded"]
    assert {j["trigger"] for j in backups} <= {"schedule", "manual"} and len(backups) >= 3
    pts = srv.until("two points", lambda: (p := srv.get("/vms/web/points")) and len(p) == 2 and p)
    assert p0 not in {p["id"] for p in pts}
    assert set(srv.get("/vms/web")) >= {"policy", "next_run", "last_backup"}
    assert srv.stop() == 0
    # the API said what the catalog says, and the catalog and manifests agree
    final = [p["point"] for p in json.loads(cutpoint("points", "web", "--json", check=True).out)]
    assert len(final) == 2 and _manifests("web") == set(final)
    jobs = json.loads(cutpoint("jobs", "--json", "--limit", "500", check=True).out)
    assert not [j for j in jobs if j["state"] == "running"]
    assert "stopping" in srv.log.read_text() or "SIGTERM" in srv.log.read_text()

    # second run: every progress step takes 0.3 s, so SIGTERM lands in the middle of a backup
    before = final
    srv = served("second", {"CUTPOINT_TEST_JOB_DELAY": "0.3"})
    running = srv.until("a backup reading", lambda: [j for j in srv.get("/jobs?state=running&kind=backup")
                                                     if j["bytes"] > 0])
    assert srv.stop() == 0
    job = json.loads(cutpoint("jobs", str(running[0]["id"]), "--json", check=True).out)
    assert job["state"] == "interrupted" and "shutting down" in job["error"] and job["ended"]
    jobs = json.loads(cutpoint("jobs", "--json", "--limit", "500", check=True).out)
    assert not [j for j in jobs if j["state"] == "running"]
    after = [p["point"] for p in json.loads(cutpoint("points", "web", "--json", check=True).out)]
    assert after == before and _manifests("web") == set(before)          # no partial point
    last = before[-1]
    assert_clean(vm.qmp, work_home(), {"sys": ["cutpoint-" + last], "data": ["cutpoint-" + last]})
    nxt = json.loads(cutpoint("backup", "web", "--json", check=True).out)
    assert nxt["mode"] == "incremental" and nxt["parent"] == last
    ver = cutpoint("verify", "--read-data", "--json")               # the vault is sound after the interruption
    assert ver.code == 0, ver.err
    assert all(p["state"] == "ok" for p in json.loads(ver.out)["points"])
