"""Restore drills on real lab guests (TCG): boot beside the original, signals, RTO, screendump, filesystem checks.

One module-wide set-up (a vault, three lab VMs, one point each) is shared by every test, so the boots are paid once:

* ``good``: agent guest, two ext4 disks, workload running: boots to its workload, agent answers, a command runs;
* ``broken``: its point's boot configuration has an init that does not exist (``rdinit=``): the kernel panics;
* ``fsbad``: no workload; disk0 MBR with a vfat partition 1 and an ext4 partition 2 whose root inode is damaged,
  disk1 clean ext4 on the whole disk. It stays running while it is drilled.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cutpoint.drivers.qmp.qmp import QmpSession
from cutpoint.lab import vm as lab
from cutpoint.lab.qemu_args import DiskSpec, kernel_cmdline
from cutpoint import pids
from cutpoint.vault.locks import in_use
from tests.helpers import cutpoint

pytestmark = pytest.mark.vm
MiB = 1 << 20


def _fsbad_disk(path: Path) -> None:
    """MBR: p1 vfat (16 MiB), p2 ext4 (rest) with the root directory's link count wrong (e2fsck -n finds it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["truncate", "-s", str(64 * MiB), str(path)], check=True)
    subprocess.run(["sfdisk", "-q", str(path)], input="label: dos\n2048,32768,c\n34816,,83\n", text=True,
                   check=True)
    with tempfile.TemporaryDirectory() as t:
        for start, sectors, mk in ((2048, 32768, ["mkfs.vfat", "-n", "DRILLFAT"]),
                                   (34816, 131072 - 34816, ["mkfs.ext4", "-q", "-F"])):
            part = Path(t, "p")
            subprocess.run(["truncate", "-s", str(sectors * 512), str(part)], check=True)
            subprocess.run(mk + [str(part)], check=True, capture_output=True)
            if mk[0] == "mkfs.ext4":
                subprocess.run(["debugfs", "-w", "-R", "sif <2> links_count 9", str(part)], check=True,
                               capture_output=True)
            subprocess.run(["dd", f"if={part}", f"of={path}", "bs=512", f"seek={start}", "conv=notrunc,sparse",
                            "status=none"], check=True)
            part.unlink()


