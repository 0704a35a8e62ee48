"""On a host that is itself chrooted (a build root, a container's rootfs) the tools' sandbox cannot be built: its root
is not a mount point, so it cannot be made private. File recovery must then fail closed before any tool runs, with
an error naming the switch that runs the tools unconfined, not a bare 'Exception occurred in preexec_fn'."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cutpoint.errors import UnsupportedError
from cutpoint.restore import sandbox
from cutpoint.restore.files import run_tool

PROBE = r'''
import sys, tempfile
from pathlib import Path
from cutpoint.errors import UnsupportedError
from cutpoint.restore.files import run_tool
from cutpoint.restore.sandbox import Sandbox
d = Path(tempfile.mkdtemp())
(d / "view").mkdir(); (d / "scratch").mkdir()
try:
    run_tool(Sandbox(d / "view", d / "scratch"), ["true"], check=True)
except UnsupportedError as exc:
    print("refused:", exc)
    sys.exit(0)
except Exception as exc:
    print("other:", type(exc).__name__, exc)
    sys.exit(1)
print("ran")
sys.exit(1)
'''


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_sandbox_on_chrooted_host_fails_closed_with_the_switch(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if sandbox.unavailable():                 # this host is itself chrooted: no need (and no way) to make one
        monkeypatch.delenv("CUTPOINT_FILES_SANDBOX", raising=False)
        (tmp_path / "view").mkdir()
        (tmp_path / "scratch").mkdir()
        with pytest.raises(UnsupportedError, match="CUTPOINT_FILES_SANDBOX=off"):
            run_tool(sandbox.Sandbox(tmp_path / "view", tmp_path / "scratch"), ["true"], check=True)
        return
    root = tmp_path / "chroot"                # a directory, not a mount point: as a debootstrap chroot
    binds = ["usr", "etc", "dev", "proc", "tmp", *sorted({Path(p).parts[1] for p in sys.path if p.startswith("/")})]
    script = ["mount --make-rprivate /"]
    for d in dict.fromkeys(binds):
        script += [f"mkdir -p {root}/{d}", f"mount --rbind /{d} {root}/{d}"]
    for link in ("bin", "sbin", "lib", "lib64"):
        if os.path.islink(f"/{link}"):
            script.append(f"ln -sfn usr/{link} {root}/{link}")
    script.append(f"exec chroot {root} {sys.executable} -c '{PROBE}'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p.startswith("/"))}
    env.pop("CUTPOINT_FILES_SANDBOX", None)
    r = subprocess.run(["unshare", "-m", "sh", "-ec", "\n".join(script)], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.startswith("refused:") and "CUTPOINT_FILES_SANDBOX=off" in r.stdout, r.stdout
