"""A libvirt domain's definition rewritten for a second domain restored from one of its points.

New name, no UUID (libvirt makes one), each backed-up disk pointing at its restored image, disks that were not backed
up (shared, LUN, ...) left out, file-backed consoles and logs moved into the new domain's directory, MAC addresses
and NVRAM dropped so libvirt generates fresh ones.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import CutpointError


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
