"""Supported-scenario checks on real (paused) QEMUs started with each disk option: refused before any cut with a
message saying what is wrong and what to do, accepted once excluded (and the exclusion recorded on the point);
CD-ROMs skipped; cache modes recorded, with a note only for cache=unsafe; the agent fallbacks a paused VM shows;
settings rules; and the billing report."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cutpoint.backup.validation import refusal
from cutpoint.cut.disks import Disk
from cutpoint.drivers.qmp.disks import _support_facts, discover
from cutpoint.drivers.qmp.qmp import QmpSession
from tests.consistency.support import cli as cutpoint
from tests.helpers import assert_clean, blockdev_args, drive_args, make_image, qemu_state

GOOD = "sys"


@pytest.fixture
def block_device(tmp_path: Path) -> Iterator[str]:
    """A loop device over a small file (root and /dev/loop-control needed), else /dev/null, which QEMU's
    host_device driver also accepts (read-only: it is a character device)."""
    backing = tmp_path / "lun.img"
    backing.write_bytes(b"\0" * (16 << 20))
    r = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    dev = r.stdout.strip() if r.returncode == 0 else ""
    yield dev or "/dev/null"
    if dev:
        subprocess.run(["losetup", "-d", dev], check=False)


def _disk_args(case: str, img: Path) -> tuple[list[str], str]:
    """QEMU arguments for the problem disk of ``case`` and the name cutpoint gives it."""
    if case == "shared":
        return ["-blockdev", f"driver=file,filename={img},node-name=shared-file",
                "-blockdev", "driver=qcow2,file=shared-file,node-name=shared",
                "-device", "virtio-blk-pci,drive=shared,id=shared-dev,share-rw=on"], "shared"
    if case == "read-only":
        return blockdev_args(img, "golden", extra="read-only=on"), "golden"
    return drive_args(img, "scratch", extra="snapshot=on"), "scratch"


EXPECT = {
    "shared": "is attached with share-rw=on",
    "read-only": "is read-only (read-only=on)",
    "transient": "is transient (-drive snapshot=on): the guest writes to QEMU's temporary overlay",
}


@pytest.mark.parametrize("case", list(EXPECT))
def test_refused_until_excluded(case: str, bare_qemu: Callable, tmp_path: Path, isolated: Path) -> None:
    good = make_image(tmp_path / "sys.qcow2", "16M", writes=["write -P 0x5a 0 1M"])
    bad = make_image(tmp_path / "bad.qcow2", "16M", writes=["write -P 0x33 0 1M"])
    args, name = _disk_args(case, bad)
    vm = bare_qemu(blockdev_args(good, GOOD) + args)

    add = cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    line = next(ln for ln in add.out.splitlines() if ln.startswith(name + " "))
    assert line.rstrip().endswith("refused"), add.out
    assert f"refused: disk {name} {EXPECT[case]}" in add.out
    verdicts = {v["disk"]: v for v in json.loads(
        cutpoint("vm", "add", "v2", "--qmp", str(vm.qmp), "--json", check=True).out)["verdicts"]}
    assert verdicts[name]["state"] == "refused" and verdicts[GOOD]["state"] == "backed up"

    r = cutpoint("backup", "v", "--json")
    assert r.code == 9, (r.code, r.err)
    err = r.err.strip()
    assert len(err.splitlines()) == 1 and EXPECT[case] in err
    assert f"cutpoint vm set v --exclude-disk {name}" in err
    assert json.loads(cutpoint("points", "v", "--json", check=True).out) == []
    assert_clean(vm.qmp, isolated / "work", {})          # refused before anything was put into QEMU

    cutpoint("vm", "set", "v", "--exclude-disk", name, check=True)
    res = json.loads(cutpoint("backup", "v", "--json", check=True).out)
    assert [d["name"] for d in res["disks"]] == [GOOD]
    assert {"name": name, "reason": f"excluded ('cutpoint vm set v --exclude-disk {name}')"} in res["skipped"]
    cutpoint("vm", "set", "v", "--include-disk", name, check=True)
    assert cutpoint("backup", "v").code == 9


def test_host_block_device_is_backed_up(bare_qemu: Callable, tmp_path: Path, block_device: str) -> None:
    """A host block device (an LVM volume, here a loop device) under an emulated virtio disk is written through
    QEMU's block layer, so the cut holds it like any image: backed up, not refused (as libvirt's type='block')."""
    if block_device == "/dev/null":
        pytest.skip("no loop device here (needs root and /dev/loop-control)")
    with open(block_device, "r+b") as f:
        f.write(b"\x4c" * (1 << 20))
    vm = bare_qemu(["-blockdev", f"driver=host_device,filename={block_device},node-name=lv-file,cache.direct=on",
                    "-blockdev", "driver=raw,file=lv-file,node-name=lv",
                    "-device", "virtio-blk-pci,drive=lv,id=lv-dev"])
    with QmpSession(vm.qmp) as s:
        (d,) = discover(s).disks
    assert (d.protocol, d.model, d.passthrough) == ("host_device", "virtio-blk-pci", "")
    add = cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True).out
    assert next(ln for ln in add.splitlines() if ln.startswith("lv ")).rstrip().endswith("backed up"), add
    res = json.loads(cutpoint("backup", "v", "--json", check=True).out)
    out = json.loads(cutpoint("restore", "v", res["point"], "--to", str(tmp_path / "r"), "--json", check=True).out)
    with open(block_device, "rb") as f:
        assert Path(out["files"][0]["path"]).read_bytes() == f.read(16 << 20)


class _FakeMonitor:
    """What QMP answers about one SCSI disk on a host device; QEMU starts scsi-block/scsi-generic only on a real
    SCSI device, which these machines lack, so discovery's part is checked against QEMU's answers as recorded."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.asked: list[str] = []

    def cmd(self, name: str, **args: object) -> object:
        if name == "query-named-block-nodes":
            return [{"node-name": "#block1", "drv": "raw", "file": "/dev/sdx"},
                    {"node-name": "#block0", "drv": "host_device", "file": "/dev/sdx"}]
        assert name == "qom-get", name
        self.asked.append(f"{args['path']}.{args['property']}")
        return False if args["property"] == "share-rw" else self.model


