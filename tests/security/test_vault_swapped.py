"""The vault at a path this host uses is replaced by another vault (other id), or downgraded (its key gone, or its
config turned unencrypted). Writes are refused with one line naming the path and 'cutpoint vault trust'; reads of a
swapped vault go on with a warning; a downgraded vault is refused even for reads, since nothing read from it could be
authenticated; 'vault trust' accepts the change deliberately."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cutpoint.vault.vault import Vault
from tests.helpers import cutpoint
from tests.security.util import make_v2_vault
from tests.vault.util import add_vm, backup, encrypted_vault, one_line_error, tree, two_disk_vm, vault_dir


def test_swapped_vault_refuses_writes_and_warns_on_reads(bare_qemu, tmp_path: Path) -> None:
    vm, _ = two_disk_vm(bare_qemu, tmp_path)
    backup()
    shutil.rmtree(vault_dir())
    Vault.create(tmp_path / "other")                          # another vault, moved in under the same path
    shutil.move(str(tmp_path / "other"), vault_dir())
    add_vm("v", vm.qmp)
    before = tree(vault_dir())
    line = one_line_error(cutpoint("backup", "v"), 6, str(vault_dir()), "vault trust")
    assert "another vault" in line or "swapped" in line
    assert tree(vault_dir()) == before                        # nothing written
    r = cutpoint("points")
    assert r.code == 0, r.err
    assert "WARNING" in r.err and str(vault_dir()) in r.err
    r = cutpoint("vault", "trust")
    assert r.code == 0, r.err
    r = cutpoint("backup", "v", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["mode"] == "full"
    assert "WARNING" not in cutpoint("points").err


def test_downgraded_to_plain_v2_is_refused(monkeypatch, tmp_path: Path) -> None:
    encrypted_vault(monkeypatch)
    vid = json.loads((vault_dir() / "config.json").read_text())["id"]
    cutpoint("points", check=True)                            # this host has used the encrypted vault
    make_v2_vault(vault_dir(), forget=False)                  # same id, no key, nothing authenticated
    p = vault_dir() / "config.json"
    p.write_text(json.dumps({**json.loads(p.read_text()), "id": vid}))
    line = one_line_error(cutpoint("points"), 6, str(vault_dir()), "vault trust")
    assert "downgraded" in line
    one_line_error(cutpoint("backup", "v"), 6, "downgraded")


def test_key_of_an_unencrypted_vault_lost_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    cutpoint("points", check=True)
    monkeypatch.setenv("CUTPOINT_STATE", str(tmp_path / "other-host"))
    one_line_error(cutpoint("points"), 10, "vault key import")
