"""Rewrite a captured QEMU command line so that it starts a *second* VM from restored disks, next to the original.

What changes, and why:

* disks: each backed-up disk's format node gets the restored image (new path, new format); protocol nodes beneath it
  are replaced, filters above it kept. ``-blockdev`` (keyval or JSON), ``-drive`` and ``-hda``-style images are all
  handled; a disk found on the point but not on the command line (hot-plugged) is appended with its device model.
* identity: ``-name``, ``-uuid`` and every NIC's MAC address are new, so both VMs can share a network and a
  management tool can tell them apart.
* files and endpoints: monitor/serial/chardev sockets and files, the pidfile and ``-D`` move into the new VM's
  directory; VNC listens on a unix socket there; host port forwards, ``-gdb``/``-s``, ``-incoming`` and ``-loadvm``
  are dropped (each with a warning), since they would clash with the original or do not apply to restored disks.
* disks excluded from the backup have no restored image: their ``-drive``/``-blockdev`` chain and device are
  dropped (with a warning), so the new VM never opens the original's disk.
* the result is checked (``argcheck.py``): the saved configuration is vault data, so the binary is the trusted
  ``qemu-system-*`` and every option is allowlisted, with paths made absolute; QEMU runs in the new VM's directory.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from . import allowlist, argcheck
from .qemuopts import (Items, Opt, join_argv, kv_drop, kv_get, kv_set, parse_kv, render_kv, split_argv,
                       split_first)

FILTER_DRIVERS = {"throttle", "copy-on-read", "preallocate", "blkdebug", "blkverify", "compress", "copy-before-write"}
FORMAT_KEEP = {"node-name", "driver", "file", "read-only", "auto-read-only", "force-share", "discard", "detect-zeroes"}
PROTO_KEEP = {"node-name", "driver", "filename", "read-only", "auto-read-only", "force-share", "discard",
              "detect-zeroes", "locking", "aio", "aio-max-batch", "drop-cache"}
NIC_PREFIXES = ("virtio-net", "e1000", "rtl8139", "vmxnet3", "ne2k", "pcnet", "i8255", "usb-net", "tulip", "sungem")
HD_OPTS = {"hda": 0, "hdb": 1, "hdc": 2, "hdd": 3}
SUN_PATH_MAX = 107


@dataclass
class DiskTarget:
    """One backed-up disk and the image that replaces it."""

    name: str
    node: str
    device: str
    filename: str
    path: Path
    fmt: str
    model: str = ""


@dataclass
class Rewritten:
    argv: list[str]
    cwd: str
    qmp: Path
    pidfile: Path
    daemonize: bool
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"argv": self.argv, "cwd": self.cwd, "qmp": str(self.qmp), "pidfile": str(self.pidfile),
                "daemonize": self.daemonize, "warnings": self.warnings}

    def script(self) -> str:
        return ("#!/bin/sh\n# Starts the VM restored by cutpoint (see vm.json beside this file).\numask 077\n"
                f"cd {shlex.quote(self.cwd)} || exit 1\nexec {shlex.join(self.argv)}\n")


def new_mac() -> str:
    """A random MAC in QEMU's 52:54:00 range (locally administered), different from QEMU's default 52:54:00:12:34:5x."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


