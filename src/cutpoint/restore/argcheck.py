"""A saved VM configuration is data from the vault, not code: what a restored VM may be started with.

Anyone who can write an unencrypted vault can re-seal a manifest, so the captured command line is hostile input. It
is run (often as root) only after this check: the binary is a ``qemu-system-*`` emulator from a fixed directory
(``/usr/bin``, or ``$CUTPOINT_QEMU_DIR`` of the restoring user), never the saved ``argv[0]``; every option is on an
allowlist and its arguments are checked; relative paths are made absolute against the saved working directory and
QEMU runs in the new VM's directory. Nothing may run a host program (tap scripts, bridge helper, smb, guestfwd,
plugins) or touch a host path outside the allowed places:

* written: the new VM's directory (sockets, logs, pidfile) and the restored images;
* read (firmware, kernel, initrd, ROMs, read-only drives): the new VM's directory, ``/usr/share``, ``/usr/lib``,
  ``/boot`` and cutpoint's cache directory (lab guests boot from there).

Anything else is refused with one line naming the option and its value.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..paths import cache_home
from .allowlist import (ALLOWED_FLAGS, AUDIO_BACKENDS, CHARDEV_BACKENDS, DATA_OPTS, DENY_DEVICES, DENY_KEYS,
                        DRIVE_KEYS, FIX, IMAGE_FORMATS, LEGACY_CHARDEV, NET_TYPES, NODE_COMMON, NODE_KEYS,
                        OBJECT_TYPES, ON, PATH_KEYS, READ_ROOTS, RNG_DEVICES, TEXT_KEYS, USB_DEVICES)
from .qemuopts import Items, Opt, parse_kv, render_kv, split_first

@dataclass
class Checker:
    """Checks (and normalises) the options of one new VM living in ``vmdir`` with restored images ``images``."""

    vmdir: Path
    images: set[str]
    cwd: str
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.vmdir = Path(os.path.realpath(self.vmdir))
        self.images = {os.path.realpath(p) for p in self.images}
        self.read_roots = [Path(r) for r in READ_ROOTS] + [Path(os.path.realpath(cache_home())), self.vmdir]

    # -- verdicts ------------------------------------------------------------------------------------------------

    def refuse(self, o: Opt, why: str) -> UsageError:
        arg = f" {o.arg}" if o.arg is not None else ""
        return UsageError(f"the saved VM configuration's option -{o.name}{arg[:200]} {why}; refusing to start it "
                          f"({FIX})")

    def path(self, o: Opt, value: str, *, write: bool, label: str = "") -> str:
        """``value`` as an absolute real path, if it lies where this kind of access is allowed."""
        what = f"{label}={value}" if label else value
        if not value or "\0" in value:
            raise self.refuse(o, f"has an empty path {what!r}")
        if ":" in value.split("/", 1)[0]:
            raise self.refuse(o, f"names {what} through a protocol, not a local file")
        real = os.path.realpath(os.path.join(self.cwd, value))
        roots = [self.vmdir] if write else self.read_roots
        if real in self.images or any(Path(real).is_relative_to(r) for r in roots):
            return real
        where = f"the new VM's directory {self.vmdir}" if write else \
            f"the new VM's directory or {', '.join(str(r) for r in self.read_roots[:-1])}"
        raise self.refuse(o, f"{'writes' if write else 'reads'} {what}, outside {where}")

    def keys(self, o: Opt, items: Items, *, write_keys: set[str] = frozenset(),  # type: ignore[assignment]
             deny: set[str] = frozenset()) -> Items:  # type: ignore[assignment]
        """Generic check of ``key=value`` items: denied keys refused, path keys and absolute paths checked."""
        out: Items = []
        for k, v in items:
            last = k.rsplit(".", 1)[-1]
            if last in DENY_KEYS or last in deny:
                raise self.refuse(o, f"has {k}={v}" if v is not None else f"has {k}")
            if v is not None and (last in PATH_KEYS or v.startswith("..") or ("/" in v and last not in TEXT_KEYS)):
                v = self.path(o, v, write=last in write_keys, label=k)
            out.append((k, v))
        return out

    # -- options -------------------------------------------------------------------------------------------------

    def check(self, opts: list[Opt]) -> list[Opt]:
        out = []
        for o in opts:
            if o.name in ALLOWED_FLAGS:
                if o.arg is not None:
                    raise self.refuse(o, "takes no argument")
                out.append(o)
                continue
            handler = _HANDLERS.get(o.name)
            if handler is None:
                raise self.refuse(o, "is not on the list of options a restored VM may use")
            if o.arg is None:
                raise self.refuse(o, "has no argument")
            out.append(Opt(o.name, handler(self, o), o.dashes))
        return out

    def kv(self, o: Opt) -> str:
        return render_kv(self.keys(o, parse_kv(o.arg or "")))

    def free_text(self, o: Opt) -> str:
        return o.arg or ""

    def read_file(self, o: Opt) -> str:
        return self.path(o, o.arg or "", write=False)

    def write_file(self, o: Opt) -> str:
        return self.path(o, o.arg or "", write=True)

    def disk_image(self, o: Opt) -> str:
        p = self.path(o, o.arg or "", write=True)
        return p

    def name_opt(self, o: Opt) -> str:
        items = parse_kv(o.arg or "")
        for i, (k, v) in enumerate(items):
            if not (i == 0 and v is None) and k not in ("guest", "process", "debug-threads"):
                raise self.refuse(o, f"has {k}")
        return o.arg or ""

    def uuid_opt(self, o: Opt) -> str:
        if not re.fullmatch(r"[0-9a-fA-F-]{32,36}", o.arg or ""):
            raise self.refuse(o, "is not a UUID")
        return o.arg or ""

    def pidfile(self, o: Opt) -> str:
        if self.write_file(o) != str(self.vmdir / "qemu.pid"):
            raise self.refuse(o, "is not the new VM's pidfile")
        return o.arg or ""

    def usbdevice(self, o: Opt) -> str:
        if o.arg not in USB_DEVICES:
            raise self.refuse(o, f"is not one of {', '.join(sorted(USB_DEVICES))}")
        return o.arg

    def trace(self, o: Opt) -> str:
        return render_kv(self.keys(o, parse_kv(o.arg or ""), write_keys={"file"}))

    def mon(self, o: Opt) -> str:
        for k, _ in parse_kv(o.arg or ""):
            if k not in ("chardev", "mode", "pretty", "id", "default"):
                raise self.refuse(o, f"has {k}")
        return o.arg or ""

    def legacy_chardev(self, o: Opt) -> str:
        """-serial/-monitor/-qmp/...: ``[mon:]kind[:where][,opts]`` as rewritten by cmdline.py."""
        spec = o.arg or ""
        prefix = "mon:" if spec.startswith("mon:") else ""
        head, _, rest = split_first(spec[len(prefix):])
        kind, colon, where = head.partition(":")
        opts = self.keys(o, parse_kv(rest) if rest else [], write_keys={"logfile"})
        if kind in LEGACY_CHARDEV or kind == "chardev":
            pass
        elif kind in ("unix", "file") and colon:
            head = f"{kind}:" + self.path(o, where, write=True).replace(",", ",,")
        elif kind in ("tcp", "telnet") and any(k == "server" and v in ON for k, v in opts):
            pass                                # a listening socket: QEMU opens nothing on the host but a port
        else:
            raise self.refuse(o, f"uses the character device {kind or spec!r} (allowed: unix sockets and files in "
                                 f"the new VM's directory, {', '.join(sorted(LEGACY_CHARDEV))})")
        return prefix + head + ("," + render_kv(opts) if opts else "")

    def chardev(self, o: Opt) -> str:
        items = parse_kv(o.arg or "")
        backend = items[0][0] if items and items[0][1] is None else (dict(items).get("backend") or "")
        if backend not in CHARDEV_BACKENDS:
            raise self.refuse(o, f"uses the backend {backend!r}, not one of {', '.join(sorted(CHARDEV_BACKENDS))}")
        d = dict(items)
        if backend == "socket" and "path" not in d and not any(k == "server" and v in ON for k, v in items):
            raise self.refuse(o, "connects to a host network address")
        return render_kv(self.keys(o, items, write_keys={"path", "logfile", "input-path"}))

    def device(self, o: Opt) -> str:
        arg = o.arg or ""
        if arg.lstrip().startswith("{"):
            data = _json(self, o)
            drv = str(data.get("driver", ""))
            self._device_driver(o, drv)
            flat = [(str(k), None if v is None else str(v)) for k, v in data.items() if not isinstance(v, dict)]
            checked = dict(self.keys(o, flat))
            data.update({k: v for k, v in checked.items() if isinstance(data.get(k), str)})
            return json.dumps(data)
        items = parse_kv(arg)
        drv = items[0][0] if items and items[0][1] is None else (dict(items).get("driver") or "")
        self._device_driver(o, drv)
        return render_kv(self.keys(o, items))

    def _device_driver(self, o: Opt, drv: str) -> None:
        if drv.startswith(DENY_DEVICES):
            raise self.refuse(o, f"passes host hardware or files to the guest (device {drv})")

    def net(self, o: Opt) -> str:
        items = parse_kv(o.arg or "")
        kind = items[0][0] if items and items[0][1] is None else (dict(items).get("type") or "")
        if o.name == "nic" and kind == "":
            kind = "user"
        if kind not in NET_TYPES:
            raise self.refuse(o, f"uses the network backend {kind!r} (allowed: {', '.join(sorted(NET_TYPES))})")
        for k, v in items:
            if k in ("script", "downscript") and v != "no":
                raise self.refuse(o, f"runs the host program {k}={v}")
        if kind == "tap":
            for k in ("script", "downscript"):
                if dict(items).get(k) is None:
                    items.append((k, "no"))
                    self.warnings.append(f"-{o.name} tap: {k}=no (a restored VM runs no host scripts); attach its "
                                         "tap device to a bridge yourself")
        return render_kv(self.keys(o, items, write_keys={"path", "addr.path", "file"}))

    def object_(self, o: Opt) -> str:
        arg = o.arg or ""
        items: Items
        if arg.lstrip().startswith("{"):
            data = _json(self, o)
            items = [(str(k), None if v is None else str(v)) for k, v in data.items()]
            kind = str(data.get("qom-type", ""))
        else:
            items = parse_kv(arg)
            kind = items[0][0] if items and items[0][1] is None else (dict(items).get("qom-type") or "")
        if kind not in OBJECT_TYPES:
            raise self.refuse(o, f"creates an object of type {kind!r}, not one a restored VM may use")
        d = dict(items)
        if kind == "rng-random" and d.get("filename", "/dev/urandom") not in RNG_DEVICES:
            raise self.refuse(o, f"reads filename={d.get('filename')} (allowed: {', '.join(sorted(RNG_DEVICES))})")
        if kind == "secret" and "file" in d:
            raise self.refuse(o, f"reads its secret from the host file file={d['file']}")
        if kind == "rng-random":
            return arg
        checked = self.keys(o, items, write_keys={"file"} if kind == "filter-dump" else set())
        if arg.lstrip().startswith("{"):
            data.update({k: v for k, v in checked if isinstance(data.get(k), str)})
            return json.dumps(data)
        return render_kv(checked)

    def audiodev(self, o: Opt) -> str:
        items = parse_kv(o.arg or "")
        kind = items[0][0] if items and items[0][1] is None else (dict(items).get("driver") or "")
        if kind not in AUDIO_BACKENDS:
            raise self.refuse(o, f"uses the audio backend {kind!r} (allowed: {', '.join(sorted(AUDIO_BACKENDS))})")
        return render_kv(self.keys(o, items, write_keys={"path"}))

    def vnc(self, o: Opt) -> str:
        head, comma, rest = split_first(o.arg or "")
        if not head.startswith("unix:"):
            raise self.refuse(o, "does not listen on a unix socket in the new VM's directory")
        head = "unix:" + self.path(o, head[5:], write=True).replace(",", ",,")
        return head + ("," + render_kv(self.keys(o, parse_kv(rest))) if rest else "")

    def spice(self, o: Opt) -> str:
        items = self.keys(o, parse_kv(o.arg or ""), write_keys={"addr"}, deny={"port", "tls-port"})
        if dict(items).get("unix") not in ("on", "true", "yes"):
            raise self.refuse(o, "does not listen on a unix socket")
        return render_kv(items)

    def drive(self, o: Opt) -> str:
        items = parse_kv(o.arg or "")
        d = dict(items)
        for k, _ in items:
            if k not in DRIVE_KEYS and not k.startswith("throttling."):
                raise self.refuse(o, f"has {k}= (a drive may only open a local image in the new VM's directory)")
        fmt = d.get("format")
        if fmt is not None and fmt not in IMAGE_FORMATS:
            raise self.refuse(o, f"has format={fmt} (allowed: {', '.join(sorted(IMAGE_FORMATS))})")
        if "file" not in d or d["file"] == "":
            return o.arg or ""
        ro = d.get("readonly", d.get("read-only", "off")) in ON or d.get("media") == "cdrom"
        f = d["file"] or ""
        try:
            real = self.path(o, f, write=True, label="file")
        except UsageError:
            if not ro:
                real = self.path(o, f, write=False, label="file")      # a readable file, but not read-only:
                raise self.refuse(o, f"opens file={f} writable; only read-only drives may use files outside the "
                                     "new VM's directory") from None
            real = self.path(o, f, write=False, label="file")
        return render_kv([(k, real if k == "file" else v) for k, v in items])

    def blockdev(self, o: Opt) -> str:
        arg = o.arg or ""
        if arg.lstrip().startswith("{"):
            data = _json(self, o)
            self._node(o, data, False)
            return json.dumps(data)
        items = parse_kv(arg)
        data = _nest(items)
        self._node(o, data, False)
        return render_kv(_flatten(data))

    def _node(self, o: Opt, node: dict[str, Any], parent_ro: bool) -> None:
        drv = str(node.get("driver", ""))
        if drv not in NODE_KEYS:
            raise self.refuse(o, f"uses the block driver {drv!r} (allowed: {', '.join(sorted(NODE_KEYS))})")
        ro = parent_ro or str(node.get("read-only", "off")).lower() in ("on", "true", "yes")
        for k, v in node.items():
            if k not in NODE_COMMON and k not in NODE_KEYS[drv]:
                raise self.refuse(o, f"has {k}= on its {drv} node")
            if k == "cache" and not (isinstance(v, dict) and set(v) <= {"direct", "no-flush"}):
                raise self.refuse(o, f"has cache={v}")
            if k in ("file", "backing") and isinstance(v, dict):
                self._node(o, v, ro)
            elif k in ("file", "backing") and not (v is None or isinstance(v, str) and "/" not in v):
                raise self.refuse(o, f"has {k}={v} (a node name or an inline node)")
        if drv == "file":
            f = str(node.get("filename") or "")
            try:
                node["filename"] = self.path(o, f, write=True, label="filename")
            except UsageError:
                if not ro:
                    self.path(o, f, write=False, label="filename")
                    raise self.refuse(o, f"opens filename={f} writable; only read-only nodes may use files outside "
                                         "the new VM's directory") from None
                node["filename"] = self.path(o, f, write=False, label="filename")


_HANDLERS: dict[str, Callable[[Checker, Opt], str]] = {
    **{n: Checker.kv for n in DATA_OPTS},
    "append": Checker.free_text, "name": Checker.name_opt, "uuid": Checker.uuid_opt,
    "kernel": Checker.read_file, "initrd": Checker.read_file, "bios": Checker.read_file, "dtb": Checker.read_file,
    "L": Checker.read_file, "cdrom": Checker.read_file, "option-rom": Checker.read_file,
    "pidfile": Checker.pidfile, "D": Checker.write_file, "trace": Checker.trace, "usbdevice": Checker.usbdevice,
    "pflash": Checker.disk_image, "hda": Checker.disk_image, "hdb": Checker.disk_image, "hdc": Checker.disk_image,
    "hdd": Checker.disk_image, "": Checker.disk_image,
    "qmp": Checker.legacy_chardev, "qmp-pretty": Checker.legacy_chardev, "monitor": Checker.legacy_chardev,
    "serial": Checker.legacy_chardev, "parallel": Checker.legacy_chardev, "debugcon": Checker.legacy_chardev,
    "mon": Checker.mon, "chardev": Checker.chardev, "device": Checker.device,
    "netdev": Checker.net, "nic": Checker.net, "net": Checker.net, "object": Checker.object_,
    "audiodev": Checker.audiodev, "vnc": Checker.vnc, "spice": Checker.spice,
    "drive": Checker.drive, "blockdev": Checker.blockdev,
}


def check(opts: list[Opt], *, vmdir: Path, images: set[str], cwd: str) -> tuple[list[Opt], list[str]]:
    """The options, checked and with every path made absolute; and the warnings the check adds."""
    c = Checker(vmdir, images, cwd)
    return c.check(opts), c.warnings


def _json(c: Checker, o: Opt) -> dict[str, Any]:
    try:
        data = json.loads(o.arg or "")
    except ValueError as exc:
        raise c.refuse(o, f"is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise c.refuse(o, "is not a JSON object")
    return data


def _nest(items: Items) -> dict[str, Any]:
    """``file.driver=file,file.filename=x`` -> {"file": {"driver": "file", "filename": "x"}}."""
    out: dict[str, Any] = {}
    for k, v in items:
        cur = out
        *parents, last = k.split(".")
        for p in parents:
            nxt = cur.setdefault(p, {})
            if not isinstance(nxt, dict):
                nxt = cur[p] = {"": nxt}
            cur = nxt
        cur[last] = v
    return out


def _flatten(data: dict[str, Any], prefix: str = "") -> Items:
    out: Items = []
    for k, v in data.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out
