"""A point's VM configuration as types: what each driver captured at the cut to start the VM again.

The manifest keeps ``vm_config`` as the JSON dict the driver captured (its on-disk form is unchanged); restore reads
it only through :func:`parse`, which checks every field it uses and returns one of the per-driver dataclasses. The
manifest comes from the vault, which another writer may have crafted: a malformed config is a
:class:`VmConfigError` naming the field, never a ``KeyError`` or a wrong type deep in a restore.

Depends only on ``errors``, so drivers, restore and reports can all import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import IntegrityError

QMP = "qmp"
LIBVIRT = "libvirt"


class VmConfigError(IntegrityError):
    """A point's ``vm_config`` is not what any driver writes (missing or mistyped field, unknown type)."""


@dataclass(frozen=True)
class QmpDiskFacts:
    """One disk as QMP described it at the cut (``config.qmp_facts``)."""

    name: str
    device: str = ""
    model: str = ""
    filename: str = ""


@dataclass(frozen=True)
class QmpVmConfig:
    """A QEMU reached by its QMP socket: its command line when it was readable (``source`` "cmdline"), else only
    what QMP told (``source`` "qmp"), from which a command line is synthesized."""

    qmp_address: str
    source: str                                   # "cmdline" or "qmp"
    facts: dict[str, Any]                         # what QMP told (machine, memory, CPUs, disks), for synthesis
    disks: tuple[QmpDiskFacts, ...] = ()
    argv: tuple[str, ...] = ()
    cwd: str | None = None
    pid: int | None = None
    start_time: int | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    type: str = QMP


@dataclass(frozen=True)
class LibvirtVmConfig:
    """A libvirt domain: its inactive definition and where libvirt runs it."""

    connect: str
    domain: str
    xml: str
    type: str = LIBVIRT


VmConfig = QmpVmConfig | LibvirtVmConfig


def parse(raw: object, where: str) -> VmConfig | None:
    """The typed config of a manifest's ``vm_config`` (``where`` names the point in errors); None when the point has
    none (taken before cutpoint kept one)."""
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict):
        raise VmConfigError(f"{where}: its VM configuration is a {type(raw).__name__}, not an object; restore its "
                            "disks with --to DIR")
    r = _Reader(raw, where)
    kind = r.text("type", QMP)
    if kind == QMP:
        facts = r.obj("qmp")
        disks = []
        for i, d in enumerate(_list(facts.get("disks", []), where, "qmp.disks")):
            if not isinstance(d, dict):
                raise VmConfigError(f"{where}: VM configuration field 'qmp.disks[{i}]' must be an object")
            dr = _Reader(d, where, f"qmp.disks[{i}].")
            disks.append(QmpDiskFacts(name=dr.text("name"), device=dr.text("device", ""),
                                      model=dr.text("model", ""), filename=dr.text("filename", "")))
        argv = _list(raw.get("argv") or [], where, "argv")
        if not all(isinstance(a, str) for a in argv):
            raise VmConfigError(f"{where}: VM configuration field 'argv' must be a list of strings")
        warnings = _list(raw.get("warnings") or [], where, "warnings")
        return QmpVmConfig(qmp_address=r.text("qmp_address", ""), source=r.text("source", QMP), facts=facts,
                           disks=tuple(disks), argv=tuple(argv), cwd=r.opt_text("cwd"), pid=r.opt_int("pid"),
                           start_time=r.opt_int("start_time"), warnings=tuple(str(w) for w in warnings))
    if kind == LIBVIRT:
        xml = r.text("xml")
        if not xml:
            raise VmConfigError(f"{where}: VM configuration field 'xml' (the domain definition) is empty")
        return LibvirtVmConfig(connect=r.text("connect", "qemu:///system") or "qemu:///system",
                               domain=r.text("domain", ""), xml=xml)
    raise VmConfigError(f"{where}: VM configuration of unknown type {kind!r} (this cutpoint knows {QMP!r} and "
                        f"{LIBVIRT!r}); restore its disks with --to DIR")


def _list(v: object, where: str, name: str) -> list[Any]:
    if not isinstance(v, list):
        raise VmConfigError(f"{where}: VM configuration field {name!r} must be a list, not {type(v).__name__}")
    return v


class _Reader:
    """Typed reads of one JSON object's fields; each wrong type is one clear error naming the field."""

    def __init__(self, raw: dict[str, Any], where: str, prefix: str = "") -> None:
        self.raw, self.where, self.prefix = raw, where, prefix

    def _bad(self, key: str, what: str) -> VmConfigError:
        return VmConfigError(f"{self.where}: VM configuration field '{self.prefix}{key}' must be {what}, not "
                             f"{type(self.raw.get(key)).__name__}")

    def text(self, key: str, default: str | None = None) -> str:
        v = self.raw.get(key)
        if v is None:
            v = default
        if v is None:
            raise VmConfigError(f"{self.where}: VM configuration lacks field '{self.prefix}{key}'")
        if not isinstance(v, str):
            raise self._bad(key, "a string")
        return v

    def opt_text(self, key: str) -> str | None:
        v = self.raw.get(key)
        if v is not None and not isinstance(v, str):
            raise self._bad(key, "a string")
        return v

    def opt_int(self, key: str) -> int | None:
        v = self.raw.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise self._bad(key, "an integer")
        return v

    def obj(self, key: str) -> dict[str, Any]:
        v = self.raw.get(key, {})
        if not isinstance(v, dict):
            raise self._bad(key, "an object")
        return v