@pytest.mark.parametrize("model", ["scsi-block", "scsi-generic", "scsi-hd"])
def test_scsi_passthrough_is_refused(model: str) -> None:
    """scsi-block/scsi-generic send the guest's SCSI commands to the device by SG_IO, past the block layer: refused.
    scsi-hd on the same host device is an emulated disk: backed up."""
    d = Disk("lun", "#block1", 1 << 30, "raw", "/dev/sdx", device="lun",
             qdev="/machine/peripheral-anon/device[0]")
    mon = _FakeMonitor(model)
    _support_facts(mon, [d])  # type: ignore[arg-type]
    assert mon.asked == ["/machine/peripheral-anon/device[0].share-rw", "/machine/peripheral-anon/device[0].type"]
    assert (d.protocol, d.model) == ("host_device", model)
    why = refusal(d, "v")
    if model == "scsi-hd":
        assert why is None and d.passthrough == ""
    else:
        assert why and "is a raw pass-through" in why and model in why and "--exclude-disk lun" in why


def test_cache_modes_recorded_unsafe_noted_cdrom_skipped(bare_qemu: Callable, tmp_path: Path) -> None:
    args = []
    for mode in ("none", "writeback", "writethrough", "directsync", "unsafe"):
        img = make_image(tmp_path / f"{mode}.qcow2", "8M", writes=["write -P 0x42 0 64k"])
        args += drive_args(img, mode, extra=f"cache={mode}")
    args += ["-drive", "if=none,id=cd0,media=cdrom,readonly=on", "-device", "ide-cd,drive=cd0,bus=ide.2"]
    vm = bare_qemu(args)
    add = cutpoint("vm", "add", "c", "--qmp", str(vm.qmp), check=True).out
    rows = {ln.split()[0]: ln.split() for ln in add.splitlines()[2:] if ln and not ln.startswith("warning")}
    for mode in ("none", "writeback", "writethrough", "directsync", "unsafe"):
        assert rows[mode][4] == mode and rows[mode][5:] == ["backed", "up"], add
    assert "skipped: CD-ROM drive" in add
    warnings = [ln for ln in add.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "disk unsafe has cache.no-flush=on (cache=unsafe)" in warnings[0]

    res = json.loads(cutpoint("backup", "c", "--json", check=True).out)
    assert len(res["warnings"]) == 1 and "cache.no-flush=on" in res["warnings"][0]
    assert "a VM restored from it is consistent" in res["warnings"][0]
    cache = {d["name"]: d["cache"] for d in res["disks"]}
    assert cache["writeback"] == {"direct": False, "no-flush": False, "writeback": True}
    assert cache["none"]["direct"] and cache["unsafe"]["no-flush"]
    assert [k["name"] for k in res["skipped"]] == ["cd0"]


def test_app_requested_without_a_usable_agent_falls_back(bare_qemu: Callable, tmp_path: Path) -> None:
    plain = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "8M"), "a"), name="plain")
    sock = tmp_path / "qga.sock"
    chan = bare_qemu(blockdev_args(make_image(tmp_path / "b.qcow2", "8M"), "b") + [
        "-device", "virtio-serial-pci,id=vser0", "-chardev", f"socket,id=qga0,path={sock},server=on,wait=off",
        "-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0"], name="chan")
    cutpoint("vm", "add", "plain", "--qmp", str(plain.qmp), check=True)
    cutpoint("vm", "add", "chan", "--qmp", str(chan.qmp), check=True)

    res = json.loads(cutpoint("backup", "plain", "--consistency", "app", "--json", check=True).out)
    assert (res["consistency"], res["requested"], res["frozen_ms"]) == ("crash", "app", None)
    assert res["fallback_reason"].startswith("no guest agent channel: the VM has no virtio-serial port named "
                                             "org.qemu.guest_agent.0")
    cutpoint("vm", "set", "chan", "--consistency", "app", check=True)
    res = json.loads(cutpoint("backup", "chan", "--json", check=True).out)        # the VM's setting: app
    assert res["consistency"] == "crash" and res["requested"] == "app"
    assert res["fallback_reason"] == (f"qemu-ga is not running in the guest: the guest has not opened the "
                                      f"org.qemu.guest_agent.0 port (chardev 'qga0', socket {sock})")
    cutpoint("vm", "set", "chan", "--agent-socket", str(tmp_path / "none.sock"), check=True)
    res = json.loads(cutpoint("backup", "chan", "--json", check=True).out)
    assert "cannot connect to the guest agent socket" in res["fallback_reason"]
    human = cutpoint("backup", "chan", check=True).out
    assert "requested app-consistent, got crash-consistent: " in human
    for key in ("consistency", "requested", "fallback_reason", "pause_ms", "frozen_ms", "warnings"):
        assert key in res

    r = cutpoint("vm", "set", "plain", "--pre-script", "/usr/local/bin/flush-db")
    assert r.code == 2 and "run only in application-consistent backups" in r.err
    cutpoint("vm", "set", "chan", "--pre-script", "/usr/local/bin/flush-db", check=True)
    r = cutpoint("backup", "chan", "--consistency", "crash")
    assert r.code == 2 and "pre/post scripts run only in application-consistent backups" in r.err
    assert qemu_state(chan.qmp)["jobs"] == []