def _vault_state(vault: Path) -> dict[str, tuple[int, str]]:
    """Every file of the vault but the catalog (where the verdict is kept) and the empty lock files (a drill pins
    its point while it reads it, as every restore does): mtime and content hash."""
    out = {}
    for p in sorted(vault.rglob("*")):
        rel = str(p.relative_to(vault))
        if p.is_file() and not rel.startswith(("catalog.sqlite", "locks/")):
            out[rel] = (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.points: dict[str, str] = {}
        self.fsbad: lab.LabVM | None = None
        self.vault_before: dict[str, tuple[int, str]] = {}
        self.verify_before = ""


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = Path(tempfile.mkdtemp(prefix="cpd-", dir="/tmp"))
    mp = pytest.MonkeyPatch()
    for k, v in (("CUTPOINT_VAULT", root / "vault"), ("CUTPOINT_STATE", root / "state"),
                 ("CUTPOINT_WORK", root / "work"), ("CUTPOINT_LAB", root / "lab"),
                 ("CUTPOINT_VMS", root / "vms"), ("CUTPOINT_RESTORE_ROOT", root / "restore")):
        mp.setenv(k, str(v))
    from cutpoint.vault.vault import Vault
    Vault.create(root / "vault")
    w = World(root)
    try:
        good = lab.up("good", [DiskSpec(64 * MiB), DiskSpec(32 * MiB, fmt="raw")], agent=True)
        bad_append = kernel_cmdline(seed=1, slots=256, ndisks=1, workload=False, rate=0) + " rdinit=/no/such/init"
        broken = lab.up("broken", [DiskSpec(32 * MiB, fmt="raw")], workload=False, wait=False,
                        extra_args=["-append", bad_append])
        _fsbad_disk(root / "lab" / "fsbad" / "disk0.raw")
        disk1 = root / "lab" / "fsbad" / "disk1.raw"
        subprocess.run(["truncate", "-s", str(32 * MiB), str(disk1)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(disk1)], check=True)
        w.fsbad = lab.up("fsbad", [DiskSpec(64 * MiB, fmt="raw"), DiskSpec(32 * MiB, fmt="raw")], workload=False,
                         wait=False)
        w.fsbad.wait_for("CUTPOINT-BOOT-DONE", timeout=60)
        broken.wait_for("Kernel panic", timeout=60, fail=())
        for vm, pattern in ((good, "CUTPOINT-WORKLOAD-STARTED"), (broken, "CUTPOINT-BOOT-DONE"),
                            (w.fsbad, "CUTPOINT-BOOT-DONE")):
            cutpoint("vm", "add", vm.name, "--qmp", str(vm.qmp), check=True)
            cutpoint("vm", "set", vm.name, "--drill-console", pattern, "--drill-timeout", "90", check=True)
        cutpoint("vm", "set", "good", "--drill-command", "/bin/sh -c 'test -d /mnt/vda'", check=True)
        for vm in (good, broken, w.fsbad):
            w.points[vm.name] = json.loads(cutpoint("backup", vm.name, "--json", check=True).out)["point"]
        lab.down("good")
        lab.down("broken")
        w.vault_before = _vault_state(root / "vault")
        w.verify_before = cutpoint("verify", "--read-data", "--json", check=True).out
        yield w
    finally:
        for name in ("good", "broken", "fsbad"):
            try:
                lab.down(name)
            except Exception:      # noqa: BLE001 - best effort; conftest kills what is left
                pass
        for pidfile in (root / "work").rglob("*.pid"):
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        mp.undo()
        subprocess.run(["fusermount3", "-uz", *[str(p) for p in (root / "work").rglob("view-*")]],
                       capture_output=True)
        import shutil
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This module's tests share the world's vault, lab and work directories (overrides conftest's)."""
    for k, sub in (("CUTPOINT_VAULT", "vault"), ("CUTPOINT_STATE", "state"), ("CUTPOINT_WORK", "work"),
                   ("CUTPOINT_LAB", "lab"), ("CUTPOINT_RESTORE_ROOT", "restore")):
        monkeypatch.setenv(k, str(world.root / sub))
    yield world.root


def _drill(*args: str) -> tuple[int, dict, str]:
    r = cutpoint("drill", *args, "--json", timeout=400)
    return r.code, json.loads(r.out) if r.out.strip() else {}, r.err


def _point_drill(vm: str, point: str) -> dict:
    pts = json.loads(cutpoint("points", vm, "--json", check=True).out)
    return next(p for p in pts if p["point"] == point)["drill"]


def test_booting_guest_passes_with_rto_and_screendump(world: World) -> None:
    code, res, err = _drill("good")
    assert code == 0, (res.get("reasons"), err)
    assert res["point"] == world.points["good"] and res["verdict"] == "passed" and res["reasons"] == []
    names = {s["name"]: s for s in res["signals"]}
    assert set(names) == {"qemu", "console", "agent", "command"}, names
    assert all(s["ok"] and s["at_s"] > 0 for s in names.values()), names
    assert res["rto_s"] == max(s["at_s"] for s in names.values()) and res["rto_s"] >= names["console"]["at_s"]
    assert "CUTPOINT-WORKLOAD-STARTED" in res["console_tail"]
    png = Path(res["screendump"]["png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and res["screendump"]["width"] > 0
    fs = {(f["disk"], f["partition"]): f for f in res["filesystems"]}
    assert set(fs) == {("disk0", 0), ("disk1", 0)} and all(f["verdict"] == "passed" and f["fstype"] == "ext4"
                                                           for f in fs.values()), fs
    assert _point_drill("good", world.points["good"]) == res                   # kept with the point
    table = cutpoint("points", "good", check=True).out
    assert "drill" in table.splitlines()[0] and f"passed {res['rto_s']:.1f}s" in table


def test_broken_init_fails_with_the_reason(world: World) -> None:
    code, res, err = _drill("broken", world.points["broken"][:12])
    assert code == 13, err
    assert res["verdict"] == "failed" and res["rto_s"] is None
    assert any("did not boot" in r and "Kernel panic" in r for r in res["reasons"]), res["reasons"]
    console = next(s for s in res["signals"] if s["name"] == "console")
    assert not console["ok"] and console["at_s"] is None
    assert "drill of point" in err and "failed" in err
    assert _point_drill("broken", world.points["broken"])["verdict"] == "failed"
    assert "FAILED" in cutpoint("points", "broken", check=True).out


def test_damaged_filesystem_fails_naming_disk_and_partition_beside_the_running_original(world: World) -> None:
    vm = world.fsbad
    assert vm is not None
    disks = [Path(d["path"]) for d in vm.disks]
    before = [_sha(p) for p in disks]
    code, res, err = _drill("fsbad")
    assert code == 13, err
    assert any(s["name"] == "console" and s["ok"] for s in res["signals"]), res["signals"]   # it booted
    fs = {(f["disk"], f["partition"]): f for f in res["filesystems"]}
    assert fs[("disk0", 2)]["verdict"] == "failed" and fs[("disk0", 2)]["fstype"] == "ext4", fs
    assert fs[("disk0", 1)]["verdict"] == "passed" and fs[("disk0", 1)]["fstype"] == "vfat", fs
    assert res["reasons"] and all("disk disk0 partition 2" in r for r in res["reasons"]), res["reasons"]
    assert res["drill_vm"] != "fsbad" and res["drill_vm"].startswith("drill-fsbad-")
    # the original kept running, untouched
    assert pids.alive(vm.pid)
    with QmpSession(vm.qmp) as s:
        assert s.cmd("query-status")["status"] == "running"
    assert [_sha(p) for p in disks] == before


def test_kill_9_leaves_nothing_running_and_cleanup_removes_it(world: World) -> None:
    work = world.root / "work" / ".drill"
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "cutpoint.cli.main", "drill", "fsbad", "--timeout", "120"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    held: list[int] = []
    while time.monotonic() < deadline and not held:
        for pf in work.glob("*/qemu.pid"):
            try:
                held = [int(pf.read_text())] + [int(x.read_text()) for x in pf.parent.glob("nbd.pid")]
            except (OSError, ValueError):
                pass
        time.sleep(0.1)
    assert held, "the drill's QEMU never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert all(pids.alive(p) for p in held)                     # what kill -9 leaves ...
    r = cutpoint("vm", "cleanup", "fsbad", "--json", check=True)   # ... the next command removes
    assert any("stopped qemu" in x for x in json.loads(r.out)["removed"]), r.out
    assert not any(pids.alive(p) for p in held)
    assert [p.name for p in work.iterdir() if p.name != "lock"] == []
    assert world.fsbad is not None and pids.alive(world.fsbad.pid)


def test_drills_never_change_the_vault(world: World) -> None:
    """Last in the module: every drill above has run against this vault."""
    assert _point_drill("good", world.points["good"]) is not None                # the drills did run
    assert _vault_state(world.root / "vault") == world.vault_before
    locks = list((world.root / "vault" / "locks").glob("pin-*.lock"))
    assert locks and not any(in_use(p) for p in locks)          # no pin left held
    after = json.loads(cutpoint("verify", "--read-data", "--json", check=True).out)
    assert after["ok"] and after["chunks_checked"] > 0 and after == json.loads(world.verify_before)
