"""The vault directory is put back to an older copy of itself (same id, points this host committed since are gone):
a write is refused with one line naming the missing point and 'cutpoint vault trust'; reads warn; after 'vault trust'
the next backup works again."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import cutpoint
from tests.vault.util import backup, change, one_line_error, points, tree, two_disk_vm, vault_dir


def test_rolled_back_vault_refuses_writes(bare_qemu, tmp_path: Path) -> None:
    vm, _ = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    old = tmp_path / "old-copy"
    shutil.copytree(vault_dir(), old)
    change(vm, 0x41)
    p2 = backup()["point"]
    shutil.rmtree(vault_dir())
    shutil.copytree(old, vault_dir())                         # rolled back: p2 is gone
    before = tree(vault_dir())
    line = one_line_error(cutpoint("backup", "v"), 6, str(vault_dir()), p2, "vault trust")
    assert "rolled back" in line
    assert tree(vault_dir()) == before
    r = cutpoint("points")
    assert r.code == 0 and "WARNING" in r.err and p2 in r.err, r.err
    assert points() == [p1]
    cutpoint("vault", "trust", check=True)
    assert cutpoint("backup", "v").code == 0
    assert "WARNING" not in cutpoint("points").err


def test_own_prune_is_not_a_rollback(bare_qemu, tmp_path: Path) -> None:
    """Points this host prunes are forgotten by its memory too: no finding, and backups go on."""
    vm, _ = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    change(vm, 0x42)
    p2 = backup()["point"]
    cutpoint("prune", "v", "--keep-last", "1", check=True)
    assert points() == [p2]
    r = cutpoint("points")
    assert r.code == 0 and "WARNING" not in r.err and p1 not in r.err, r.err
    assert cutpoint("backup", "v").code == 0
