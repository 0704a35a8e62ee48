"""The captured configuration and its rewrite for a second VM: every clash removed, untouched options kept."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cutpoint.errors import UsageError
from cutpoint.drivers.qmp.qmp import QmpSession
from cutpoint.restore.cmdline import DiskTarget, rewrite
from cutpoint.drivers.qmp.config import capture
from cutpoint.restore.config import synthesize_argv
from cutpoint.restore.qemuopts import parse_kv, render_kv
from tests.helpers import blockdev_args, drive_args, listening, make_image


def test_keyval_round_trip() -> None:
    for s in ("virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56", "file=/a,,b/c.img,format=raw,if=none,id=d0",
              "socket,id=c0,path=/run/x.sock,server=on,wait=off", "guest=web,debug-threads=on"):
        assert render_kv(parse_kv(s)) == s


def test_rewrite_removes_every_clash(tmp_path: Path) -> None:
    old = "/srv/web"
    argv = ["qemu-system-x86_64", "-name", "guest=web,debug-threads=on", "-uuid", "6c3a0b2e-0000-4000-8000-000000000001",
            "-machine", "q35", "-m", "1024", "-daemonize", "-pidfile", f"{old}/web.pid",
            "-qmp", f"unix:{old}/qmp.sock,server=on,wait=off",
            "-chardev", f"socket,id=mon1,path={old}/hmp.sock,server=on,wait=off", "-mon", "chardev=mon1",
            "-serial", f"file:{old}/console.log", "-vnc", ":3", "-gdb", "tcp::1234",
            "-blockdev", f"driver=file,filename={old}/root.qcow2,node-name=root-file",
            "-blockdev", "driver=qcow2,file=root-file,node-name=root,backing=base",
            "-device", "virtio-blk-pci,drive=root,id=root-dev",
            "-blockdev", json.dumps({"driver": "raw", "node-name": "data", "read-only": False,
                                     "file": {"driver": "file", "filename": f"{old}/data.raw"}}),
            "-device", "virtio-blk-pci,drive=data",
            "-drive", f"file={old}/legacy.img,format=raw,if=none,id=drive-leg,cache=none",
            "-device", "ide-hd,drive=drive-leg",
            "-netdev", "user,id=n0,hostfwd=tcp::2222-:22", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:aa:bb:cc",
            "-nic", "user,model=e1000", "-incoming", "defer"]
    new = tmp_path / "copy"
    disks = [DiskTarget("root", "root", "", f"{old}/root.qcow2", new / "root.qcow2", "qcow2"),
             DiskTarget("data", "data", "", f"{old}/data.raw", new / "data.qcow2", "qcow2"),
             DiskTarget("drive-leg", "#block123", "drive-leg", f"{old}/legacy.img", new / "drive-leg.qcow2", "qcow2"),
             DiskTarget("hot", "hot", "", f"{old}/hot.raw", new / "hot.qcow2", "qcow2", model="virtio-blk-pci")]
    rw = rewrite(argv, "/srv", name="copy", vmdir=new, disks=disks, qmp_address=f"{old}/qmp.sock")
    a = rw.argv
    joined = " ".join(a)
    assert old not in joined, joined
    assert rw.qmp == new / "qmp.sock" and rw.pidfile == new / "qemu.pid" and rw.daemonize
    assert a[a.index("-name") + 1] == "guest=copy,debug-threads=on"
    assert a[a.index("-uuid") + 1] != argv[argv.index("-uuid") + 1]
    assert f"filename={new}/root.qcow2" in joined and "backing=base" not in joined
    data = json.loads(a[a.index("-blockdev", a.index("-blockdev") + 3) + 1])
    assert data["driver"] == "qcow2" and data["file"]["filename"] == str(new / "data.qcow2")
    assert f"file={new}/drive-leg.qcow2,format=qcow2,if=none,id=drive-leg,cache=none" in a
    assert "hostfwd" not in joined and "52:54:00:aa:bb:cc" not in joined and "-gdb" not in a and "-incoming" not in a
    assert "model=e1000,mac=52:54:00:" in joined                          # a NIC without a MAC gets its own
    assert f"unix:{new}/vnc.sock" in a and f"socket,id=mon1,path={new}/hmp.sock,server=on,wait=off" in a
    assert f"file:{new}/console.log" in a and "-machine" in a and "q35" in a
    assert json.loads(a[-3])["node-name"] == "hot" and a[-1] == "virtio-blk-pci,drive=hot"
    assert any("hot-plugged" in w for w in rw.warnings) and any("hostfwd" in w for w in rw.warnings)


def test_capture_from_a_local_qemu_and_from_qmp_alone(bare_qemu, tmp_path: Path) -> None:
    a = make_image(tmp_path / "a.qcow2", "16M")
    b = make_image(tmp_path / "b.raw", "8M", "raw")
    vm = bare_qemu(blockdev_args(a, "da") + drive_args(b, "db", "raw"))
    with QmpSession(vm.qmp) as s:
        local = capture(s)
        remote = capture(s, use_proc=False)
    assert local["source"] == "cmdline" and local["pid"] == vm.proc.pid
    assert local["argv"] == vm.proc.args and local["cwd"] == str(vm.dir)
    assert remote["source"] == "qmp" and "argv" not in remote and remote["warnings"]
    facts = remote["qmp"]
    assert facts["arch"] == "x86_64" and facts["memory"] == 64 << 20 and facts["cpus"] == 1
    assert facts["machine"].startswith("pc-q35") and facts["status"] == "prelaunch"
    assert {d["name"]: d["model"] for d in facts["disks"]} == {"da": "virtio-blk-pci", "db": "virtio-blk-pci"}
    new = tmp_path / "n"
    new.mkdir()
    targets = [DiskTarget(d["name"], d["node"], d["device"], d["filename"], tmp_path / f"{d['name']}.qcow2", "qcow2",
                          d["model"]) for d in facts["disks"]]
    for t in targets:
        make_image(t.path, "16M")
    rw = rewrite(synthesize_argv(facts), str(new), name="n", vmdir=new, disks=targets)
    p = subprocess.Popen(rw.argv, cwd=new, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:                                            # the synthesized command line is one QEMU accepts
        from cutpoint.restore.launch import running_reason
        import time
        deadline = time.monotonic() + 20
        while not listening(rw.qmp) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() is None, p.stderr.read().decode() if p.stderr else ""
        assert running_reason(str(rw.qmp), None, None, []) is not None
    finally:
        p.kill()
        p.wait()


def test_rewrite_drops_excluded_disks(tmp_path: Path) -> None:
    """A disk left out of the backup has no restored image: the new VM must not open the original's file."""
    old = "/srv/web"
    argv = ["qemu-system-x86_64", "-machine", "q35",
            "-blockdev", f"driver=file,filename={old}/root.qcow2,node-name=root-file",
            "-blockdev", "driver=qcow2,file=root-file,node-name=root",
            "-device", "virtio-blk-pci,drive=root,id=root-dev",
            "-blockdev", f"driver=file,filename={old}/scratch.raw,node-name=scratch-file",
            "-blockdev", "driver=raw,file=scratch-file,node-name=scratch-fmt",
            "-blockdev", "driver=throttle,file=scratch-fmt,node-name=scratch,throttle-group=tg0",
            "-device", "virtio-blk-pci,drive=scratch,id=scratch-dev",
            "-drive", f"file={old}/swap.img,format=raw,if=none,id=swap",
            "-device", "virtio-blk-pci,drive=swap",
            "-drive", f"file={old}/logs.img,format=raw,if=none,id=logs-drive",
            "-device", json.dumps({"driver": "virtio-blk-pci", "drive": "logs-drive", "id": "logs"}),
            "-drive", f"file={old}/anon.img,format=raw,if=virtio"]
    new = tmp_path / "copy"
    disks = [DiskTarget("root", "root", "", f"{old}/root.qcow2", new / "root.qcow2", "qcow2")]
    rw = rewrite(argv, "/srv", name="copy", vmdir=new, disks=disks,
                 excluded={"scratch": "", "swap": "", "logs": "", "virtio0": f"{old}/anon.img"})
    joined = " ".join(rw.argv)
    assert old not in joined, joined
    for gone in ("scratch", "swap", "logs", "anon"):
        assert gone not in joined, (gone, joined)
    assert f"filename={new}/root.qcow2" in joined and "drive=root,id=root-dev" in joined
    assert any("logs, scratch, swap, virtio0" in w for w in rw.warnings), rw.warnings
    # a disk it cannot find by name or file is an error, not a VM that opens the original's image
    with pytest.raises(UsageError, match="still opens /srv/web/odd.img"):
        rewrite(["qemu-system-x86_64", "-blockdev", f"driver=file,filename={old}/odd.img,node-name=f1",
                 "-blockdev", "driver=raw,file=f1,node-name=other-name"], "/srv", name="copy", vmdir=new,
                disks=[], excluded={"odd": f"{old}/odd.img"})
