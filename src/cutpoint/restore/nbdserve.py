"""Serve a restore point read-only over NBD (nbdkit + our Python plugin), and show an export as a file (nbdfuse).

Two shapes, for two lifetimes:

* ``PointServer``: a long-lived nbdkit on a unix socket, detached from the command that starts it (instant restore:
  QEMU's overlays read their backing from it until ``instant finish`` stops it).
* ``FileView``: nbdfuse runs ``nbdkit -s`` on its stdin/stdout and shows the export as one regular file in a private
  FUSE mount. Filesystem tools (debugfs, mtools, fuse2fs, blkid, sfdisk) need a file; this gives them one without
  copying the disk: each read of the file becomes an NBD read, which fetches only the chunks it overlaps. Unmounting
  ends both processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import cutpoint

from .. import pids
from ..errors import CutpointError, UnsupportedError
from ..workdir import private_dir
from . import private

PLUGIN = Path(__file__).with_name("nbdkit_plugin.py")


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise UnsupportedError(f"{tool} is not installed; this restore path needs it (Debian package {package}, "
                               "installed by scripts/install-deps)")
    return path


_passphrase_file: Path | None = None


def export_passphrase(passphrase_file: Path | None) -> None:
    """Let the NBD server (a separate process) unlock an encrypted vault the way this command did.

    The passphrase (from ``--passphrase-file``, else ``$CUTPOINT_PASSPHRASE_FILE``, else ``$CUTPOINT_PASSPHRASE``)
    is never put in nbdkit's environment, which QEMU-side tools and /proc readers of the same user see: it is
    written to a 0600 file in a fresh 0700 directory, named to the plugin (``passphrase_file=``), which reads and
    removes it as it starts; the directory is removed once nbdkit is up. A passphrase typed at a prompt cannot be
    handed on: the server then stops with the vault's own message asking for a passphrase file."""
    global _passphrase_file
    if passphrase_file is not None:
        _passphrase_file = Path(passphrase_file).expanduser().resolve()


def _secret() -> bytes | None:
    from ..vault import passphrase as pp

    env_file = os.environ.get("CUTPOINT_PASSPHRASE_FILE")
    if _passphrase_file is not None:
        return pp.from_file(_passphrase_file)
    if env_file:
        return pp.from_file(Path(env_file))
    env = os.environ.get("CUTPOINT_PASSPHRASE")
    return env.encode() if env else None