class _Rewriter:
    def __init__(self, argv: list[str], cwd: str, name: str, vmdir: Path, disks: list[DiskTarget],
                 excluded: dict[str, str]) -> None:
        self.cwd = cwd
        self.excluded = excluded              # name -> image file ('' when unknown) of disks left out of the point
        self.name = name
        self.dir = vmdir
        self.disks = disks
        self.warnings: list[str] = []
        self.paths: dict[str, Path] = {}      # old absolute path -> new path
        self.used: set[str] = {"qemu.pid", "qemu.log", "vm.json", "start.sh"} | {d.path.name for d in disks}
        self.binary, self.opts = split_argv(argv)
        self.found: set[str] = set()

    # -- paths ---------------------------------------------------------------------------------------------------

    def abs(self, p: str) -> str:
        return os.path.normpath(os.path.join(self.cwd, p))

    def moved(self, old: str, default: str, socket: bool = False) -> str:
        """The new VM's path for a file or socket of the original: same base name, in the new VM's directory."""
        key = self.abs(old) if old else f"<{default}>"
        if key in self.paths:
            return str(self.paths[key])
        base = os.path.basename(old) or default
        stem, dot, ext = base.partition(".")
        n, cand = 1, base
        while cand in self.used:
            n += 1
            cand = f"{stem}-{n}{dot}{ext}"
        self.used.add(cand)
        new = self.dir / cand
        if socket and len(str(new)) > SUN_PATH_MAX:
            raise UsageError(f"socket path {new} is longer than {SUN_PATH_MAX} bytes; restore into a shorter "
                             "directory (--to)")
        self.paths[key] = new
        return str(new)

    # -- disks ---------------------------------------------------------------------------------------------------

    def disk_for_drive(self, items: Items) -> DiskTarget | None:
        did = kv_get(items, "id")
        f = kv_get(items, "file") or kv_get(items, "file.filename")
        for d in self.disks:
            if (did and did in (d.device, d.name)) or (f and d.filename and self.abs(f) == self.abs(d.filename)):
                return d
        return None

    def drop_excluded(self) -> None:
        """Remove excluded disks: their device, their -drive (or -hda ...), and their -blockdev node with the nodes
        beneath it. A disk is found by its name (drive id, node name, device id) or its image file; one that stays
        on the command line is an error, never a new VM that opens the original's disk."""
        if not self.excluded:
            return
        files = {self.abs(f) for f in self.excluded.values() if f}
        backends = set(self.excluded)
        parsed = [(o, _parse(o.arg or "") if o.name in ("blockdev", "drive", "device") else None) for o in self.opts]
        for o, data in parsed:
            if o.name == "device" and _get(data, "id") in self.excluded and _get(data, "drive"):
                backends.add(_get(data, "drive"))
            elif o.name == "drive" and self.abs(str(_get(data, "file") or "")) in files and _get(data, "id"):
                backends.add(_get(data, "id"))
        nodes = {_get(d, "node-name"): d for o, d in parsed if o.name == "blockdev" and _get(d, "node-name")}
        gone: set[str] = set()
        stack = [b for b in backends if b in nodes]
        while stack:
            n = stack.pop()
            if n not in gone:
                gone.add(n)
                stack += [c for c in (_get(nodes[n], "file"), _get(nodes[n], "backing"))
                          if isinstance(c, str) and c in nodes]

        def excluded(o: Opt, data: Any) -> bool:
            if o.name == "drive":
                return _get(data, "id") in backends or self.abs(str(_get(data, "file") or "")) in files
            if o.name == "blockdev":
                return _get(data, "node-name") in gone
            if o.name == "device":
                return _get(data, "drive") in backends or _get(data, "id") in self.excluded
            return (o.name in HD_OPTS or o.name == "") and self.abs(o.arg or "") in files

        keep = [o for o, data in parsed if not excluded(o, data)]
        if len(keep) < len(self.opts):
            self.warnings.append(f"disk(s) {', '.join(sorted(self.excluded))} were excluded from the backup: the "
                                 "new VM does not have them")
        self.opts = keep
        left = sorted(f for f in files if any(f in (o.arg or "") for o in keep))
        if left:
            raise UsageError(f"the captured command line still opens {', '.join(left)}, a disk excluded from the "
                             "backup, and cutpoint cannot tell how to leave it out; restore the disks with --to DIR "
                             "and start the VM yourself")

    def rewrite_drive(self, items: Items) -> None:
        d = self.disk_for_drive(items)
        if d is None or d.name in self.found:
            return
        self.found.add(d.name)
        kv_drop(items, lambda k: k.startswith(("file.", "backing")) or k in ("driver", "offset", "size"))
        kv_set(items, "file", str(d.path))
        kv_set(items, "format", d.fmt)

    def rewrite_blockdevs(self, idx: list[int]) -> None:
        """Rewrite the -blockdev options at ``idx`` in place: format nodes of disks and the protocol nodes beneath."""
        nodes: dict[str, tuple[int, Any]] = {}
        for i in idx:
            arg = self.opts[i].arg or ""
            data: Any = _parse(arg)
            nn = data.get("node-name") if isinstance(data, dict) else kv_get(data, "node-name")
            if nn:
                nodes[nn] = (i, data)
        for d in self.disks:
            cur = d.node
            while cur in nodes and _get(nodes[cur][1], "driver") in FILTER_DRIVERS:
                child = _get(nodes[cur][1], "file")
                if not isinstance(child, str):
                    break
                cur = child
            if cur not in nodes:
                continue
            i, data = nodes[cur]
            child = _get(data, "file")
            if isinstance(child, str) and child in nodes:
                ci, cdata = nodes[child]
                _keep_only(cdata, PROTO_KEEP)
                _put(cdata, "driver", "file")
                _put(cdata, "filename", str(d.path))
                self.opts[ci].arg = _render(cdata)
                _keep_only(data, FORMAT_KEEP)
            else:
                inline = _get(data, "driver") not in ("qcow2", "raw", "qed", "vmdk", "vdi", "vpc", "vhdx", "luks",
                                                      "parallels", "dmg", "bochs", "cloop")
                if inline:      # a protocol node attached directly: it becomes the format node
                    for k in ("filename", "locking", "aio"):
                        _drop(data, k)
                _keep_only(data, FORMAT_KEEP - {"file"})
                _put_file(data, str(d.path))
            _put(data, "driver", d.fmt)
            self.opts[i].arg = _render(data)
            self.found.add(d.name)

    # -- everything else -----------------------------------------------------------------------------------------

    def chardev_spec(self, spec: str, what: str) -> str:
        """Legacy chardev strings (``-qmp``, ``-serial``, ...): unix sockets and files move, tcp servers become
        unix sockets in the new directory."""
        prefix = ""
        if spec.startswith("mon:"):
            prefix, spec = "mon:", spec[4:]
        head, comma, rest = split_first(spec)
        kind, _, where = head.partition(":")
        if kind == "unix":
            head = "unix:" + self.moved(where, f"{what}.sock", socket=True).replace(",", ",,")
        elif kind == "file":
            head = "file:" + self.moved(where, f"{what}.log").replace(",", ",,")
        elif kind in ("tcp", "telnet") and "server" in rest:
            items = [(k, v) for k, v in parse_kv(rest) if k not in ("nodelay", "ipv4", "ipv6", "to", "telnet")]
            self.warnings.append(f"{what} listened on {head}; the new VM listens on a unix socket instead")
            head = "unix:" + self.moved("", f"{what}.sock", socket=True)
            rest, comma = render_kv(items), ","
        return prefix + head + (comma + rest if rest else "")

    def chardev(self, items: Items) -> None:
        backend = items[0][0] if items and items[0][1] is None else kv_get(items, "backend")
        cid = kv_get(items, "id") or "chardev"
        if backend == "socket":
            if kv_get(items, "path") is not None:
                kv_set(items, "path", self.moved(kv_get(items, "path") or "", f"{cid}.sock", socket=True))
            elif kv_get(items, "server") not in (None, "off", "false", "no") or ("server", None) in items:
                kv_drop(items, lambda k: k in ("host", "port", "ipv4", "ipv6", "to", "numeric", "nodelay"))
                kv_set(items, "path", self.moved("", f"{cid}.sock", socket=True))
                self.warnings.append(f"chardev {cid} listened on TCP; the new VM listens on a unix socket instead")
        elif backend in ("file", "pipe") and kv_get(items, "path"):
            kv_set(items, "path", self.moved(kv_get(items, "path") or "", f"{cid}.log"))
        if kv_get(items, "logfile"):
            kv_set(items, "logfile", self.moved(kv_get(items, "logfile") or "", f"{cid}-log.log"))

    def net(self, o: Opt) -> None:
        items = parse_kv(o.arg or "")
        first = items[0][0] if items and items[0][1] is None else ""
        if o.name == "device" and (first.startswith(NIC_PREFIXES) or first.endswith("-net")):
            kv_set(items, "mac", new_mac())
        elif o.name == "nic" or (o.name == "net" and first == "nic"):
            kv_set(items, "mac" if o.name == "nic" else "macaddr", new_mac())
        if o.name in ("netdev", "nic", "net"):
            gone = kv_drop(items, lambda k: k == "hostfwd")
            if gone:
                self.warnings.append(f"dropped {len(gone)} host port forward(s) (hostfwd) of -{o.name} {first}: "
                                     "they would clash with the original VM")
            if first in ("tap", "bridge") or kv_get(items, "ifname"):
                self.warnings.append(f"-{o.name} {first} uses host network devices; check they do not clash "
                                     "with the original VM's")
        o.arg = render_kv(items)

    def run(self, qmp_address: str) -> Rewritten:
        binary = allowlist.binary(self.binary)          # first: a forged argv[0] is refused before anything else
        keep: list[Opt] = []
        self.drop_excluded()
        has = {o.name for o in self.opts}
        blockdevs = [i for i, o in enumerate(self.opts) if o.name == "blockdev"]
        self.rewrite_blockdevs(blockdevs)
        pidfile = self.dir / "qemu.pid"
        qmp_new: Path | None = None
        reg = self.abs(qmp_address) if qmp_address else ""
        for o in self.opts:
            n = o.name
            if n == "drive":
                items = parse_kv(o.arg or "")
                self.rewrite_drive(items)
                o.arg = render_kv(items)
            elif n in HD_OPTS or n == "":
                d = next((d for d in self.disks if d.filename and self.abs(d.filename) == self.abs(o.arg or "")),
                         None)
                if d is not None:
                    self.found.add(d.name)
                    o = Opt("drive", render_kv([("file", str(d.path)), ("format", d.fmt),
                                                ("index", str(HD_OPTS.get(n, 0))), ("media", "disk")]))
            elif n == "name":
                items = parse_kv(o.arg or "")
                if items and items[0][1] is None:
                    items[0] = (self.name, None)
                else:
                    kv_set(items, "guest", self.name)
                o.arg = render_kv(items)
            elif n == "uuid":
                o.arg = str(uuid.uuid4())
            elif n == "pidfile":
                o.arg = str(pidfile)
            elif n == "D":
                o.arg = self.moved(o.arg or "", "qemu-debug.log")
            elif n in ("qmp", "qmp-pretty", "monitor", "serial", "parallel", "debugcon"):
                o.arg = self.chardev_spec(o.arg or "", "qmp" if n.startswith("qmp") else n)
            elif n == "chardev":
                items = parse_kv(o.arg or "")
                self.chardev(items)
                o.arg = render_kv(items)
            elif n in ("device", "nic", "net", "netdev"):
                self.net(o)
            elif n == "vnc":
                _, comma, rest = split_first(o.arg or "")
                o.arg = "unix:" + self.moved("", "vnc.sock", socket=True) + (comma + rest if rest else "")
            elif n == "spice":
                items = [(k, v) for k, v in parse_kv(o.arg or "") if k not in ("port", "tls-port", "addr")]
                o.arg = render_kv(items + [("unix", "on"), ("addr", self.moved("", "spice.sock", socket=True))])
            elif n in ("gdb", "s", "incoming", "loadvm"):
                self.warnings.append(f"dropped -{n}{' ' + o.arg if o.arg else ''}: "
                                     + ("it would clash with the original VM" if n in ("gdb", "s")
                                        else "it does not apply to a VM started from restored disks"))
                continue
            keep.append(o)
        if reg and reg in self.paths:
            qmp_new = self.paths[reg]
        if qmp_new is None:
            qmp_new = Path(self.moved("", "qmp.sock", socket=True))
            keep.append(Opt("qmp", f"unix:{qmp_new},server=on,wait=off"))
        if "name" not in has:
            keep.append(Opt("name", self.name))
        if "pidfile" not in has:
            keep.append(Opt("pidfile", str(pidfile)))
        for d in self.disks:
            if d.name not in self.found:
                node = d.node if d.node and not d.node.startswith("#") else f"restored-{len(self.found)}"
                keep.append(Opt("blockdev", json.dumps({"driver": d.fmt, "node-name": node,
                                                        "file": {"driver": "file", "filename": str(d.path)}})))
                keep.append(Opt("device", f"{d.model or 'virtio-blk-pci'},drive={node}"))
                self.warnings.append(f"disk {d.name} is not on the captured command line (hot-plugged?); attached "
                                     f"as {d.model or 'virtio-blk-pci'}")
        keep, more = argcheck.check(keep, vmdir=self.dir, images={str(d.path) for d in self.disks}, cwd=self.cwd)
        self.warnings += more
        argv = join_argv(binary, keep)
        return Rewritten(argv, str(self.dir), qmp_new, pidfile, "daemonize" in has, self.warnings)


