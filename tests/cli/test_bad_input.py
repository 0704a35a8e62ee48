"""Bad input gets one clear line naming the problem, a non-zero exit, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

from cutpoint.drivers.qmp.qmp import QmpSession
from tests.helpers import blockdev_args, cutpoint, make_image


def _one_line_error(r, code: int, *needles: str) -> None:
    assert r.code == code, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cutpoint: error: "), r.err
    for n in needles:
        assert n in lines[0], lines[0]


def test_unknown_vm() -> None:
    _one_line_error(cutpoint("backup", "nosuch"), 3, "unknown VM 'nosuch'", "cutpoint vm add")


def test_dead_qmp_socket(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()                                   # the file stays, nobody listens: a VM that died
    _one_line_error(cutpoint("vm", "add", "x", "--qmp", str(path)), 4, "refuses connections")
    _one_line_error(cutpoint("vm", "add", "x", "--qmp", str(tmp_path / "none.sock")), 4, "does not exist")
    assert json.loads(cutpoint("vm", "list", "--json", check=True).out) == []


def test_not_a_qemu(tmp_path: Path) -> None:
    path = tmp_path / "ssh.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    _one_line_error(cutpoint("vm", "add", "x", "--qmp", str(path)), 4, "not a QEMU monitor")
    srv.close()
    regular = tmp_path / "file"
    regular.write_text("x")
    _one_line_error(cutpoint("vm", "add", "x", "--qmp", str(regular)), 4, "not a unix socket")


def test_monitor_held_by_another_client(bare_qemu, tmp_path: Path) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "16M"), "da"))
    with QmpSession(vm.qmp):
        r = cutpoint("vm", "add", "x", "--qmp", str(vm.qmp))
    _one_line_error(r, 4, "another client", "holds it")
    cutpoint("vm", "add", "x", "--qmp", str(vm.qmp), check=True)   # once released, it works


def test_vm_gone_since_registration(bare_qemu, tmp_path: Path) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "16M"), "da"))
    cutpoint("vm", "add", "x", "--qmp", str(vm.qmp), check=True)
    vm.kill()
    _one_line_error(cutpoint("backup", "x"), 4, str(vm.qmp))
    assert json.loads(cutpoint("points", "x", "--json", check=True).out) == []


def test_vault_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    # no command but 'vault init' creates a vault: elsewhere a missing one is exit 3 naming 'vault init'
    _one_line_error(cutpoint("vm", "list", "--vault", str(blocker / "vault")), 3, "no cutpoint vault", "vault init")
    _one_line_error(cutpoint("vault", "init", "--no-encrypt", str(blocker / "vault")), 5, "cannot create a vault")
    _one_line_error(cutpoint("vault", "init", "--no-encrypt", "/proc/cutpoint-vault"), 5, "/proc/cutpoint-vault")


def test_unknown_point_and_existing_target(bare_qemu, tmp_path: Path) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "16M", writes=["write 0 1M"]), "da"))
    cutpoint("vm", "add", "x", "--qmp", str(vm.qmp), check=True)
    point = json.loads(cutpoint("backup", "x", "--json", check=True).out)["point"]
    _one_line_error(cutpoint("restore", "x", "nosuch", "--to", str(tmp_path / "o")), 3, "no restore point 'nosuch'")
    out = tmp_path / "o2"
    out.mkdir()
    (out / "da.raw").write_text("precious")
    _one_line_error(cutpoint("restore", "x", point, "--to", str(out)), 2, "already exists")
    assert (out / "da.raw").read_text() == "precious" and os.listdir(out) == ["da.raw"]
