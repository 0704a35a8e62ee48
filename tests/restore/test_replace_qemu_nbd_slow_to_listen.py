"""qemu-nbd creates its socket file at bind() and listens a moment later; a connect in between is refused. Replace
must wait for the listener, not fail with an nbd.Error traceback (seen under load). A qemu-nbd stand-in binds the
socket, waits, then listens and hands it to the real qemu-nbd by socket activation (LISTEN_FDS)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from cutpoint.restore.replace import _Nbd

SLOW = r'''#!/usr/bin/python3
import os, socket, sys, time
args = sys.argv[1:]
i = args.index("-k")
path = args[i + 1]
del args[i:i + 2]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
time.sleep(0.5)                       # the socket file exists, nobody listens yet
s.listen(1)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(REAL, [REAL, *args])
'''


@pytest.mark.skipif(shutil.which("qemu-nbd") is None, reason="needs qemu-nbd")
def test_replace_waits_for_a_qemu_nbd_slow_to_listen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which("qemu-nbd")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stub = bindir / "qemu-nbd"
    stub.write_text(SLOW.replace("REAL", repr(real), 1).replace("[REAL,", f"[{real!r},"))
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    img = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "1M"], check=True)
    n = _Nbd(img, "qcow2")
    try:
        n.pwrite(b"\x5a" * 4096, 0)
        assert n.pread(4096, 0) == b"\x5a" * 4096
    finally:
        n.close()
