"""A wrong passphrase (or none) on an encrypted vault: every command stops with one line and a non-zero exit before
anything is written, in the vault or in QEMU; the right passphrase, given by file or environment as a scheduled
backup would, still works afterwards."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import cutpoint, qemu_state
from tests.vault.util import (backup, encrypted_vault, one_line_error, restored, snapshot, tree, two_disk_vm,
                              vault_dir, verified)


def test_wrong_passphrase(bare_qemu, tmp_path: Path, monkeypatch) -> None:
    encrypted_vault(monkeypatch, "right one")
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    before, qemu_before = tree(vault_dir()), qemu_state(vm.qmp)

    monkeypatch.setenv("CUTPOINT_PASSPHRASE", "wrong one")
    out = tmp_path / "r"
    for args in (["backup", "v"], ["restore", "v", p1, "--to", str(out)], ["verify", "--read-data"]):
        one_line_error(cutpoint(*args), 10, "wrong passphrase")
    monkeypatch.delenv("CUTPOINT_PASSPHRASE")
    one_line_error(cutpoint("backup", "v"), 2, "needs a passphrase", "--passphrase-file")
    pw = tmp_path / "pw"
    pw.write_text("wrong one\n")
    one_line_error(cutpoint("backup", "v", "--passphrase-file", str(pw)), 10, "wrong passphrase")

    assert tree(vault_dir()) == before                  # nothing written: same files, sizes and mtimes
    assert qemu_state(vm.qmp) == qemu_before            # and QEMU never touched (no cut, no bitmap)
    assert not out.exists()

    pw.write_text("right one\n")
    monkeypatch.setenv("CUTPOINT_PASSPHRASE_FILE", str(pw))
    cutpoint("backup", "v", check=True)
    assert verified().ok
    assert restored(p1, tmp_path / "r1") == at_p1