def rewrite(argv: list[str], cwd: str, *, name: str, vmdir: Path, disks: list[DiskTarget],
            qmp_address: str = "", excluded: Mapping[str, str] | None = None) -> Rewritten:
    """The command line of a new VM ``name`` living in ``vmdir`` whose disks are ``disks``' restored images, without
    the disks in ``excluded`` (name -> image file: left out of the backup)."""
    return _Rewriter(list(argv), cwd, name, vmdir, disks, dict(excluded or {})).run(qmp_address)


# -- -blockdev in either syntax -----------------------------------------------------------------------------------

def _parse(arg: str) -> Any:
    return json.loads(arg) if arg.lstrip().startswith("{") else parse_kv(arg)


def _get(data: Any, key: str) -> Any:
    if isinstance(data, dict):
        return data.get(key)
    if key == "file" and kv_get(data, "file") is None and any(k.startswith("file.") for k, _ in data):
        return {}
    return kv_get(data, key)


def _put(data: Any, key: str, value: str) -> None:
    if isinstance(data, dict):
        data[key] = value
    else:
        kv_set(data, key, value)


def _drop(data: Any, key: str) -> None:
    if isinstance(data, dict):
        data.pop(key, None)
    else:
        kv_drop(data, lambda k: k == key)


def _keep_only(data: Any, keep: set[str]) -> None:
    ok = lambda k: k in keep or k.startswith("cache.") or k == "cache"  # noqa: E731
    if isinstance(data, dict):
        for k in [k for k in data if not ok(k)]:
            del data[k]
    else:
        kv_drop(data, lambda k: not ok(k) and not k.startswith("file."))


def _put_file(data: Any, path: str) -> None:
    if isinstance(data, dict):
        data["file"] = {"driver": "file", "filename": path}
    else:
        kv_drop(data, lambda k: k == "file" or k.startswith("file."))
        data += [("file.driver", "file"), ("file.filename", path)]


def _render(data: Any) -> str:
    return json.dumps(data) if isinstance(data, dict) else render_kv(data)
