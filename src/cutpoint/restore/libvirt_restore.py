"""Restoring points of libvirt domains: as a new domain beside the original, or onto a shut-off domain's own disks.

Every point of a libvirt domain carries the domain's definition (``vm_config``, captured by the libvirt driver at
the cut). A new domain is that definition with a new name and no UUID, each backed-up disk pointing at its restored
image, disks that were not backed up (shared, LUN, ...) left out, file-backed consoles and logs moved into the new
domain's directory, MAC addresses and NVRAM dropped so libvirt generates fresh ones; it is defined, and started on
request. Anything that fails removes what was defined and written, so a failed restore leaves no half domain.

Replacing writes each disk's image next to the original and renames it over it (owner and mode kept), so a disk is
either the old or the restored one. The domain's cutpoint checkpoints are dropped: their bitmaps went with the
replaced images, and the next backup reads in full with that reason.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import libvirt

from ..catalog.db import VmRecord
from ..cut.naming import BITMAP_PREFIX as CHECKPOINT_PREFIX
from ..drivers.libvirt import conn as lc
from ..drivers.libvirt.xml import parse_domain
from ..errors import CutpointError, NotFoundError, UnsupportedError, UsageError
from ..paths import vms_home
from ..vault.manifest import Manifest
from ..vault.vault import Vault
from .images import Progress, restore_point


def restore_cli(vault: Vault, m: Manifest, args: Any, progress: Progress | None) -> dict[str, Any]:
    """``cutpoint restore`` of a libvirt domain's point: ``--new-vm NAME [--start]`` or ``--replace``.

    A new domain started with ``--start`` is protected under its name, as a new QMP VM is."""
    from .vmsetup import check_new_name

    if args.instant:
        raise UsageError("--instant is not available for libvirt domains yet; use --new-vm NAME --start")
    cfg = domain_config(m)
    if args.replace:
        try:
            rec = vault.catalog.vm(m.vm)
            domain, uri = rec.address, str(rec.settings.get("connect") or cfg.get("connect"))
        except NotFoundError:
            domain, uri = str(cfg.get("domain") or m.vm), str(cfg.get("connect"))
        with vault.vm_lock(m.vm):              # no backup of this domain while its disks are rewritten
            return replace_domain_disks(vault, m, domain, connect=uri, progress=progress)
    check_new_name(vault, args.new_vm)
    res = restore_new_domain(vault, m, args.new_vm, args.to or vms_home() / args.new_vm, fmt=args.format or "qcow2",
                             start=args.start, progress=progress)
    if args.start:
        vault.catalog.add_vm(VmRecord(args.new_vm, "libvirt", args.new_vm,
                                      datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                      {"connect": res["connect"], "restored_from": {"vm": m.vm, "point": m.point}}))
        res["registered"] = True
    return res


def describe(res: dict[str, Any]) -> list[str]:
    """Lines for the CLI's plain output of ``restore_cli``'s result."""
    if res["mode"] == "new-domain":
        state = "started and protected under that name" if res["started"] else \
            f"defined, not started (virsh -c {res['connect']} start {res['domain']})"
        lines = [f"restored point {res['point']} of {res['vm']!r} as libvirt domain {res['domain']!r} in "
                 f"{res['dir']}: {state}"]
        lines += [f"  {d['name']}: {d['path']}" for d in res["disks"]]
        lines += [f"  left out (not in the point): {', '.join(res['dropped'])}"] if res["dropped"] else []
        return lines
    lines = [f"{d['disk']}: {d['path']} replaced ({d['size']} bytes, {d['format']})" for d in res["disks"]]
    if res["checkpoints_dropped"]:
        lines.append(f"dropped checkpoints {', '.join(res['checkpoints_dropped'])}: the next backup reads in full")
    return lines


def domain_config(m: Manifest) -> dict[str, Any]:
    cfg = getattr(m, "vm_config", None) or {}
    if cfg.get("type") != "libvirt" or not cfg.get("xml"):
        raise UsageError(f"point {m.point} of VM {m.vm!r} holds no libvirt domain definition (it was not taken from "
                         f"a libvirt domain); restore its disks with 'cutpoint restore {m.vm} {m.point} --to DIR'")
    return cfg


def restore_new_domain(vault: Vault, m: Manifest, name: str, to: Path, *, connect: str | None = None,
                       fmt: str = "qcow2", start: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Define (and with ``start`` start) domain ``name`` from point ``m``, its disks restored into ``to``."""
    t0 = time.monotonic()
    cfg = domain_config(m)
    uri = connect or str(cfg.get("connect") or "qemu:///system")
    to = to.expanduser().absolute()
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise UsageError(f"{to} already exists and is not an empty directory; choose another --to")
    if uri.startswith("qemu:///system"):
        _check_reachable(to)
    conn = lc.connect(uri)
    dom = None
    made = not to.exists()
    try:
        try:
            lc.lookup(conn, name, uri)
        except NotFoundError:
            pass
        else:
            raise UsageError(f"a libvirt domain named {name!r} already exists at {uri}; choose another name")
        to.mkdir(parents=True, exist_ok=True)
        files = restore_point(vault, m, to, fmt, progress)
        xml, dropped = new_domain_xml(cfg["xml"], name, {f.disk: str(f.path) for f in files}, fmt, to,
                                      f"restored by cutpoint from VM {m.vm!r}, point {m.point}")
        dom = lc.call(f"defining domain {name!r}", conn.defineXML, xml)
        if start:
            lc.call(f"starting domain {name!r}", dom.create)
    except BaseException:
        if dom is not None:
            _remove_domain(dom)
        if made:
            shutil.rmtree(to, ignore_errors=True)
        else:
            for p in to.iterdir():
                p.unlink(missing_ok=True)
        raise
    finally:
        conn.close()
    return {"mode": "new-domain", "vm": m.vm, "point": m.point, "domain": name, "connect": uri, "dir": str(to),
            "disks": [{"name": f.disk, "path": str(f.path), "size": f.size, "format": fmt} for f in files],
            "dropped": dropped, "started": start, "duration_s": round(time.monotonic() - t0, 3)}


