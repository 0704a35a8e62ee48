"""Run the filesystem tools that parse guest data (debugfs, mtools, blkid, sfdisk) without the host around them.

A bug in a parser fed a hostile filesystem must not be root on the host. The tool must stay uid 0, because the
point's disk is a FUSE file that only its mounter (root) may open (nbdfuse mounts without ``allow_other``), so the
child, between fork and exec:

* enters new mount, network, IPC and UTS namespaces (no network, no abstract unix sockets, no host IPC);
* pivots into a fresh tmpfs root holding only ``/usr`` (read-only, no set-uid), ``/etc/ld.so.cache``,
  ``/dev/null`` and the view's directory at ``/view`` (read-only): no ``/proc``, ``/sys``, ``/run``, no other
  device, socket or file of the host, and nothing writable;
* sets ``no_new_privs`` and empties its capability bounding set, so the exec'd tool has no capabilities at all.

What it does not do: a tool still runs as uid 0 in the host's pid namespace, so it could signal host processes
(a denial of service, not a takeover). ``CUTPOINT_FILES_SANDBOX=off`` runs the tools directly, for hosts that cannot
make namespaces (containers, chroots: a root that is not a mount point cannot be made private); the default fails closed with that
hint, found by one probe per process (``unavailable()``) before any tool runs.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import UnsupportedError

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x04000000, 0x08000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
SYS_PIVOT_ROOT = 155                      # x86_64
VIEW = "/view"


def enabled() -> bool:
    return os.environ.get("CUTPOINT_FILES_SANDBOX", "on").lower() not in ("off", "0", "no")


_probed: dict[str, str | None] = {}


def unavailable() -> str | None:
    """Why this host cannot confine the tools (None: it can). Probed once per process, in a forked child that builds
    the sandbox and exits: a chrooted host (a build root, a container's rootfs) cannot make its root private."""
    if "why" not in _probed:
        _probed["why"] = _probe()
    return _probed["why"]


def _probe() -> str | None:
    with tempfile.TemporaryDirectory(prefix="cutpoint-sandbox-probe-") as d:
        view, root = Path(d, "view"), Path(d, "root")
        view.mkdir()
        root.mkdir()
        sb = Sandbox.__new__(Sandbox)
        sb.view_dir, sb.root, sb.on, sb._libc = view, root, True, ctypes.CDLL(None, use_errno=True)
        sb.writable_view = False
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                            # the child: build it, say how it went, leave
            os.close(r)
            try:
                sb._enter()
                msg = b""
            except BaseException as exc:                        # anything at all: the parent must hear of it
                msg = str(exc).encode(errors="replace") or b"failed"
            os.write(w, msg)
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            msg = f.read()
        os.waitpid(pid, 0)
    return msg.decode(errors="replace") or None


class Sandbox:
    """Tools run confined, seeing ``view_dir`` (the FUSE mount holding the disk file) as ``/view``."""

    def __init__(self, view_dir: Path, scratch: Path, *, writable_view: bool = False) -> None:
        self.view_dir = view_dir
        self.writable_view = writable_view     # a throwaway copy-on-write view (a drill's journal replay)
        self.root = scratch                    # an empty directory of ours: the new root is a tmpfs mounted on it
        self.on = enabled()
        self._libc = ctypes.CDLL(None, use_errno=True)
        if self.on and (why := unavailable()):
            raise UnsupportedError(f"cannot confine the filesystem tools on this host ({why}); set "
                                   "CUTPOINT_FILES_SANDBOX=off to run them unconfined")

    def path(self, p: Path) -> str:
        """How the tool names a file of the view."""
        if not self.on:
            return str(p)
        return f"{VIEW}/{p.relative_to(self.view_dir)}"

    def argv(self, argv: Sequence[str | bytes]) -> list[str | bytes]:
        tool = os.fsdecode(argv[0])
        found = shutil.which(tool)
        if found is None:
            raise UnsupportedError(f"{tool} is not installed; file-level recovery needs it")
        if not os.path.realpath(found).startswith("/usr/"):
            raise UnsupportedError(f"{tool} is {found}, outside /usr: the sandbox shows only /usr; install it from "
                                   "Debian or set CUTPOINT_FILES_SANDBOX=off")
        return [found, *argv[1:]]       # the name itself: mtools is one binary, told by argv[0]

    def preexec(self) -> Callable[[], None] | None:
        return self._enter if self.on else None

    # -- in the child, between fork and exec: only syscalls, no allocation-heavy Python ---------------------------

    def _call(self, what: str, rc: int) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"sandbox: {what}: {os.strerror(err)} (CUTPOINT_FILES_SANDBOX=off runs the tools "
                               "unconfined)")

    def _mount(self, src: str | None, dst: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        enc = (lambda s: s.encode() if s is not None else None)
        self._call(f"mount {dst}", self._libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags),
                                                    enc(data)))

    def _bind(self, src: str, rel: str, *, is_dir: bool, writable: bool = False) -> None:
        dst = f"{self.root}/{rel}"
        if is_dir:
            os.makedirs(dst, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.close(os.open(dst, os.O_CREAT | os.O_WRONLY, 0o644))
        self._mount(src, dst, None, MS_BIND | MS_REC)
        self._mount(None, dst, None, MS_REMOUNT | MS_BIND | (0 if writable else MS_RDONLY) | MS_NOSUID | MS_NODEV)

    def _enter(self) -> None:
        libc = self._libc
        self._call("unshare", libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS))
        self._mount(None, "/", None, MS_REC | MS_PRIVATE)
        root = str(self.root)
        self._mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
        self._bind("/usr", "usr", is_dir=True)
        for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
            if os.path.islink(f"/{link}"):
                os.symlink(target, f"{root}/{link}")
        if os.path.exists("/etc/ld.so.cache"):
            self._bind("/etc/ld.so.cache", "etc/ld.so.cache", is_dir=False)
        self._bind("/dev/null", "dev/null", is_dir=False)
        self._bind(str(self.view_dir), VIEW.lstrip("/"), is_dir=True, writable=self.writable_view)
        os.chdir(root)
        self._call("pivot_root", libc.syscall(SYS_PIVOT_ROOT, b".", b"."))
        self._call("umount old root", libc.umount2(b".", MNT_DETACH))
        os.chdir("/")
        self._mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        self._call("no_new_privs", libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        for cap in range(64):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                break                                                   # past the kernel's last capability
