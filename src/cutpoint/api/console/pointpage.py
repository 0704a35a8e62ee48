"""A point's page: the restore wizard (images under the restore root) and the file browser.

The browser lists through ``restore.browse.list_files`` and downloads through ``restore.browse.get_files``: the same
sandboxed, hostile-guest-safe extraction as ``cutpoint files get``, into a private temporary directory, then sent as
the file itself or, for a directory, a tar archive of what the extraction wrote. A disk with several filesystems
(partitions) lists them above the listing, each a link carrying its ``part``. Guest names and labels are shown
escaped.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ...catalog.db import Catalog
from ...errors import NotFoundError, UsageError
from ...names import check_vm_name
from ...restore.browse import get_files, list_files
from ...restore.files import SUPPORTED
from ...restore.images import FORMATS
from ...restore.targets import Instant, NewVm, Replace, Target
from ...service.daemon import Service
from .html import Viewer, esc, field, form, nbytes, table

MAX_DOWNLOAD = 4 << 30


def _href(vm: str, point: str, path: str, disk: str | None, part: int | None, action: str = "files") -> str:
    q = f"path={quote(path, safe='/')}"
    if disk:
        q += f"&disk={quote(disk)}"
    if part is not None:
        q += f"&part={part}"
    return f"/ui/vms/{quote(vm)}/points/{quote(point)}/{action}?{q}"


def render(svc: Service, viewer: Viewer, vm: str, point: str, restore_root: Path,
           errors: dict[str, str] | None = None, values: dict[str, str] | None = None) -> str:
    errors, values = errors or {}, values or {}
    rec = svc.vaults.get().catalog.point(vm, point)
    base = f"/ui/vms/{vm}/points/{rec.id}/restore"
    images = form(base, viewer,
                  "<fieldset><legend>Disk images</legend>"
                  + field("to", "target directory", values.get("to", str(restore_root / f"{vm}-{rec.id}")), errors,
                          hint=f"must lie under the restore root {restore_root}")
                  + field("format", "image format", values.get("format", "raw"), errors, options=tuple(FORMATS))
                  + '<button type="submit" id="restore-images">Restore images</button></fieldset>', cls="block")
    new_vm = form(base + "/new-vm", viewer,
                  "<fieldset><legend>New VM beside the original</legend>"
                  + field("new_name", "new VM name", values.get("new_name", f"{vm}-restored"), errors)
                  + field("new_format", "disk format", values.get("new_format", "qcow2"), errors,
                          options=tuple(FORMATS))
                  + field("start", "start it", values.get("start", "no"), errors, options=("no", "yes"))
                  + '<button type="submit" id="restore-new-vm">Restore as new VM</button></fieldset>', cls="block")
    replace = form(base + "/replace", viewer,
                   "<fieldset><legend>Replace the original (in place)</legend>"
                   f'<p class="bad" role="note">Warning: this overwrites the disk files of VM {esc(vm)} with point '
                   f"{esc(rec.id)}. Everything written since that point is lost. The VM must be stopped.</p>"
                   + field("confirm", f"type the VM name ({vm}) to confirm", values.get("confirm", ""), errors)
                   + '<button type="submit" id="restore-replace">Replace disks</button></fieldset>', cls="block")
    instant = form(base + "/instant", viewer,
                   "<fieldset><legend>Instant restore</legend><p class=\"note\">A new VM runs at once from the point "
                   "over NBD while its disks copy in the background.</p>"
                   + field("instant_name", "new VM name", values.get("instant_name", f"{vm}-instant"), errors)
                   + '<button type="submit" id="restore-instant">Start instantly</button></fieldset>', cls="block")
    wizard = images + new_vm + replace + instant
    other = ""
    return (f"<p>Point <code>{esc(rec.id)}</code> of VM <a href=\"/ui/vms/{esc(quote(vm))}\">{esc(vm)}</a>, "
            f"created {esc(rec.created)}, {esc(rec.consistency)}, {esc(rec.mode)}, "
            f"{esc(nbytes(rec.logical_bytes))} logical.</p>"
            + (f"<h2>Restore</h2>{wizard}{other}" if viewer.operator else "")
            + f'<h2>Files</h2><p><a href="{esc(_href(vm, rec.id, "/", None, None))}">browse this point\'s '
              "filesystems</a></p>")


def target_of(catalog: Catalog, vm: str, kind: str, form: dict[str, str]) -> tuple[Target, dict[str, str]]:
    """The restore target a wizard form asks for (new-vm, replace, instant) and its field errors; every field is
    checked here, before any job exists (replace needs the VM's name typed exactly)."""
    errs: dict[str, str] = {}

    def new_name(fld: str) -> str:
        value = form.get(fld, "").strip()
        try:
            check_vm_name(value, what="new VM name")
            catalog.vm(value)
            errs[fld] = f"a VM named {value!r} is already protected; pick another name"
        except NotFoundError:
            pass
        except UsageError as exc:
            errs[fld] = str(exc)
        return value

    target: Target
    if kind == "new-vm":
        vname = new_name("new_name")
        fmt = form.get("new_format", "")
        if fmt not in FORMATS:
            errs["new_format"] = f"{fmt!r} is not one of {', '.join(FORMATS)}"
        if form.get("start", "no") not in ("no", "yes"):
            errs["start"] = "choose yes or no"
        target = NewVm(vname, format=fmt, start=form.get("start") == "yes")
    elif kind == "replace":
        if form.get("confirm", "").strip() != vm:
            errs["confirm"] = f"type the VM name {vm!r} exactly to confirm that its disks are overwritten"
        target = Replace()
    elif kind == "instant":
        target = Instant(new_name("instant_name"))
    else:
        raise NotFoundError(f"no restore kind {kind!r} (new-vm, replace, instant)")
    return target, errs


def _volumes(vm: str, point: str, vols: list[tuple[str, dict[str, Any]]], link_disk: str | None,
             shown: int | None, caption: str) -> str:
    """A table of filesystems (disk, volume) with a link to browse each readable one; ``shown`` is the volume
    listed below it. Labels are the guest's (escaped for the terminal by blkid's reader, and here for HTML)."""
    rows = []
    for disk, v in vols:
        num = int(v.get("partition") or 0)
        where = f"partition {num}" if num else "whole disk"
        if v.get("fstype") in SUPPORTED:
            href = _href(vm, point, "/", link_disk if link_disk is not None else disk, num)
            current = ' aria-current="page"' if num == shown else ""
            act = (f'<a href="{esc(href)}" aria-label="browse disk {esc(disk)} {esc(where)}"{current}>browse</a>'
                   + (' <span class="badge ok">listed below</span>' if current else ""))
        else:
            act = f'<span class="note">not readable here (reads {esc(", ".join(SUPPORTED))})</span>'
        rows.append([esc(disk), esc(where), esc(v.get("fstype") or "unknown"), esc(v.get("label") or ""),
                     esc(nbytes(v.get("size"))), act])
    return table(["disk", "volume", "filesystem", "label", "size", ""], rows, caption)


def browse(svc: Service, viewer: Viewer, vm: str, point: str, path: str, disk: str | None,
           part: int | None) -> str:
    """A directory listing of one filesystem; when the disk holds several (partitions), a picker above it."""
    vault = svc.vaults.get()
    rec = vault.catalog.point(vm, point)
    m = vault.manifest(rec)
    res = list_files(vault, m, disk, path, part)
    if "disks" in res:                        # a multi-disk point without a disk chosen: its volumes
        return _volumes(vm, rec.id, [(d["disk"], v) for d in res["disks"] for v in d["volumes"]], None, None,
                        "filesystems")
    picker = ""
    vols: list[dict[str, Any]] = res.get("volumes") or []
    vol: dict[str, Any] = res.get("volume") or {}
    if len(vols) > 1:                         # several filesystems on this disk: offer each, pin the one listed
        part = int(vol.get("partition") or 0)
        picker = _volumes(vm, rec.id, [(res["disk"], v) for v in vols], disk, part,
                          f"filesystems on disk {res['disk']}")
    where = "whole disk" if not vol.get("partition") else f"partition {vol.get('partition')}"
    head = picker + (f"<p>disk <b>{esc(res['disk'])}</b>, {esc(where)} ({esc(vol.get('fstype'))}); "
            f"path <code>{esc(res['path'])}</code></p>")
    rows = []
    cur = res["path"] if res["type"] == "dir" else posixpath.dirname(res["path"])
    if cur not in ("", "/"):
        rows.append([f'<a href="{esc(_href(vm, rec.id, posixpath.dirname(cur.rstrip("/")) or "/", disk, part))}">'
                     "..</a>", "dir", "", ""])
    for e in res["entries"]:
        p = posixpath.join(cur or "/", e["name"])
        link = (f'<a href="{esc(_href(vm, rec.id, p, disk, part))}">{esc(e["name"])}/</a>' if e["type"] == "dir"
                else f'<span class="fname">{esc(e["name"])}</span>')
        dl = (f'<a href="{esc(_href(vm, rec.id, p, disk, part, "download"))}" '
              f'aria-label="download {esc(e["name"])}">download{" (tar)" if e["type"] == "dir" else ""}</a>'
              if e["type"] in ("file", "dir") else "")
        rows.append([link, esc(e["type"]), esc(nbytes(e["size"]) if e["type"] == "file" else ""), dl])
    return head + table(["name", "type", "size", ""], rows, "entries")


def download(svc: Service, vm: str, point: str, path: str, disk: str | None,
             part: int | None) -> tuple[Iterator[bytes], str, str]:
    """(body, file name, media type); the temporary directory is removed once the body is consumed."""
    vault = svc.vaults.get()
    rec = vault.catalog.point(vm, point)
    m = vault.manifest(rec)
    tmp = tempfile.TemporaryDirectory(prefix="cutpoint-console-")
    try:
        to = Path(tmp.name) / "out"
        to.mkdir(mode=0o700)
        get_files(vault, m, disk, path, to, part, max_bytes=MAX_DOWNLOAD)
        got = [p for p in to.iterdir()]
        if len(got) != 1:
            raise UsageError(f"nothing was extracted from {path!r}")
        item = got[0]
        if item.is_file() and not item.is_symlink():
            return _stream(tmp, item), item.name, "application/octet-stream"
        archive = Path(tmp.name) / "archive.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(item, arcname=item.name)
        return _stream(tmp, archive), item.name + ".tar", "application/x-tar"
    except BaseException:
        tmp.cleanup()
        raise


def _stream(tmp: tempfile.TemporaryDirectory[str], path: Path) -> Iterator[bytes]:
    try:
        with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as f:
            while chunk := f.read(1 << 20):
                yield chunk
    finally:
        tmp.cleanup()