@contextmanager
def _handoff() -> Iterator[list[str]]:
    """The plugin parameter that hands nbdkit the passphrase, if this command has one (see export_passphrase)."""
    secret = _secret()
    if secret is None:
        yield []
        return
    base = private_dir("run")                                   # checked: ours, 0700, no link
    d = Path(tempfile.mkdtemp(prefix="nbdkit-", dir=base))       # 0700, a fresh name nobody could plant
    try:
        f = d / "passphrase"
        private.write(f, secret)
        yield [f"passphrase_file={f}"]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def plugin_env() -> dict[str, str]:
    """nbdkit's embedded Python must import cutpoint and its dependencies exactly as this process does; the vault's
    secrets are left out (``private.child_env``)."""
    paths = [str(Path(cutpoint.__file__).resolve().parents[1])] + [p for p in sys.path if p and os.path.isdir(p)]
    return private.child_env({"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))})


def nbdkit_argv(vault: Path, vm: str, point: str, *, disk: str | None = None, stats: Path | None = None,
                key_file: Path | None = None, filters: Sequence[str] = (), filter_args: Sequence[str] = ()
                ) -> list[str]:
    """The nbdkit arguments after the mode options: filters, the python plugin and its parameters."""
    _need("nbdkit", "nbdkit, nbdkit-plugin-python")
    argv = ["-r"] + [f"--filter={f}" for f in filters] + ["python", str(PLUGIN), f"vault={vault}", f"vm={vm}",
                                                          f"point={point}"]
    if disk is not None:
        argv.append(f"disk={disk}")
    if stats is not None:
        argv.append(f"stats={stats}")
    if key_file is not None:
        argv.append(f"key_file={key_file}")
    return argv + list(filter_args)


class PointServer:
    """nbdkit serving every disk of a point as exports d0, d1, ... on ``socket``, detached from this process."""

    def __init__(self, socket: Path, pidfile: Path, log: Path) -> None:
        self.socket = socket
        self.pidfile = pidfile
        self.log = log
        self.pid = 0

    def start(self, args: list[str], timeout: float = 30.0) -> int:
        """Start nbdkit in its own background mode: it returns once the socket is bound and the plugin ready.

        Not ``-f`` under a child process: nbdkit 1.32 in the foreground sets PR_SET_PDEATHSIG, so it would die with
        the cutpoint command that started it."""
        self.socket.unlink(missing_ok=True)
        self.pidfile.unlink(missing_ok=True)
        with os.fdopen(private.open_log(self.log), "w") as out, _handoff() as secret:
            try:
                r = subprocess.run(["nbdkit", "--unix", str(self.socket), "--pidfile", str(self.pidfile),
                                    "--log=stderr", *args, *secret], stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, env=plugin_env(), start_new_session=True,
                                   timeout=timeout, umask=private.UMASK)
            except subprocess.TimeoutExpired as exc:
                raise CutpointError(f"the NBD server for the point did not start within {timeout:.0f} s") from exc
        if r.returncode != 0:
            raise CutpointError(f"the NBD server for the point failed to start: {_tail(self.log)}")
        deadline = time.monotonic() + timeout
        while not self.pidfile.exists() or not self.pidfile.read_text().strip():
            if time.monotonic() > deadline:
                raise CutpointError(f"the NBD server for the point wrote no pidfile within {timeout:.0f} s")
            time.sleep(0.02)
        self.pid = int(self.pidfile.read_text().strip())
        return self.pid


def stop_server(pid: int, timeout: float = 10.0) -> None:
    """Stop an nbdkit started by ``PointServer`` (SIGTERM, then SIGKILL) and wait until it is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while pids.alive(pid):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        else:
            return
    raise CutpointError(f"NBD server pid {pid} did not exit")


class FileView:
    """A read-only file showing one export of nbdkit through nbdfuse, for tools that need a file."""

    def __init__(self, nbdkit_args: list[str], base: Path, *, keep: bool = False, writable: bool = False) -> None:
        self.args = nbdkit_args
        self.writable = writable         # only over nbdkit's cow filter: writes stay in nbdkit's throwaway overlay
        self.base = base
        self.keep = keep                 # leave it mounted when the context ends (cutpoint mount)
        self.mnt = Path()
        self.path = Path()
        self.proc: subprocess.Popen[bytes] | None = None

    def open(self, timeout: float = 30.0) -> "FileView":
        _need("nbdfuse", "libnbd-bin")
        _need("fusermount3", "fuse3")
        self.base.mkdir(parents=True, exist_ok=True)
        self.mnt = Path(tempfile.mkdtemp(prefix="view-", dir=self.base))
        self.path = self.mnt / "disk"
        pidfile = self.mnt.with_name(self.mnt.name + ".pid")
        log = self.mnt.with_name(self.mnt.name + ".log")
        with _handoff() as secret:
            with os.fdopen(private.open_log(log), "w") as out:
                ro = [] if self.writable else ["-r"]
                self.proc = subprocess.Popen(["nbdfuse", *ro, "-P", str(pidfile), str(self.path), "--command",
                                              "nbdkit", "-s", "--exit-with-parent", *self.args, *secret],
                                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                             env=plugin_env(), start_new_session=self.keep)
            deadline = time.monotonic() + timeout
            while not pidfile.exists():        # nbdfuse writes it once connected: the plugin has read the secret
                if self.proc.poll() is not None:
                    err = _tail(log)
                    self._remove()
                    raise UnsupportedError(f"cannot show the point's disk as a file through FUSE (nbdfuse): {err}")
                if time.monotonic() > deadline:
                    self.close()
                    raise CutpointError(f"nbdfuse did not come up within {timeout:.0f} s: {_tail(log)}")
                time.sleep(0.02)
        return self

    def close(self) -> None:
        unmount(self.mnt)
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._remove()

    def _remove(self) -> None:
        for p in (self.mnt.with_name(self.mnt.name + ".pid"), self.mnt.with_name(self.mnt.name + ".log")):
            p.unlink(missing_ok=True)
        try:
            self.mnt.rmdir()
        except OSError:
            pass

    def __enter__(self) -> "FileView":
        return self.open()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if not self.keep or et is not None:
            self.close()


def unmount(mnt: Path, timeout: float = 10.0) -> None:
    """Unmount a FUSE mount (the FUSE daemon then exits); waits while it is busy for a moment."""
    deadline = time.monotonic() + timeout
    while os.path.ismount(mnt):
        r = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, text=True)
        if r.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise CutpointError(f"cannot unmount {mnt}: {r.stderr.strip()}")
        time.sleep(0.1)


def _tail(log: Path, n: int = 4) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-n:]
    except OSError:
        return "(no output)"
    return " / ".join(lines) or "(no output)"
