"""``cutpoint vm add --qmp`` registers a VM through the QMP driver's discovery: its JSON document and its table are
a contract (every key, in order, at every level; the skipped CD-ROM and the verdicts included)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import blockdev_args, cutpoint, drive_args, make_image

DISK_KEYS = ["name", "node", "size", "driver", "filename", "device", "qdev", "read_only", "cache", "bitmaps",
             "share_rw", "transient", "protocol", "protocol_file", "model", "passthrough"]
CACHE = {"no-flush": False, "direct": False, "writeback": True}


def test_vm_add_qmp_output_is_unchanged(bare_qemu, tmp_path: Path) -> None:
    a = make_image(tmp_path / "a.qcow2", "64M")
    b = make_image(tmp_path / "b.raw", "32M", "raw")
    vm = bare_qemu(blockdev_args(a, "sys") + drive_args(b, "data", "raw", "cache=writeback")
                   + ["-drive", "if=none,id=cd0,media=cdrom", "-device", "ide-cd,drive=cd0"])
    qmp = str(vm.qmp.resolve())
    out = cutpoint("vm", "add", "web", "--qmp", str(vm.qmp), "--json", check=True).out
    doc = json.loads(out)
    assert out == json.dumps(doc, indent=1) + "\n"
    assert list(doc) == ["vm", "qmp", "disks", "skipped", "verdicts"]
    assert [list(d) for d in doc["disks"]] == [DISK_KEYS] * 2 and list(doc["disks"][0]["cache"]) == list(CACHE)
    data_node = doc["disks"][0]["node"]
    assert data_node.startswith("#block")                     # a -drive disk: QEMU named its node
    common = {"read_only": False, "cache": CACHE, "bitmaps": [], "share_rw": False, "transient": False,
              "protocol": "file", "model": "virtio-blk-pci", "passthrough": ""}
    assert doc == {
        "vm": "web", "qmp": qmp,
        "disks": [
            {"name": "data", "node": data_node, "size": 32 << 20, "driver": "raw", "filename": str(b),
             "device": "data", "qdev": "/machine/peripheral-anon/device[0]/virtio-backend", **common,
             "protocol_file": str(b)},
            {"name": "sys", "node": "sys", "size": 64 << 20, "driver": "qcow2", "filename": str(a), "device": "",
             "qdev": "/machine/peripheral/sys-dev/virtio-backend", **common, "protocol_file": str(a)},
        ],
        "skipped": [{"name": "cd0", "reason": "CD-ROM drive (empty)"}],
        "verdicts": [
            {"disk": "data", "state": "backed up", "reason": None, "cache": "writeback", "warnings": []},
            {"disk": "sys", "state": "backed up", "reason": None, "cache": "writeback", "warnings": []},
            {"disk": "cd0", "state": "skipped", "reason": "CD-ROM drive (empty)", "cache": "", "warnings": []},
        ],
    }
    assert all(list(v) == ["disk", "state", "reason", "cache", "warnings"] for v in doc["verdicts"])
    rows = json.loads(cutpoint("vm", "list", "--json", check=True).out)
    assert [(r["name"], r["kind"], r["address"], r["points"]) for r in rows] == [("web", "qmp", qmp, 0)]

    cutpoint("vm", "remove", "web", check=True)
    text = cutpoint("vm", "add", "web", "--qmp", str(vm.qmp), check=True).out
    node = text.split()[text.split().index("data") + 1]        # the node QEMU generated this time
    assert node.startswith("#block")
    assert [line.split() for line in text.splitlines()] == [
        ["protecting", "VM", "'web'", "through", qmp],
        ["disk", "node", "format", "size", "cache", "verdict"],
        ["----", "-" * len(node), "------", "--------", "---------", "-" * 29],
        ["data", node, "raw", str(32 << 20), "writeback", "backed", "up"],
        ["sys", "sys", "qcow2", str(64 << 20), "writeback", "backed", "up"],
        ["cd0", "-", "-", "-", "-", "skipped:", "CD-ROM", "drive", "(empty)"],
    ]
