"""Bad input to the restore paths: one clear line, a non-zero exit, and nothing left behind."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import blockdev_args, cutpoint, make_image


def _one_line_error(r, code: int, *needles: str) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cutpoint: error: "), r.err
    for n in needles:
        assert n in lines[0], lines[0]


def test_new_vm_and_instant_bad_input(bare_qemu, tmp_path: Path, vms_home: Path) -> None:
    a = make_image(tmp_path / "a.qcow2", "16M", writes=["write -P 0xab 0 1M"])
    vm = bare_qemu(blockdev_args(a, "da"))
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    cutpoint("vm", "add", "other", "--qmp", str(vm.qmp), check=True)
    point = json.loads(cutpoint("backup", "v", "--json", check=True).out)["point"]

    _one_line_error(cutpoint("restore", "v", "nosuch", "--new-vm", "n1"), 3, "no restore point 'nosuch'")
    _one_line_error(cutpoint("restore", "nobody", "latest", "--instant", "n1"), 3, "unknown VM 'nobody'")
    for how in ("--new-vm", "--instant"):
        _one_line_error(cutpoint("restore", "v", point, how, "other"), 2, "'other' is already registered")
        _one_line_error(cutpoint("restore", "v", point, how, "v"), 2, "already registered")
        _one_line_error(cutpoint("restore", "v", point, how, "bad name!"), 2, "VM name")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    _one_line_error(cutpoint("restore", "v", point, "--new-vm", "n2", "--to", str(busy)), 2, "not an empty directory")
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    _one_line_error(cutpoint("restore", "v", point, "--start"), 2, "--start goes with --new-vm")
    _one_line_error(cutpoint("restore", "v", point), 2, "--to DIR")
    _one_line_error(cutpoint("instant", "status", "v"), 2, "not being instant-restored")
    _one_line_error(cutpoint("instant", "finish", "nobody"), 3, "unknown VM")

    # --to puts the new VM where asked, and nothing goes to the default place
    man = tmp_path / "elsewhere"
    r = cutpoint("restore", "v", point, "--new-vm", "n3", "--start", "--to", str(man), "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["started"] and res["registered"]
    from cutpoint.restore.launch import stop
    stop(Path(res["qmp"]), res["pid"])
    assert {"da.qcow2", "start.sh", "vm.json"} <= {p.name for p in man.iterdir()}
    assert not vms_home.exists() or list(vms_home.iterdir()) == []
    assert {v["name"] for v in json.loads(cutpoint("vm", "list", "--json", check=True).out)} == {"v", "other", "n3"}


def test_failed_start_leaves_nothing(bare_qemu, tmp_path: Path, vms_home: Path, monkeypatch) -> None:
    a = make_image(tmp_path / "a.qcow2", "16M", writes=["write -P 0xab 0 1M"])
    vm = bare_qemu(blockdev_args(a, "da") + ["-device", "virtio-net-pci,id=n0"])
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    point = json.loads(cutpoint("backup", "v", "--json", check=True).out)["point"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\necho 'qemu-system-x86_64: -device virtio-net-pci: no such device' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CUTPOINT_QEMU_DIR", str(bin_dir))          # the trusted emulator directory
    _one_line_error(cutpoint("restore", "v", point, "--new-vm", "n4", "--start"), 1, "QEMU exited", "no such device")
    _one_line_error(cutpoint("restore", "v", point, "--instant", "n5"), 1, "QEMU exited")
    assert not (vms_home / "n4").exists() and not (vms_home / "n5").exists()
    assert {v["name"] for v in json.loads(cutpoint("vm", "list", "--json", check=True).out)} == {"v"}
