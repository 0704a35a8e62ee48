"""File-level recovery: list and fetch files from a point's ext2/3/4 or vfat filesystems without restoring a disk.

The point's disk is served by nbdkit (our plugin) and shown as a file by nbdfuse (``nbdserve.FileView``); well-kept
tools then parse the filesystem, confined by ``sandbox``: ``blkid``/``sfdisk`` find partitions (MBR or GPT) and
filesystem types, e2fsprogs' ``debugfs`` (catastrophic mode: no bitmaps read) lists (``ls -l <inode>``) and streams
(``cat <inode>``) ext2/3/4, mtools' ``mdir``/``mcopy ... -`` do vfat. Partitions are addressed by byte offset
(``file?offset=N`` for debugfs, ``file@@N`` for mtools), so nothing is copied. Every name is the guest's raw bytes;
what reaches the host is written by ``extract`` alone (a guest filesystem is hostile input: see docs/design.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import CutpointError, NotFoundError, UnsupportedError, UsageError
from .extract import Node, Report, extract
from .names import escape, split_path, terminal_safe
from .sandbox import Sandbox

EXT = ("ext2", "ext3", "ext4")
FAT = ("vfat", "msdos")
SUPPORTED = EXT + FAT
MDIR_LINE = re.compile(rb"^(\S+)(?:\s+(\S{1,3}))?\s+(<DIR>|\d+)\s+(\S+)\s+(\S+)\s?(.*)$")
LS_LINE = re.compile(rb"^.\s*(?P<ino>\d+).\s+(?P<mode>[0-7]+)\s+\(\d+\)\s+-?\d+\s+-?\d+\s+(?P<size>\d+)\s+"
                     rb"\d+-\w{3}-\d+ \d\d:\d\d (?P<name>.*)$")
FAT_GLOB = re.compile(rb"[*?\[]")
DEBUGFS_ESC = re.compile(rb"\\x([0-9a-fA-F]{2})")
STAT_SECTION = re.compile(rb"^debugfs: stat (?P<ref><\d+>)\n(?:(?!debugfs: ).*\n)*?.*Blockcount: (?P<blocks>\d+)",
                          re.M)
Entry = Node              # what listings return (``to_json``: name escaped, name_b64 exact)


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


def run_tool(sb: Sandbox | None, argv: list[str | bytes], **kw: Any) -> subprocess.CompletedProcess[Any]:
    """A filesystem tool, confined by ``sb`` (``restore.sandbox``) when given; stdin is closed unless input is."""
    if "input" not in kw:
        kw["stdin"] = subprocess.DEVNULL
    if sb is None:
        return subprocess.run(argv, **kw)
    return subprocess.run(sb.argv(argv), preexec_fn=sb.preexec(), **kw)


def volumes(image: Path, sb: Sandbox | None = None) -> list[Volume]:
    """The disk's filesystems: the whole disk if it holds one, else each partition of its MBR/GPT table."""
    size = image.stat().st_size
    whole = _blkid(image, 0, sb)
    if whole.get("TYPE"):
        return [Volume(0, 0, size, whole["TYPE"], whole.get("LABEL", ""))]
    if not whole.get("PTTYPE"):
        return []
    name = sb.path(image) if sb else str(image)
    r = run_tool(sb, ["sfdisk", "-J", name], capture_output=True, text=True, errors="replace")
    if r.returncode != 0:
        raise CutpointError(f"cannot read the partition table: {r.stderr.strip()}")
    table = json.loads(r.stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    out = []
    for i, p in enumerate(table.get("partitions", []), 1):
        suffix = str(p.get("node", ""))[len(name):].lstrip("p")      # sfdisk names them <file>N
        num = int(suffix) if suffix.isdigit() else i
        off = int(p["start"]) * sector
        info = _blkid(image, off, sb)
        out.append(Volume(num, off, int(p["size"]) * sector, info.get("TYPE", ""), info.get("LABEL", "")))
    return out


def _blkid(image: Path, offset: int, sb: Sandbox | None) -> dict[str, str]:
    """blkid's view of the filesystem at ``offset``; values (a guest-chosen LABEL) escaped for output."""
    r = run_tool(sb, ["blkid", "-p", "-o", "export", "--offset", str(offset), sb.path(image) if sb else str(image)],
                 capture_output=True)
    text = r.stdout.decode("utf-8", "surrogateescape")
    return {k: terminal_safe(v) for k, v in (line.split("=", 1) for line in text.splitlines() if "=" in line)}


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
    """One filesystem on a view file, read only through its tools; every name it returns is the guest's raw bytes.

    ext2/3/4 entries are addressed by inode (``<N>``), so no guest name is ever put on a debugfs command line;
    ``ls -l`` is parsed because it escapes every byte below 32, from 127 and ``\\`` (``ls -p`` prints names raw, so a
    name holding a newline could forge entries). vfat entries are addressed by their path for mtools."""

    def __init__(self, image: Path, vol: Volume, sb: Sandbox | None = None) -> None:
        self.image = image
        self.sb = sb
        self.vol = vol
        self.ext = vol.fstype in EXT

    # -- listing -------------------------------------------------------------------------------------------------

    def root(self) -> Node:
        if self.ext:
            return Node(b"/", "dir", 0, 0o040755, b"<2>", ino=2)
        return Node(b"/", "dir", 0, 0o040755, b"::/", show_mode=False)

    def resolve(self, path: str) -> Node:
        """The entry at a user's guest path (escaped form accepted); symlinks on the way are not followed."""
        node = self.root()
        walked = ""
        comps = split_path(path)
        full = "/" + "/".join(escape(c) for c in comps)
        for comp in comps:
            if node.type != "dir":
                kind = "a symlink (give the path it points to)" if node.type == "link" else f"a {node.type}"
                raise NotFoundError(f"{terminal_safe(walked)} is {kind}, not a directory, in the "
                                    f"{self.vol.fstype} filesystem")
            walked += "/" + escape(comp)
            match = self._find(self.children(node), comp)
            if match is None:
                where = "" if walked == full else f" ({walked} is missing)"
                raise NotFoundError(f"{full} does not exist in the {self.vol.fstype} filesystem{where}")
            node = match
        return node

    def ls(self, path: str) -> tuple[Node, list[Node]]:
        """(the entry at ``path``, its children when it is a directory, without '.' and '..')."""
        node = self.resolve(path)
        if node.type != "dir":
            return node, []
        return node, [c for c in self.children(node) if c.raw not in (b".", b"..")]

    def _find(self, entries: list[Node], name: bytes) -> Node | None:
        for e in entries:
            if e.raw == name:
                return e
        if not self.ext:
            low = name.decode("utf-8", "surrogateescape").casefold()
            for e in entries:
                if e.raw.decode("utf-8", "surrogateescape").casefold() == low:
                    return e
        return None

    def children(self, node: Node) -> list[Node]:
        return self._ext_ls(node) if self.ext else self._fat_ls(node)

    def _ext_ls(self, node: Node) -> list[Node]:
        r = self._debugfs(b"ls -l " + node.ref)
        err = r.stderr.decode("utf-8", "replace")
        if "not found" in err or "not a directory" in err.lower():
            raise NotFoundError(f"{node.name} cannot be listed in the {self.vol.fstype} filesystem")
        out = []
        for line in r.stdout.splitlines():
            m = LS_LINE.match(line)
            if not m or int(m["ino"]) == 0:
                continue
            mode = int(m["mode"], 8)
            kind = {0o04: "dir", 0o10: "file", 0o12: "link"}.get(mode >> 12, "other")
            raw = DEBUGFS_ESC.sub(lambda e: bytes([int(e[1], 16)]), m["name"])
            out.append(Node(raw, kind, int(m["size"]), mode, b"<%d>" % int(m["ino"]), ino=int(m["ino"])))
        return out

    def _fat_ls(self, node: Node) -> list[Node]:
        r = self._mtools("mdir", "-a", node.ref)
        if r.returncode != 0:
            err = r.stderr.decode("utf-8", "replace")
            if "not found" in err or "No such" in err:
                raise NotFoundError(f"{node.name} does not exist in the {self.vol.fstype} filesystem")
            raise CutpointError(f"mdir failed: {terminal_safe(err.strip())}")
        out = []
        listing = False
        for line in r.stdout.splitlines():
            if line.startswith(b"Directory for"):
                listing = True
                continue
            m = MDIR_LINE.match(line) if listing else None
            if not m:
                continue
            short, ext, size, _, _, long = m.groups()
            raw = long.strip() or (short + (b"." + ext if ext else b""))
            is_dir = size == b"<DIR>"
            short_name = short + (b"." + ext if ext else b"")
            use = short_name if FAT_GLOB.search(raw) and not FAT_GLOB.search(short_name) else raw
            ref = node.ref.rstrip(b"/") + b"/" + use              # mtools globs '*?[' in names
            out.append(Node(raw, "dir" if is_dir else "file", 0 if is_dir else int(size),
                            0o040755 if is_dir else 0o100644, ref, show_mode=False))
        return out

    # -- reading (extract.Source) --------------------------------------------------------------------------------

    def allocated(self, nodes: list[Node]) -> dict[bytes, int]:
        """Bytes each file occupies in the guest (``Blockcount``), for the free-space check; vfat has no holes."""
        if not self.ext or not nodes:
            return {}
        script = b"".join(b"stat " + n.ref + b"\n" for n in nodes)
        r = run_tool(self.sb, ["debugfs", "-c", "-f", "-", self._target()], input=script, capture_output=True)
        out: dict[bytes, int] = {}
        for m in STAT_SECTION.finditer(r.stdout):
            out.setdefault(m["ref"], int(m["blocks"]) * 512)
        return out

    def readlink(self, node: Node) -> bytes:
        """A symlink's target: a fast link's from the end of ``stat`` (exactly ``size`` bytes), else its data."""
        out = self._debugfs(b"stat " + node.ref).stdout
        pre, post = b'Fast link dest: "', b'"\n'
        at = len(out) - len(post) - node.size - len(pre)
        if out.endswith(post) and at >= 0 and out[at:at + len(pre)] == pre:
            return out[at + len(pre):len(out) - len(post)]
        with self.open_stream(node) as s:
            data = s.read(node.size + 1)
        if len(data) != node.size:
            raise CutpointError(f"cannot read the target of symlink {terminal_safe(node.name)}")
        return data

    @contextmanager
    def open_stream(self, node: Node) -> Iterator[IO[bytes]]:
        """The file's bytes, streamed from ``debugfs cat`` or ``mcopy ... -`` (never written to a path by a tool)."""
        argv: list[str | bytes]
        env: dict[str, str] | None
        if self.ext:
            argv = ["debugfs", "-c", "-R", b"cat " + node.ref, self._target()]
            env = None
        else:
            argv = ["mcopy", "-n", "-i", self._target(), node.ref, "-"]
            env = _mtools_env()
        with tempfile.TemporaryFile() as errf:
            if self.sb is not None:
                argv, pre = self.sb.argv(argv), self.sb.preexec()
            else:
                pre = None
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf, env=env,
                                    preexec_fn=pre)
            assert proc.stdout is not None
            ok = False
            try:
                yield proc.stdout
                ok = True
            finally:
                proc.stdout.close()
                if proc.poll() is None and not ok:
                    proc.kill()
                rc = proc.wait()
            errf.seek(0)
            errs = [ln for ln in errf.read().decode("utf-8", "replace").splitlines()
                    if ln.strip() and "catastrophic" not in ln and not ln.startswith("debugfs ")]
            if errs or (rc != 0 and not self.ext):
                raise CutpointError(f"could not read {terminal_safe(node.name)} from the {self.vol.fstype} "
                                    f"filesystem: {terminal_safe(' / '.join(errs) or f'exit {rc}')}")

    # -- fetching ------------------------------------------------------------------------------------------------

    def extract(self, path: str, to: Path, *, max_bytes: int | None = None,
                warn: Callable[[str], None] | None = None) -> Report:
        """Copy file, directory or symlink ``path`` into directory ``to`` safely (see ``extract``)."""
        node = self.resolve(path)
        if node.raw == b"/":
            raise UsageError("give a file or directory inside the filesystem, not its root")
        parent = "/".join(escape(c) for c in split_path(path)[:-1])
        return extract(self, node, to, max_bytes=max_bytes, warn=warn, guest_parent="/" + parent)

    def get(self, path: str, to: Path, **kw: Any) -> tuple[Path, list[tuple[str, int]]]:
        """``extract``, returning (the new path, (file, size) pairs) as before."""
        rep = self.extract(path, to, **kw)
        return rep.final, rep.files

    # -- tools ---------------------------------------------------------------------------------------------------

    def _target(self) -> str:
        image = self.sb.path(self.image) if self.sb else str(self.image)
        if self.ext:
            return f"{image}?offset={self.vol.offset}" if self.vol.offset else image
        return f"{image}@@{self.vol.offset}" if self.vol.offset else image

    def _debugfs(self, cmd: bytes) -> subprocess.CompletedProcess[bytes]:
        return run_tool(self.sb, ["debugfs", "-c", "-R", cmd, self._target()], capture_output=True)

    def _mtools(self, tool: str, *args: bytes | str) -> subprocess.CompletedProcess[bytes]:
        return run_tool(self.sb, [tool, "-i", self._target(), *args], capture_output=True, env=_mtools_env())


def _mtools_env() -> dict[str, str]:
    """UTF-8, so that mtools prints long names as they are and takes them back (under C it prints '_')."""
    return dict(os.environ, MTOOLS_SKIP_CHECK="1", MTOOLSRC="/dev/null", LC_ALL="C.UTF-8")
