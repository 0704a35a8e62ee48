"""Points of libvirt domains restored as a new domain (which boots and continues the write order) and onto the
shut-off original's own disks; ``vm add --libvirt`` verdicts and one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import libvirt
import pytest

from cutpoint.lab.verify import verify_dir
from tests.helpers import cutpoint, raw_bytes

from .conftest import remove_domain

pytestmark = pytest.mark.vm


def test_new_domain_boots_and_replace_puts_the_point_back(lab_domain, isolated: Path, tmp_path: Path) -> None:
    lab = lab_domain(["qcow2", "qcow2", "raw"], tag="orig")
    cutpoint("vm", "add", "orig", "--libvirt", lab.name, check=True)
    point = json.loads(cutpoint("backup", "orig", "--json", check=True).out)["point"]
    images = tmp_path / "images"
    cutpoint("restore", "orig", point, "--to", str(images), check=True)
    verdict = verify_dir(images)
    assert verdict.ok and verdict.ndisks == 3, verdict.violations[:5]

    new = f"{lab.name}-new"
    where = isolated / "restored"
    try:
        res = json.loads(cutpoint("restore", "orig", point, "--new-vm", new, "--to", str(where), "--start", "--json",
                                  check=True).out)
        assert res["mode"] == "new-domain" and res["started"] and res["registered"]
        assert [d["name"] for d in res["disks"]] == ["vda", "vdb", "vdc"]
        conn = libvirt.open(lab.uri)
        xml = conn.lookupByName(new).XMLDesc(0)
        assert str(where / "vda.qcow2") in xml and str(lab.dir) not in xml.replace(str(lab.dir / "vmlinux"), "") \
            .replace(str(lab.dir / "initrd.img"), "")
        console = where / "console.log"
        seq = int(_wait(console, r"CUTPOINT-WORKLOAD-STARTED seq=(\d+)").group(1))
        assert seq > verdict.k                  # the restored guest boots and continues after the cut's k writes
        vms = {v["name"]: v for v in json.loads(cutpoint("vm", "list", "--json", check=True).out)}
        assert vms[new]["kind"] == "libvirt" and vms[new]["address"] == new      # protected under its name
    finally:
        remove_domain(lab.uri, new)

    busy = cutpoint("restore", "orig", point, "--replace")
    assert busy.code == 2 and "is running" in busy.err and len(busy.err.strip().splitlines()) == 1
    lab.dom.destroyFlags(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
    res = json.loads(cutpoint("restore", "orig", point, "--replace", "--json", check=True).out)
    assert res["mode"] == "replace-domain" and res["checkpoints_dropped"] == [f"cutpoint-{point}"]
    for disk, path in zip(("vda", "vdb", "vdc"), lab.disks):
        assert raw_bytes(path) == (images / f"{disk}.raw").read_bytes(), disk
    assert lab.checkpoints() == []
    mark = len(lab.text())
    lab.dom.create()
    lab.wait_for("CUTPOINT-WORKLOAD-STARTED", after=mark)
    after = json.loads(cutpoint("backup", "orig", "--json", check=True).out)
    assert after["mode"] == "full" and "is missing" in after["full_reason"], after["full_reason"]


def _wait(path: Path, pattern: str, timeout: float = 90.0) -> re.Match[str]:
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, path.read_text(errors="replace") if path.exists() else "")
        if m:
            return m
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in {path}")


def test_vm_add_verdicts_and_errors(lab_domain, isolated: Path) -> None:
    extra = isolated / "extra"
    extra.mkdir()
    for name in ("ro.qcow2", "sh.img", "tr.qcow2", "un.qcow2"):
        (extra / name).write_bytes(b"")
    disks = (f"<disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>"
             f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{extra}/ro.qcow2'/>"
             f"<target dev='vdc' bus='virtio'/><readonly/></disk>"
             f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{extra}/sh.img'/>"
             f"<target dev='vdd' bus='virtio'/><shareable/></disk>"
             f"<disk type='block' device='lun'><driver name='qemu' type='raw'/><source dev='/dev/null'/>"
             f"<target dev='sdb' bus='scsi'/></disk>"
             f"<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='unsafe'/>"
             f"<source file='{extra}/un.qcow2'/><target dev='vde' bus='virtio'/></disk>")
    lab = lab_domain(["qcow2", "raw"], extra_xml=disks, start=False, tag="verdicts")
    res = json.loads(cutpoint("vm", "add", "v", "--libvirt", lab.name, "--json", check=True).out)
    got = {v["disk"]: v for v in res["verdicts"]}
    assert {k: v["state"] for k, v in got.items()} == {
        "vda": "backed up", "vdb": "backed up", "vde": "backed up", "sda": "skipped",
        "vdc": "refused", "vdd": "refused", "sdb": "refused"}           # as for QMP VMs (backup/validation.py)
    assert got["sda"]["reason"].startswith("CD-ROM") and "read-only" in got["vdc"]["reason"]
    assert "share-rw" in got["vdd"]["reason"] and "raw pass-through" in got["sdb"]["reason"]
    assert got["vde"]["cache"] == "unsafe" and any("cache=unsafe" in w for w in got["vde"]["warnings"])
    assert got["vdb"]["cache"] == "writeback"
    down = cutpoint("backup", "v")
    assert down.code == 4 and "is not running" in down.err and len(down.err.strip().splitlines()) == 1
    missing = cutpoint("vm", "add", "w", "--libvirt", "no-such-domain-here")
    assert missing.code == 3 and "does not exist" in missing.err and len(missing.err.strip().splitlines()) == 1
    assert cutpoint("vm", "add", "w", "--qmp", "/tmp/x.sock", "--libvirt", lab.name).code == 2
    wrong = cutpoint("vm", "add", "w", "--qmp", "/tmp/x.sock", "--connect", "qemu:///system")
    assert wrong.code == 2 and "--connect goes with --libvirt" in wrong.err
    bad_uri = cutpoint("vm", "add", "w", "--libvirt", lab.name, "--connect", "qemu+unix:///system?socket=/nonexist")
    assert bad_uri.code == 4 and "cannot connect to libvirt" in bad_uri.err
