"""A drill's filesystem checks: every filesystem on every disk of a point, read-only, whether the guest boots or not.

Each disk is shown as a file (``browse.disk_view``) to find its volumes (the whole disk, or each MBR/GPT partition);
each volume is then shown alone through nbdkit's partition filter and checked by its own tool, confined by the
sandbox like every tool that parses guest data: ``e2fsck -fn`` for ext2/3/4, ``fsck.vfat -n`` for vfat. Nothing can
write to the vault: the plugin is read-only. An ext3/4 filesystem whose journal needs recovery (a crash-consistent
point of a mounted filesystem) is what a boot would replay first, so it is checked on a throwaway view: nbdkit's
``cow`` filter keeps every write in nbdkit's own temporary overlay, e2fsck replays the journal there
(``-E journal_only``), then checks with ``-fn``; the overlay goes when nbdkit exits.

A volume whose type no checker reads (swap, LVM, an unknown one) is recorded as ``skipped`` with the type; it does
not fail the drill. A disk with no recognisable filesystem or partition table is ``skipped`` too, naming the disk.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import CutpointError
from ..vault.manifest import DiskManifest, Manifest
from ..vault.vault import Vault
from ..workdir import private_dir
from . import files as fsmod
from .browse import disk_view
from .names import terminal_safe
from .nbdserve import FileView, nbdkit_argv
from .sandbox import Sandbox

TOOL_TIMEOUT = 600.0
E2FSCK_OK = (0, 1)          # 0 clean; 1 "errors corrected" cannot happen with -n, kept for the journal replay pass


@dataclass
class FsVerdict:
    disk: str
    partition: int          # 0: the whole disk
    fstype: str
    verdict: str            # 'passed' | 'failed' | 'skipped'
    detail: str = ""        # the tool's last lines when failed, the reason when skipped

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def where(self) -> str:
        return f"disk {self.disk}" + (f" partition {self.partition}" if self.partition else " (whole disk)")


def check_point(vault: Vault, m: Manifest, key_file: Path | None = None, base: Path | None = None
                ) -> list[FsVerdict]:
    """Check every volume of every disk; views live under ``base`` (a drill's own directory) when given."""
    out: list[FsVerdict] = []
    for d in m.disks:
        with disk_view(vault, m, d, key_file, base) as v:
            try:
                vols = fsmod.volumes(v.image, v.sandbox)
            except CutpointError as exc:
                out.append(FsVerdict(d.name, 0, "", "failed", f"cannot read the partition table: {exc}"))
                continue
        if not vols:
            out.append(FsVerdict(d.name, 0, "", "skipped", "no filesystem or partition table recognised"))
        for vol in vols:
            out.append(_check_volume(vault, m, d, vol, key_file, base))
    return out


def _check_volume(vault: Vault, m: Manifest, d: DiskManifest, vol: fsmod.Volume, key_file: Path | None,
                  base: Path | None) -> FsVerdict:
    fstype = vol.fstype
    if fstype not in fsmod.SUPPORTED:
        return FsVerdict(d.name, vol.partition, fstype, "skipped", f"no checker for {fstype or 'this volume'}")
    replay = fstype in fsmod.EXT and _needs_recovery(vault, m, d, vol, key_file, base)
    with _volume_view(vault, m, d, vol, key_file, base, writable=replay) as (path, sb):
        name = sb.path(path)
        if fstype in fsmod.EXT:
            if replay:
                r = fsmod.run_tool(sb, ["e2fsck", "-E", "journal_only", "-p", name], capture_output=True,
                                   timeout=TOOL_TIMEOUT)
                if r.returncode not in E2FSCK_OK:
                    return FsVerdict(d.name, vol.partition, fstype, "failed",
                                     "journal replay failed: " + _tail(r.stdout + r.stderr))
            r = fsmod.run_tool(sb, ["e2fsck", "-fn", name], capture_output=True, timeout=TOOL_TIMEOUT)
            ok = r.returncode == 0
        else:
            r = fsmod.run_tool(sb, ["fsck.vfat", "-n", name], capture_output=True, timeout=TOOL_TIMEOUT)
            ok = r.returncode == 0
    detail = ("journal replayed on a throwaway overlay" if replay and ok else "") if ok \
        else f"{'e2fsck -fn' if fstype in fsmod.EXT else 'fsck.vfat -n'} exit {r.returncode}: " \
             + _tail(r.stdout + r.stderr)
    return FsVerdict(d.name, vol.partition, fstype, "passed" if ok else "failed", detail)


def _needs_recovery(vault: Vault, m: Manifest, d: DiskManifest, vol: fsmod.Volume, key_file: Path | None,
                    base: Path | None) -> bool:
    with _volume_view(vault, m, d, vol, key_file, base, writable=False) as (path, sb):
        r = fsmod.run_tool(sb, ["dumpe2fs", "-h", sb.path(path)], capture_output=True, timeout=TOOL_TIMEOUT)
    feats = re.search(rb"^Filesystem features:(.*)$", r.stdout, re.M)
    return bool(feats and b"needs_recovery" in feats.group(1).split())


class _volume_view:
    """One volume alone as a file (partition filter), read-only or over nbdkit's cow filter, with its sandbox."""

    def __init__(self, vault: Vault, m: Manifest, d: DiskManifest, vol: fsmod.Volume, key_file: Path | None,
                 base: Path | None, *, writable: bool) -> None:
        filters = (["cow"] if writable else []) + (["partition"] if vol.partition else [])
        fargs = [f"partition={vol.partition}"] if vol.partition else []
        args = nbdkit_argv(vault.root, m.vm, m.point, disk=d.name, key_file=key_file, filters=filters,
                           filter_args=fargs)
        if writable:
            args = [a for a in args if a != "-r"]           # the cow filter takes the writes; the plugin stays r/o
        self.base = base or private_dir("views")
        self.fv = FileView(args, self.base, writable=writable)
        self.writable = writable
        self.scratch = Path()

    def __enter__(self) -> tuple[Path, Sandbox]:
        self.base.mkdir(parents=True, exist_ok=True)
        self.fv.open()
        self.scratch = Path(tempfile.mkdtemp(prefix="sandbox-", dir=self.base))
        try:
            return self.fv.path, Sandbox(self.fv.mnt, self.scratch, writable_view=self.writable)
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self.fv.close()
        finally:
            try:
                self.scratch.rmdir()
            except OSError:
                pass


def _tail(out: bytes, n: int = 4) -> str:
    lines = [ln for ln in out.decode("utf-8", "replace").splitlines() if ln.strip()][-n:]
    return terminal_safe(" / ".join(lines)) or "(no output)"
