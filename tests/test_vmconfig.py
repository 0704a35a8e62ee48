"""A point's ``vm_config`` parsed into the per-driver types: what drivers write parses; anything malformed (crafted
or damaged vault content) is one clear ``VmConfigError`` naming the field, never a KeyError or AttributeError, and
through the CLI a one-line error with exit 6 that leaves nothing behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cutpoint import vmconfig
from cutpoint.vault.manifest import manifest_path
from cutpoint.vault.vault import Vault
from cutpoint.vmconfig import LibvirtVmConfig, QmpVmConfig, VmConfigError
from tests.helpers import blockdev_args, cutpoint, make_image

W = "point P of VM 'v'"


def test_what_the_drivers_write_parses() -> None:
    q = vmconfig.parse({"type": "qmp", "version": 1, "source": "cmdline", "qmp_address": "/run/v.qmp",
                        "qmp": {"arch": "x86_64", "disks": [{"name": "da", "device": "da-dev", "model": "virtio"}]},
                        "warnings": ["w"], "pid": 12, "argv": ["qemu", "-m", "64"], "cwd": "/", "start_time": 5}, W)
    assert isinstance(q, QmpVmConfig) and q.argv == ("qemu", "-m", "64") and q.pid == 12
    assert q.disks[0].model == "virtio" and q.facts["arch"] == "x86_64" and q.warnings == ("w",)
    bare = vmconfig.parse({"qmp_address": "/s", "qmp": {"error": "no QMP facts"}}, W)   # type defaults to qmp
    assert isinstance(bare, QmpVmConfig) and bare.source == "qmp" and bare.argv == () and bare.disks == ()
    lv = vmconfig.parse({"type": "libvirt", "connect": None, "domain": "d", "xml": "<domain/>"}, W)
    assert lv == LibvirtVmConfig(connect="qemu:///system", domain="d", xml="<domain/>")
    assert vmconfig.parse(None, W) is None and vmconfig.parse({}, W) is None


@pytest.mark.parametrize("raw, needle", [
    ("a string", "not an object"),
    ({"type": "xen"}, "unknown type 'xen'"),
    ({"type": 7}, "'type' must be a string"),
    ({"qmp": "x"}, "'qmp' must be an object"),
    ({"qmp": {"disks": {"da": 1}}}, "'qmp.disks' must be a list"),
    ({"qmp": {"disks": ["da"]}}, "'qmp.disks[0]' must be an object"),
    ({"qmp": {"disks": [{"model": "virtio"}]}}, "lacks field 'qmp.disks[0].name'"),
    ({"argv": "qemu -m 64"}, "'argv' must be a list"),
    ({"argv": ["qemu", 64]}, "'argv' must be a list of strings"),
    ({"pid": "12"}, "'pid' must be an integer"),
    ({"pid": True}, "'pid' must be an integer"),
    ({"qmp_address": ["/s"]}, "'qmp_address' must be a string"),
    ({"type": "libvirt", "domain": "d"}, "lacks field 'xml'"),
    ({"type": "libvirt", "xml": ""}, "'xml' (the domain definition) is empty"),
])
def test_malformed_configs_are_one_clear_error(raw: object, needle: str) -> None:
    with pytest.raises(VmConfigError) as exc:
        vmconfig.parse(raw, W)
    assert needle in str(exc.value) and str(exc.value).startswith(W), str(exc.value)


def test_cli_new_vm_from_a_point_with_a_malformed_config(bare_qemu, tmp_path: Path) -> None:
    a = make_image(tmp_path / "a.qcow2", "16M", writes=["write -P 0xab 0 1M"])
    vm = bare_qemu(blockdev_args(a, "da"))
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    point = json.loads(cutpoint("backup", "v", "--json", check=True).out)["point"]
    v = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    m = v.manifest(v.catalog.point("v", point))
    assert m.vm_config is not None
    m.vm_config["qmp"] = "not facts"                     # as a crafted manifest could say
    manifest_path(v.root, "v", point).write_bytes(m.seal(v.sealer))
    v.close()
    where = tmp_path / "new"
    for how in (["--new-vm", "n1", "--to", str(where)], ["--instant", "n2", "--to", str(where)]):
        r = cutpoint("restore", "v", point, *how)
        assert r.code == 6, (r.code, r.err)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and "VM configuration field 'qmp' must be an object" in lines[0], r.err
        assert not where.exists()
    assert {x["name"] for x in json.loads(cutpoint("vm", "list", "--json", check=True).out)} == {"v"}
    cutpoint("restore", "v", point, "--to", str(tmp_path / "images"), check=True)   # its disks still restore