def test_report_weights_and_bytes(bare_qemu: Callable, tmp_path: Path) -> None:
    shared = ["write -P 0x11 0 4M"]             # one identical 4 MiB chunk in both VMs
    a = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "16M", writes=shared + ["write -P 0xa 4M 4M"]),
                                "a"), name="a")
    b = bare_qemu(blockdev_args(make_image(tmp_path / "b.qcow2", "16M", writes=shared + ["write -P 0xb 8M 4M"]),
                                "b"), name="b")
    cutpoint("vm", "add", "app-vm", "--qmp", str(a.qmp), check=True)
    cutpoint("vm", "add", "crash-vm", "--qmp", str(b.qmp), check=True)
    cutpoint("vm", "set", "app-vm", "--consistency", "app", check=True)
    cutpoint("backup", "app-vm", check=True)
    cutpoint("backup", "crash-vm", check=True)
    cutpoint("backup", "crash-vm", check=True)
    rep = json.loads(cutpoint("report", "--json", check=True).out)
    vms = {v["vm"]: v for v in rep["vms"]}
    assert (vms["app-vm"]["weight"], vms["crash-vm"]["weight"], rep["total_weight"]) == (1.0, 0.5, 1.5)
    assert vms["app-vm"]["last_point_consistency"] == "crash"       # no agent here: it fell back
    assert vms["app-vm"]["logical_bytes"] == 16 << 20 and vms["crash-vm"]["logical_bytes"] == 32 << 20
    for v in vms.values():
        assert 0 < v["unique_bytes"] < v["stored_bytes"]             # the shared chunk is not unique to either
        assert v["points"] == (1 if v["vm"] == "app-vm" else 2)
    shared_bytes = vms["app-vm"]["stored_bytes"] - vms["app-vm"]["unique_bytes"]
    assert shared_bytes == vms["crash-vm"]["stored_bytes"] - vms["crash-vm"]["unique_bytes"]
    assert rep["vault_stored_bytes"] == vms["app-vm"]["unique_bytes"] + vms["crash-vm"]["stored_bytes"]
    text = cutpoint("report", check=True).out
    assert "protected instances: 1.5" in text and "app-vm" in text
    # a policy's consistency type is what scheduled backups ask for, so it is what the VM is weighed as
    cutpoint("policy", "create", "nightly-app", "--daily", "02:30", "--keep-daily", "7", "--consistency", "app",
             check=True)
    cutpoint("vm", "set", "crash-vm", "--policy", "nightly-app", check=True)
    vms = {v["vm"]: v for v in json.loads(cutpoint("report", "--json", check=True).out)["vms"]}
    assert (vms["crash-vm"]["consistency"], vms["crash-vm"]["weight"]) == ("app", 1.0)
