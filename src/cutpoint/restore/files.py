"""File-level recovery: list and fetch files from a point's ext2/3/4 or vfat filesystems without restoring a disk.

The point's disk is served by nbdkit (our plugin) and shown as a file by nbdfuse (``nbdserve.FileView``); well-kept
tools then do all the filesystem work on that file: ``blkid``/``sfdisk`` find partitions (MBR or GPT) and filesystem
types, e2fsprogs' ``debugfs`` (catastrophic mode: no bitmaps read) lists and dumps ext2/3/4, mtools' ``mdir``/
``mcopy`` do vfat. Partitions are addressed by byte offset (``file?offset=N`` for debugfs, ``file@@N`` for mtools),
so nothing is copied. Every read of the view fetches only the chunks it overlaps, counted in ``chunks_read``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import CutpointError, NotFoundError, UnsupportedError, UsageError

EXT = ("ext2", "ext3", "ext4")
FAT = ("vfat", "msdos")
SUPPORTED = EXT + FAT
MDIR_LINE = re.compile(r"^(\S+)(?:\s+(\S{1,3}))?\s+(<DIR>|\d+)\s+(\S+)\s+(\S+)\s?(.*)$")


@dataclass
class Volume:
    """A filesystem candidate on a disk: the whole disk (partition 0) or one partition."""

    partition: int
    offset: int
    size: int
    fstype: str           # blkid's TYPE ('' when blkid recognises nothing)
    label: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Entry:
    name: str
    type: str             # dir, file, link, other
    size: int
    mode: str = ""


def volumes(image: Path) -> list[Volume]:
    """The disk's filesystems: the whole disk if it holds one, else each partition of its MBR/GPT table."""
    size = image.stat().st_size
    whole = _blkid(image, 0)
    if whole.get("TYPE"):
        return [Volume(0, 0, size, whole["TYPE"], whole.get("LABEL", ""))]
    if not whole.get("PTTYPE"):
        return []
    r = subprocess.run(["sfdisk", "-J", str(image)], capture_output=True, text=True)
    if r.returncode != 0:
        raise CutpointError(f"cannot read the partition table: {r.stderr.strip()}")
    table = json.loads(r.stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    out = []
    for i, p in enumerate(table.get("partitions", []), 1):
        suffix = str(p.get("node", ""))[len(str(image)):].lstrip("p")      # sfdisk names them <file>N
        num = int(suffix) if suffix.isdigit() else i
        off = int(p["start"]) * sector
        info = _blkid(image, off)
        out.append(Volume(num, off, int(p["size"]) * sector, info.get("TYPE", ""), info.get("LABEL", "")))
    return out


def _blkid(image: Path, offset: int) -> dict[str, str]:
    r = subprocess.run(["blkid", "-p", "-o", "export", "--offset", str(offset), str(image)], capture_output=True,
                       text=True)
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def pick(vols: list[Volume], part: int | None, disk: str) -> Volume:
    """The volume to use: ``part`` if given, else the whole-disk filesystem, else the first supported partition."""
    if not vols:
        raise UnsupportedError(f"disk {disk} holds no filesystem or partition table that blkid recognises; "
                               f"file-level recovery reads {', '.join(SUPPORTED)}")
    if part is not None:
        match = [v for v in vols if v.partition == part]
        if not match:
            raise NotFoundError(f"disk {disk} has no partition {part} (it has: "
                                f"{', '.join(str(v.partition) for v in vols)})")
        vol = match[0]
    else:
        vol = next((v for v in vols if v.fstype in SUPPORTED), vols[0])
    if vol.fstype not in SUPPORTED:
        where = f"partition {vol.partition}" if vol.partition else "the whole disk"
        raise UnsupportedError(f"{where} of disk {disk} holds {vol.fstype or 'no recognised filesystem'}; "
                               f"file-level recovery reads {', '.join(SUPPORTED)}")
    return vol


class Fs:
    """One filesystem on a view file; paths are absolute guest paths such as ``/etc/hostname``."""

    def __init__(self, image: Path, vol: Volume) -> None:
        self.image = image
        self.vol = vol
        self.ext = vol.fstype in EXT

    # -- listing -------------------------------------------------------------------------------------------------

    def ls(self, path: str) -> tuple[Entry, list[Entry]]:
        """(the entry at ``path``, its children when it is a directory)."""
        p = _norm(path)
        if str(p) == "/":
            return Entry("/", "dir", 0), self._list_dir("/")
        parent = self._list_dir(str(p.parent), missing=str(p))
        entry = self._find(parent, p.name)
        if entry is None:
            raise NotFoundError(f"{p} does not exist in the {self.vol.fstype} filesystem")
        return entry, self._list_dir(str(p)) if entry.type == "dir" else []

    def _find(self, entries: list[Entry], name: str) -> Entry | None:
        for e in entries:
            if e.name == name or (not self.ext and e.name.lower() == name.lower()):
                return e
        return None

    def _list_dir(self, path: str, missing: str = "") -> list[Entry]:
        return self._ext_ls(path, missing or path) if self.ext else self._fat_ls(path, missing or path)

    def _ext_ls(self, path: str, missing: str) -> list[Entry]:
        out, err = self._debugfs(f'ls -p "{path}"')
        if "not found" in err or "not a directory" in err:
            raise NotFoundError(f"{missing} does not exist in the {self.vol.fstype} filesystem")
        entries = []
        for line in out.splitlines():
            parts = line.split("/")
            if len(parts) < 7 or parts[5] in (".", ".."):
                continue
            mode = int(parts[2], 8)
            kind = {0o04: "dir", 0o10: "file", 0o12: "link"}.get(mode >> 12, "other")
            entries.append(Entry("/".join(parts[5:-2]), kind, int(parts[-2] or 0), f"{mode & 0o7777:04o}"))
        return entries

    def _fat_ls(self, path: str, missing: str) -> list[Entry]:
        r = self._mtools("mdir", "-a", f"::{path}")
        if r.returncode != 0:
            if "not found" in r.stderr or "No such" in r.stderr:
                raise NotFoundError(f"{missing} does not exist in the {self.vol.fstype} filesystem")
            raise CutpointError(f"mdir failed: {r.stderr.strip()}")
        entries = []
        listing = False
        for line in r.stdout.splitlines():
            if line.startswith("Directory for"):
                listing = True
                continue
            m = MDIR_LINE.match(line) if listing else None
            if not m:
                continue
            short, ext, size, _, _, long = m.groups()
            name = long.strip() or (short + ("." + ext if ext else ""))
            if name in (".", ".."):
                continue
            is_dir = size == "<DIR>"
            entries.append(Entry(name, "dir" if is_dir else "file", 0 if is_dir else int(size)))
        return entries

    # -- fetching ------------------------------------------------------------------------------------------------

    def get(self, path: str, to: Path) -> tuple[Path, list[tuple[str, int]]]:
        """Copy file or directory ``path`` into directory ``to``; returns the new path and (file, size) pairs.

        The copy is made under a temporary name in ``to`` and renamed when whole, so a failure leaves nothing."""
        entry, _ = self.ls(path)
        if entry.name == "/":
            raise UsageError("give a file or directory inside the filesystem, not its root")
        if entry.type not in ("file", "dir"):
            raise UnsupportedError(f"{path} is a {entry.type}, not a file or directory")
        final = to / entry.name
        if final.exists() or final.is_symlink():
            raise UsageError(f"{final} already exists; choose another --to directory")
        to.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.partial-", dir=to))
        try:
            src = str(_norm(path))
            if self.ext:
                cmd = f'rdump "{src}" "{tmp}"' if entry.type == "dir" else f'dump -p "{src}" "{tmp / entry.name}"'
                _, err = self._debugfs(cmd)
                errs = [ln for ln in err.splitlines() if ln.strip() and "catastrophic" not in ln
                        and not ln.startswith("debugfs ")]
                if errs:
                    raise CutpointError(f"debugfs could not copy {src}: {' / '.join(errs)}")
            else:
                r = self._mtools("mcopy", "-s", "-m", "-n", f"::{src}", str(tmp) + "/")
                if r.returncode != 0:
                    raise CutpointError(f"mcopy could not copy {src}: {r.stderr.strip()}")
            produced = [p for p in tmp.iterdir()]
            if len(produced) != 1:
                raise CutpointError(f"copying {src} produced {len(produced)} entries, expected 1")
            os.replace(produced[0], final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        files = [(str(final), final.stat().st_size)] if final.is_file() else \
            [(str(p), p.stat().st_size) for p in sorted(final.rglob("*")) if p.is_file()]
        return final, files

    # -- tools ---------------------------------------------------------------------------------------------------

    def _debugfs(self, cmd: str) -> tuple[str, str]:
        target = f"{self.image}?offset={self.vol.offset}" if self.vol.offset else str(self.image)
        r = subprocess.run(["debugfs", "-c", "-R", cmd, target], capture_output=True, text=True)
        return r.stdout, r.stderr

    def _mtools(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        target = f"{self.image}@@{self.vol.offset}" if self.vol.offset else str(self.image)
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1", MTOOLSRC="/dev/null", LC_ALL="C")
        return subprocess.run([tool, "-i", target, *args], capture_output=True, text=True, env=env)


def _norm(path: str) -> PurePosixPath:
    p = PurePosixPath("/" + path.strip("/"))
    if ".." in p.parts:
        raise UsageError(f"path {path!r} must not contain '..'")
    if any(c in str(p) for c in '"\n'):
        raise UsageError(f"path {path!r} contains a character cutpoint cannot pass to debugfs")
    return p
