"""--new-vm: a lab VM's point becomes a second VM beside the running original; its workload resumes from the cut."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from cutpoint.lab import vm as lab
from cutpoint.lab.qemu_args import DiskSpec
from cutpoint.lab.verify import verify_dir
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
def test_new_vm_boots_and_its_workload_continues(tmp_path: Path, vms_home: Path) -> None:
    src = lab.up("src", [DiskSpec(32 << 20), DiskSpec(16 << 20, fmt="raw")])
    cutpoint("vm", "add", "src", "--qmp", str(src.qmp), check=True)
    time.sleep(1)
    point = json.loads(cutpoint("backup", "src", "--json", check=True).out)["point"]
    ref = tmp_path / "ref"
    cutpoint("restore", "src", point, "--to", str(ref), check=True)
    k = verify_dir(ref).k
    assert k > 0

    r = cutpoint("restore", "src", point, "--new-vm", "copy", "--start", "--json")    # the original still runs
    assert r.code == 0, r.err
    res = json.loads(r.out)
    d = Path(res["dir"])
    assert d == vms_home / "copy" and res["started"] and res["registered"] and res["config_source"] == "cmdline"
    argv = json.loads((d / "vm.json").read_text())["argv"]
    assert str(src.dir) not in " ".join(a for a in argv if not a.startswith(("/tmp/cp-cache", "console=")))
    assert (d / "start.sh").stat().st_mode & 0o111
    started = _wait(d / "console.log", r"CUTPOINT-WORKLOAD-STARTED seq=(\d+)")
    assert int(started.group(1)) == k + 1          # resumed exactly after the cut's last write
    _wait(d / "console.log", r"CUTPOINT-WORKLOAD seq=(\d*[1-9]\d*)")
    assert src.running and lab.get("src").last_seq() is not None

    vms = {v["name"]: v for v in json.loads(cutpoint("vm", "list", "--json", check=True).out)}
    assert vms["copy"]["address"] == res["qmp"]
    copy_point = json.loads(cutpoint("backup", "copy", "--json", check=True).out)
    assert copy_point["vm"] == "copy"

    stop(Path(res["qmp"]), res["pid"])
    verdict = verify_dir(d)
    assert verdict.ok and verdict.k > k, verdict.summary()
    lab.down("src")


def test_new_vm_leaves_out_excluded_disks(bare_qemu, tmp_path: Path, vms_home: Path) -> None:
    """An excluded disk has no image in the point: the new VM starts without it and never opens the original's."""
    from cutpoint.drivers.qmp.disks import discover
    from cutpoint.drivers.qmp.qmp import QmpSession
    from tests.helpers import blockdev_args, drive_args, make_image

    root = make_image(tmp_path / "root.qcow2", "16M", writes=["write -P 0x5a 0 1M"])
    scratch = make_image(tmp_path / "scratch.raw", "8M", "raw")
    vm = bare_qemu(blockdev_args(root, "root") + drive_args(scratch, "scratch", "raw"))
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    cutpoint("vm", "set", "v", "--exclude-disk", "scratch", check=True)
    point = json.loads(cutpoint("backup", "v", "--json", check=True).out)["point"]

    r = cutpoint("restore", "v", point, "--new-vm", "copy", "--start", "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    argv = " ".join(json.loads((Path(res["dir"]) / "vm.json").read_text())["argv"])
    assert str(scratch) not in argv and "scratch" not in argv, argv
    assert any("excluded" in w and "scratch" in w for w in res.get("warnings", [])), res
    with QmpSession(Path(res["qmp"])) as s:
        assert [d.name for d in discover(s).disks] == ["root"]
    stop(Path(res["qmp"]), res["pid"])