def _check_reachable(to: Path) -> None:
    """qemu:///system runs QEMU as its own user, which must be able to enter every directory above the images."""
    for p in [to, *to.parents]:
        if p.exists() and p != to and not p.stat().st_mode & stat.S_IXOTH:
            raise UsageError(f"libvirt's QEMU user could not reach {to}: {p} is not searchable by other users; "
                             f"choose a --to under a directory it can enter (e.g. /var/lib/libvirt/images/NAME) or "
                             f"chmod o+x {p}")


def _remove_domain(dom: libvirt.virDomain) -> None:
    try:
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                          | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError:
        pass  # best effort while another error is on its way to the user


def new_domain_xml(xml: str, name: str, disks: dict[str, str], fmt: str, to: Path,
                   note: str) -> tuple[str, list[str]]:
    """The captured definition rewritten for a second domain; returns it and the disks left out."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise CutpointError(f"the stored domain definition is not valid XML: {exc}") from exc
    _set_text(root, "name", name)
    for tag in ("uuid", "genid"):
        for el in root.findall(tag):
            root.remove(el)
    desc = root.find("description")
    _set_text(root, "description", note + (f"; {desc.text}" if desc is not None and desc.text else ""))
    os_el = root.find("os")
    if os_el is not None:
        for el in os_el.findall("nvram"):
            os_el.remove(el)
    dropped = []
    devices = root.find("devices")
    for el in list(devices) if devices is not None else []:
        if el.tag == "disk":
            tgt = el.find("target")
            target = tgt.get("dev", "") if tgt is not None else ""
            if target in disks:
                _point_disk_at(el, disks[target], fmt)
            elif el.get("device") not in ("cdrom", "floppy"):
                assert devices is not None
                devices.remove(el)
                dropped.append(target)
        elif el.tag == "interface":
            for mac in el.findall("mac"):
                el.remove(mac)
        for src in el.iter("source"):
            if el.tag in ("serial", "console", "channel", "parallel") and el.get("type") == "file" and src.get("path"):
                src.set("path", str(to / Path(src.get("path", "")).name))
        for log in el.iter("log"):
            if log.get("file"):
                log.set("file", str(to / Path(log.get("file", "")).name))
    return ET.tostring(root, encoding="unicode"), dropped


def _set_text(root: ET.Element, tag: str, text: str) -> None:
    el = root.find(tag)
    if el is None:
        el = ET.Element(tag)
        root.insert(1 if tag != "name" else 0, el)
    el.text = text


def _point_disk_at(el: ET.Element, path: str, fmt: str) -> None:
    el.set("type", "file")
    for tag in ("source", "backingStore", "auth", "encryption", "reservations", "shareable", "transient"):
        for old in el.findall(tag):
            el.remove(old)
    drv = el.find("driver")
    if drv is None:
        drv = ET.SubElement(el, "driver", {"name": "qemu"})
    drv.set("type", fmt)
    src = ET.Element("source", {"file": path})
    el.insert(list(el).index(drv) + 1, src)


def replace_domain_disks(vault: Vault, m: Manifest, domain: str, *, connect: str | None = None,
                         progress: Progress | None = None) -> dict[str, Any]:
    """Put point ``m`` onto the disks of shut-off ``domain``, matched by target name (vda, sdb, ...)."""
    t0 = time.monotonic()
    cfg = getattr(m, "vm_config", None) or {}
    uri = connect or str(cfg.get("connect") or "qemu:///system")
    conn = lc.connect(uri)
    try:
        dom = lc.lookup(conn, domain, uri)
        if dom.isActive():
            raise UsageError(f"libvirt domain {domain!r} is running; shut it down first (virsh -c {uri} shutdown "
                             f"{domain}), then retry the replace")
        current = {d.target: d for d in parse_domain(lc.call("reading the domain XML", dom.XMLDesc,
                                                             libvirt.VIR_DOMAIN_XML_INACTIVE)).disks}
        plan = []
        for d in m.disks:
            cur = current.get(d.name)
            if cur is None:
                raise UsageError(f"domain {domain!r} has no disk {d.name}; the point's disks are "
                                 f"{', '.join(x.name for x in m.disks)}")
            if cur.type != "file" or not cur.source.startswith("/"):
                raise UnsupportedError(f"disk {d.name} of domain {domain!r} is not a local image file ({cur.type} "
                                       f"{cur.source}); restore it with --to DIR and copy it in place")
            plan.append((d, Path(cur.source), cur.fmt if cur.fmt in ("raw", "qcow2") else "raw"))
        done = []
        for d, path, fmt in plan:
            _replace_file(vault, dataclasses.replace(m, disks=[d]), path, fmt, progress)
            done.append({"disk": d.name, "path": str(path), "format": fmt, "size": d.size})
        dropped = [cp.getName() for cp in lc.checkpoints(dom, CHECKPOINT_PREFIX)]
        for cp in lc.checkpoints(dom, CHECKPOINT_PREFIX):
            lc.call(f"dropping checkpoint {cp.getName()}", cp.delete,
                    libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
    finally:
        conn.close()
    return {"mode": "replace-domain", "vm": m.vm, "point": m.point, "domain": domain, "connect": uri, "disks": done,
            "checkpoints_dropped": dropped, "duration_s": round(time.monotonic() - t0, 3)}


def _replace_file(vault: Vault, m: Manifest, path: Path, fmt: str, progress: Progress | None) -> None:
    try:
        st = path.stat()
    except OSError as exc:
        raise CutpointError(f"cannot read disk image {path}: {exc.strerror or exc}") from exc
    tmp = Path(tempfile.mkdtemp(prefix=".cutpoint-replace-", dir=path.parent))
    try:
        (new,) = restore_point(vault, m, tmp, fmt, progress)
        os.chown(new.path, st.st_uid, st.st_gid)
        os.chmod(new.path, st.st_mode & 0o7777)
        os.replace(new.path, path)
    except OSError as exc:
        raise CutpointError(f"cannot replace {path}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
