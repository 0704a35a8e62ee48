"""``Disk.node`` is a QMP node only; a libvirt disk's target is ``Disk.target``. The ``vm add --json`` and manifest
field ``node`` stay what they were: the disk's address, the node for QMP and the target for libvirt."""

from __future__ import annotations

from cutpoint.cut.disks import Disk


def test_a_libvirt_disk_has_no_qmp_node_but_keeps_its_json_node() -> None:
    d = Disk(name="vda", node="", target="vda", size=1 << 20, driver="qcow2", filename="/i/vda.qcow2")
    assert d.address == "vda"
    out = d.to_json()
    assert out["node"] == "vda" and "target" not in out


def test_a_qmp_disk_is_addressed_by_its_node() -> None:
    d = Disk(name="drive0", node="#block123", size=1 << 20, driver="raw", filename="/i/a.raw")
    assert d.address == "#block123" and d.to_json()["node"] == "#block123"
