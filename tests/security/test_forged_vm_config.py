"""A forged manifest's VM configuration is data, not code: restore --new-vm --start / --instant run only a trusted
qemu-system-* binary, with arguments checked first; anything else is refused before a process is started."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cutpoint.errors import UsageError
from cutpoint.restore.cmdline import DiskTarget, rewrite
from tests.helpers import cutpoint
from tests.security.util import backed_up_vm, forge_vm_config


def _refused(r, *needles: str) -> str:
    assert r.code == 2, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cutpoint: error: "), r.err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _nothing_left(vms_home: Path, *names: str) -> None:
    for n in names:
        assert not (vms_home / n).exists(), n
    assert {v["name"] for v in json.loads(cutpoint("vm", "list", "--json", check=True).out)} == {"v"}


def _evil_script(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\n")
    evil.chmod(0o755)
    return evil, marker


def test_forged_argv0_shell_is_never_run(bare_qemu, tmp_path: Path, vms_home: Path) -> None:
    _, point = backed_up_vm(bare_qemu, tmp_path)
    evil, marker = _evil_script(tmp_path)
    forge_vm_config(point, lambda cfg: cfg.update(argv=["/bin/sh", "-c", str(evil)] + cfg["argv"][1:]))
    for how in (["--new-vm", "n1", "--start"], ["--instant", "n2"]):
        _refused(cutpoint("restore", "v", point, *how), "/bin/sh", "qemu-system-")
        assert not marker.exists(), f"{how}: the forged command ran"
    _nothing_left(vms_home, "n1", "n2")


def test_forged_netdev_script_is_refused_before_anything_starts(bare_qemu, tmp_path: Path, vms_home: Path) -> None:
    _, point = backed_up_vm(bare_qemu, tmp_path)
    evil, marker = _evil_script(tmp_path)
    forge_vm_config(point, lambda cfg: cfg["argv"].extend(
        ["-netdev", f"tap,id=n9,script={evil},downscript=no", "-device", "virtio-net-pci,netdev=n9"]))
    for how in (["--new-vm", "n1", "--start"], ["--instant", "n2"]):
        _refused(cutpoint("restore", "v", point, *how), "-netdev", f"script={evil}")
        assert not marker.exists(), f"{how}: the forged script ran"
    _nothing_left(vms_home, "n1", "n2")


def test_start_sh_runs_only_the_trusted_qemu(bare_qemu, tmp_path: Path, vms_home: Path) -> None:
    """A genuine config with a relative or odd argv[0] is restored with the emulator from the trusted directory."""
    _, point = backed_up_vm(bare_qemu, tmp_path)
    forge_vm_config(point, lambda cfg: cfg["argv"].__setitem__(0, "/tmp/not-there/qemu-system-x86_64"))
    r = cutpoint("restore", "v", point, "--new-vm", "n1", "--json")
    assert r.code == 0, r.err
    d = Path(json.loads(r.out)["dir"])
    argv = json.loads((d / "vm.json").read_text())["argv"]
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert "exec /usr/bin/qemu-system-x86_64 " in (d / "start.sh").read_text()


OLD = "/srv/web"
REFUSED = [
    (["-netdev", "tap,id=n0,script=/tmp/evil.sh"], "script=/tmp/evil.sh"),
    (["-netdev", "tap,id=n0,downscript=/tmp/evil.sh,script=no"], "downscript=/tmp/evil.sh"),
    (["-netdev", "tap,id=n0,helper=/tmp/evil"], "helper="),
    (["-netdev", "bridge,id=n0,br=br0"], "bridge"),
    (["-netdev", "user,id=n0,smb=/etc"], "smb="),
    (["-netdev", "user,id=n0,guestfwd=tcp:10.0.2.100:1-cmd:/tmp/evil.sh"], "guestfwd="),
    (["-chardev", "pipe,id=c0,path=/tmp/fifo"], "pipe"),
    (["-serial", "pipe:/tmp/fifo"], "pipe:"),
    (["-monitor", "exec:/tmp/evil.sh"], "exec:"),
    (["-serial", "/dev/ttyS0"], "/dev/ttyS0"),
    (["-chardev", "file,id=c0,path=/tmp/out,input-path=/etc/shadow"], "input-path=/etc/shadow"),
    (["-chardev", "socket,id=c0,host=10.0.0.1,port=22"], "-chardev"),
    (["-incoming", "exec:/tmp/evil.sh"], None),          # dropped by the rewrite (warning), never run
    (["-plugin", "/tmp/evil.so"], "-plugin"),
    (["-run-with", "chroot=/tmp"], "-run-with"),
    (["-runas", "nobody"], "-runas"),
    (["-chroot", "/tmp"], "-chroot"),
    (["-add-fd", "fd=3,set=1"], "-add-fd"),
    (["-readconfig", "/tmp/evil.cfg"], "-readconfig"),
    (["-writeconfig", "/etc/passwd"], "-writeconfig"),
    (["-set", "drive.x.file=/etc/shadow"], "-set"),
    (["-virtfs", "local,path=/,mount_tag=root,security_model=none"], "-virtfs"),
    (["-fsdev", "local,id=f0,path=/,security_model=none"], "-fsdev"),
    (["-object", "secret,id=s0,file=/etc/shadow"], "file=/etc/shadow"),
    (["-object", "memory-backend-file,id=m0,mem-path=/etc/shadow,size=1M"], "memory-backend-file"),
    (["-object", "authz-listfile,id=a0,filename=/etc/passwd"], "authz-listfile"),
    (["-object", "rng-random,id=r0,filename=/etc/shadow"], "filename=/etc/shadow"),
    (["-drive", "file=/etc/shadow,format=raw,if=none,id=x0"], "file=/etc/shadow"),
    (["-drive", "file=nbd:unix:/run/x.sock,format=raw,if=none,id=x0"], "nbd:unix"),
    (["-drive", "file=/usr/share/qemu/bios.bin,format=raw,if=pflash"], "read-only"),
    (["-blockdev", "driver=file,filename=/etc/shadow,node-name=x0"], "filename=/etc/shadow"),
    (["-blockdev", "driver=host_device,filename=/dev/sda,node-name=x0"], "host_device"),
    (["-blockdev", json.dumps({"driver": "qcow2", "node-name": "q", "data-file": "x",
                               "file": {"driver": "file", "filename": "/etc/shadow"}})], "/etc/shadow"),
    (["-kernel", "/etc/shadow"], "-kernel"),
    (["-initrd", "../../etc/shadow"], "-initrd"),
    (["-bios", "/root/evil.bin"], "-bios"),
    (["-device", "loader,file=/etc/shadow"], "file=/etc/shadow"),
    (["-device", "vfio-pci,host=01:00.0"], "vfio-pci"),
    (["-device", "usb-host,hostbus=1,hostaddr=2"], "usb-host"),
    (["-machine", "q35,dumpdtb=/etc/passwd"], "dumpdtb"),
    (["-fw_cfg", "name=opt/x,file=/etc/shadow"], "file=/etc/shadow"),
    (["-mem-path", "/dev/hugepages"], "-mem-path"),
    (["-L", "/tmp"], "-L"),
    (["-qtest", "unix:/tmp/q"], "-qtest"),
    (["-tpmdev", "passthrough,id=t0,path=/dev/tpm0"], "-tpmdev"),
    (["-D", "/etc/passwd", "-trace", "file=/etc/passwd"], "file=/etc/passwd"),
    (["-audiodev", "wav,id=a0,path=/etc/passwd"], "path=/etc/passwd"),
    (["-no-such-option", "x"], "-no-such-option"),
]


@pytest.mark.parametrize("extra,needle", REFUSED, ids=[" ".join(a)[:40] for a, _ in REFUSED])
def test_rewrite_refuses_host_programs_and_host_paths(tmp_path: Path, extra: list[str], needle: str | None) -> None:
    argv = ["qemu-system-x86_64", "-machine", "q35", "-m", "256",
            "-blockdev", f"driver=file,filename={OLD}/root.qcow2,node-name=root-file",
            "-blockdev", "driver=qcow2,file=root-file,node-name=root",
            "-device", "virtio-blk-pci,drive=root,id=root-dev"] + extra
    new = tmp_path / "copy"
    disks = [DiskTarget("root", "root", "", f"{OLD}/root.qcow2", new / "root.qcow2", "qcow2")]
    if needle is None:
        rw = rewrite(argv, "/srv", name="copy", vmdir=new, disks=disks)
        assert not any(a.startswith("exec:") for a in rw.argv), rw.argv
        return
    with pytest.raises(UsageError) as e:
        rewrite(argv, "/srv", name="copy", vmdir=new, disks=disks)
    assert needle in str(e.value), str(e.value)


def test_rewrite_keeps_what_a_lab_guest_needs(tmp_path: Path) -> None:
    """The allowlist is not a wall: a lab guest's command line (kernel and initrd from the cache) passes."""
    from cutpoint.lab.qemu_args import DiskSpec, qemu_argv
    from cutpoint.paths import cache_home

    old = Path(OLD)
    kernel, initrd = cache_home() / "vmlinuz", cache_home() / "initrd.img"
    argv = qemu_argv(name="src", dir=old, accel="tcg", memory_mb=128, kernel=kernel, initrd=initrd,
                     append="console=ttyS0 quiet", disks=[(DiskSpec(16 << 20), old / "d0.qcow2")], cdrom=True,
                     extra_args=[], agent_socket=old / "qga.sock")
    new = tmp_path / "copy"
    disks = [DiskTarget("disk0", "disk0", "disk0-dev", str(old / "d0.qcow2"), new / "disk0.qcow2", "qcow2")]
    rw = rewrite(argv, str(old), name="copy", vmdir=new, disks=disks)
    assert rw.argv[0] == "/usr/bin/qemu-system-x86_64"
    assert rw.argv[rw.argv.index("-kernel") + 1] == os.path.realpath(kernel)
    assert str(old) not in " ".join(rw.argv)
    assert rw.cwd == str(new)
