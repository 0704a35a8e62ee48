"""A filesystem tool taken over by a hostile guest filesystem (simulated: the sandbox runs a Python probe in the
tool's place) must find no host to attack: no writable path, no host files or sockets, no network, no privileges."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cutpoint.restore import sandbox
from cutpoint.restore.sandbox import Sandbox

PROBE = r'''
import json, os, socket
out = {"root": sorted(os.listdir("/")), "view": open("/view/disk").read(), "net": [n for _, n in socket.if_nameindex()],
       "seen": [p for p in ("/etc/shadow", "/proc/1", "/run", "/root", "/tmp", "/dev/vda", "/sys") if os.path.exists(p)]}
def attempt(f):
    try:
        f()
        return "allowed"
    except OSError as e:
        return e.errno
out["write_view"] = attempt(lambda: open("/view/new", "w"))
out["write_root"] = attempt(lambda: open("/evil", "w"))
out["write_usr"] = attempt(lambda: open("/usr/evil", "w"))
out["setuid"] = attempt(lambda: os.setuid(1000))
out["chown"] = attempt(lambda: os.chown("/view/disk", 1000, 1000))
print(json.dumps(out))
'''


@pytest.mark.skipif(sandbox.unavailable() is not None, reason=f"no sandbox on this host: {sandbox.unavailable()}")
def test_guest_tool_compromise_is_confined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUTPOINT_FILES_SANDBOX", raising=False)
    view = tmp_path / "view"
    view.mkdir()
    (view / "disk").write_text("the point's disk")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    sb = Sandbox(view, scratch)
    assert sb.path(view / "disk") == "/view/disk"
    r = subprocess.run(sb.argv(["/usr/bin/python3", "-c", PROBE]), preexec_fn=sb.preexec(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["root"] == ["bin", "dev", "etc", "lib", "lib64", "sbin", "usr", "view"]
    assert out["view"] == "the point's disk" and out["seen"] == [] and out["net"] == ["lo"]
    assert all(out[k] != "allowed" for k in ("write_view", "write_root", "write_usr", "setuid", "chown")), out
    assert sorted(p.name for p in view.iterdir()) == ["disk"] and list(scratch.iterdir()) == []
