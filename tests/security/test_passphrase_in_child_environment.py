"""The vault passphrase never reaches a restored VM's processes: QEMU's and nbdkit's environment hold neither
$CUTPOINT_PASSPHRASE nor the passphrase itself, and nbdkit gets it through a private file it removes once read."""

from __future__ import annotations

import json
from pathlib import Path

from cutpoint.restore.launch import stop
from cutpoint.restore.nbdserve import stop_server
from tests.helpers import cutpoint
from tests.security.util import backed_up_vm
from tests.vault.util import encrypted_vault

SECRET = "s3cret-horse-battery"


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def _clean(pid: int, what: str) -> None:
    env = _environ(pid)
    assert b"CUTPOINT_PASSPHRASE" not in env, (what, env)
    assert SECRET.encode() not in env, what


def _no_secret_file_under(*roots: Path) -> None:
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file() and not p.is_symlink() and p.stat().st_size < (1 << 20):
                assert SECRET.encode() not in p.read_bytes(), p


def test_restored_processes_do_not_inherit_the_passphrase(bare_qemu, tmp_path: Path, vms_home: Path, isolated: Path,
                                                          monkeypatch) -> None:
    encrypted_vault(monkeypatch, SECRET)
    _, point = backed_up_vm(bare_qemu, tmp_path)

    r = cutpoint("restore", "v", point, "--new-vm", "n1", "--start", "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    try:
        _clean(res["pid"], "qemu of --new-vm")
    finally:
        stop(Path(res["qmp"]), res["pid"])

    pfile = tmp_path / "pass"
    pfile.write_text(SECRET + "\n")
    monkeypatch.delenv("CUTPOINT_PASSPHRASE")
    monkeypatch.setenv("CUTPOINT_PASSPHRASE_FILE", str(pfile))
    r = cutpoint("restore", "v", point, "--instant", "n2", "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    try:
        _clean(res["server_pid"], "nbdkit of --instant")
        _clean(res["pid"], "qemu of --instant")
        assert str(pfile).encode() not in _environ(res["server_pid"])
        _no_secret_file_under(isolated / "work", vms_home)
    finally:
        stop(Path(res["qmp"]), res["pid"])
        stop_server(res["server_pid"])
