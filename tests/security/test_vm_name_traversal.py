"""VM names that would walk out of their directory: ``vm add ..`` and ``vm add a/b`` are refused, and a catalog row
named ``..`` or ``.`` (written straight into SQLite, as a hostile vault would) never becomes a path: the sweep of
such a "VM" must not delete another VM's scratch (a running backup's overlays) or anything beside the work root."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from cutpoint.paths import work_home
from tests.helpers import blockdev_args, cutpoint, make_image
from tests.security.util import backed_up_vm
from tests.vault.util import vault_dir


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x", "", "a" * 65, "a\nb"])
def test_vm_add_refuses_a_name_that_is_no_path_component(bare_qemu, tmp_path: Path, name: str) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "8M"), "da"))
    r = cutpoint("vm", "add", name, "--qmp", str(vm.qmp))
    assert r.code == 2, (r.out, r.err)
    assert r.err.startswith("cutpoint: error: VM name") and "letters, digits" in r.err and r.err.count("\n") == 1
    assert cutpoint("vm", "list", "--json", check=True).out.strip() == "[]"


def test_vm_add_accepts_ordinary_names(bare_qemu, tmp_path: Path) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "8M"), "da"))
    for name in ("web", "db-1.prod", "A_9", "a" * 64):
        cutpoint("vm", "add", name, "--qmp", str(vm.qmp), check=True)


@pytest.mark.parametrize("hostile", ["..", "."])
def test_catalog_row_named_dotdot_never_becomes_a_path(bare_qemu, tmp_path: Path, hostile: str) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "8M", writes=["write -P 0x11 0 1M"]), "da"))
    cutpoint("vm", "add", "good", "--qmp", str(vm.qmp), check=True)
    cutpoint("backup", "good", check=True)               # creates the vault's catalog and the work root
    db = sqlite3.connect(vault_dir() / "catalog.sqlite")
    with db:
        db.execute("INSERT INTO vms VALUES (?,?,?,?,?)", (hostile, "qmp", str(vm.qmp), "2024-01-01T00:00:00", "{}"))
    db.close()
    other = work_home() / "other" / "20990101T000000Z-live"      # another VM's backup, under way
    other.mkdir(parents=True)
    (other / "fleece-0.qcow2").write_bytes(b"overlay")
    beside = work_home().parent / "beside"                        # what '..' would reach
    (beside / "sub").mkdir(parents=True)
    (beside / "sub" / "f").write_bytes(b"keep")

    for cmd in (["backup", hostile], ["vm", "cleanup", hostile]):
        r = cutpoint(*cmd)
        assert r.code == 2, (cmd, r.out, r.err)
        assert f"VM name {hostile!r}" in r.err and r.err.count("\n") == 1, r.err
    assert (other / "fleece-0.qcow2").read_bytes() == b"overlay"
    assert (beside / "sub" / "f").read_bytes() == b"keep"
    assert cutpoint("vm", "remove", hostile).code == 0            # the bad row can still be removed


@pytest.mark.parametrize("how", ["--new-vm", "--instant"])
@pytest.mark.parametrize("name", ["..", "../x", "a/b", "-x", ".hidden", "a b"])
def test_restore_refuses_a_new_name_that_is_no_path_component(bare_qemu, tmp_path: Path, vms_home: Path,
                                                              how: str, name: str) -> None:
    backed_up_vm(bare_qemu, tmp_path)
    r = cutpoint("restore", "v", "latest", f"{how}={name}")
    assert r.code == 2, (r.out, r.err)
    assert r.err.startswith(f"cutpoint: error: VM name {name!r} is not valid") and r.err.count("\n") == 1, r.err
    assert not vms_home.exists() or list(vms_home.iterdir()) == []
    assert not (vms_home.parent / "x").exists()
    assert [v["name"] for v in json.loads(cutpoint("vm", "list", "--json", check=True).out)] == ["v"]
