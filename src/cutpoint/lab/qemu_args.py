"""The QEMU command line of a lab VM: machine, console, QMP, guest kernel, and each disk's block graph.

Disks are attached in list order, so disk i is the guest's i-th virtio disk (vda, vdb, ...) and the workload's
disk index i. ``DiskSpec.extra`` is a comma-separated option list, routed like this:

* ``dev.KEY=V`` and the virtio-blk device properties in ``DEVICE_KEYS`` (``serial``, ``write-cache``, ...) go to
  ``-device`` (``discard`` is the node's option; the device's is ``dev.discard=on``);
* with attach="blockdev": ``file.KEY=V`` and ``locking``/``aio`` go to the protocol node (``diskN-file``),
  ``cache.direct``/``cache.no-flush`` to both nodes, ``cache=MODE`` is translated as QEMU's -drive would
  (``none`` = direct, ``writethrough`` = no device write cache, ``unsafe`` = no flush, ``directsync`` = both,
  ``writeback`` = neither), everything else (``read-only=on``, ``discard=unmap``, ...) to the format node ``diskN``;
* with attach="drive": everything else is appended to ``-drive`` verbatim (``cache=writeback``, ``readonly=on``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

DEVICE_KEYS = {
    "serial", "write-cache", "num-queues", "queue-size", "logical_block_size", "physical_block_size",
    "iothread", "bootindex", "share-rw", "config-wce", "seg-max-adjust", "discard_granularity",
}
FILE_KEYS = {"locking", "aio", "aio-max-batch"}
CACHE_MODES = {  # mode: (cache.direct, cache.no-flush, device write-cache)
    "writeback": ("off", "off", "on"),
    "none": ("on", "off", "on"),
    "writethrough": ("off", "off", "off"),
    "directsync": ("on", "off", "off"),
    "unsafe": ("off", "on", "on"),
}


@dataclass
class DiskSpec:
    size: int  # bytes
    fmt: str = "qcow2"  # "qcow2" | "raw"
    attach: str = "blockdev"  # "blockdev": stable node names disk0, disk1, ...; "drive": legacy -drive
    extra: str = ""  # extra options, routed as the module docstring says

    def validate(self, index: int) -> None:
        if self.fmt not in ("qcow2", "raw"):
            raise UsageError(f"disk{index}: format {self.fmt!r} is not qcow2 or raw")
        if self.attach not in ("blockdev", "drive"):
            raise UsageError(f"disk{index}: attach {self.attach!r} is not blockdev or drive")
        if self.size <= 0 or self.size % 512:
            raise UsageError(f"disk{index}: size {self.size} must be a positive multiple of 512 bytes")


def _split(extra: str) -> list[tuple[str, str]]:
    out = []
    for item in filter(None, (x.strip() for x in extra.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"disk option {item!r} is not KEY=VALUE")
        out.append((key, value))
    return out


def _q(path: Path) -> str:
    """A path as a QEMU option value: commas are doubled."""
    return str(path).replace(",", ",,")


def disk_args(i: int, spec: DiskSpec, path: Path) -> list[str]:
    """-blockdev/-drive and -device arguments for disk ``i``."""
    dev: list[str] = []
    node: list[str] = []
    proto: list[str] = []
    for key, value in _split(spec.extra):
        if key.startswith("dev.") or key in DEVICE_KEYS:
            dev.append(f"{key.removeprefix('dev.')}={value}")
        elif spec.attach == "drive":
            node.append(f"{key}={value}")
        elif key.startswith("file.") or key in FILE_KEYS:
            proto.append(f"{key.removeprefix('file.')}={value}")
        elif key.startswith("cache."):
            proto.append(f"{key}={value}")
            node.append(f"{key}={value}")
        elif key == "cache":
            if value not in CACHE_MODES:
                raise UsageError(f"disk{i}: cache={value!r} is not one of {', '.join(CACHE_MODES)}")
            direct, no_flush, wce = CACHE_MODES[value]
            for part in (proto, node):
                part += [f"cache.direct={direct}", f"cache.no-flush={no_flush}"]
            dev.append(f"write-cache={wce}")
        else:
            node.append(f"{key}={value}")
    tail = lambda parts: "".join("," + p for p in parts)  # noqa: E731
    if spec.attach == "drive":
        return [
            "-drive", f"file={_q(path)},format={spec.fmt},if=none,id=drive-disk{i}{tail(node)}",
            "-device", f"virtio-blk-pci,drive=drive-disk{i}{tail(dev)}",
        ]
    return [
        "-blockdev", f"driver=file,filename={_q(path)},node-name=disk{i}-file{tail(proto)}",
        "-blockdev", f"driver={spec.fmt},file=disk{i}-file,node-name=disk{i}{tail(node)}",
        "-device", f"virtio-blk-pci,drive=disk{i},id=disk{i}-dev{tail(dev)}",
    ]


def cdrom_args() -> list[str]:
    """An empty CD-ROM on the q35 AHCI controller: visible to QMP, invisible to the virtio disk order."""
    return ["-drive", "if=none,id=cdrom0,media=cdrom,readonly=on",
            "-device", "ide-cd,drive=cdrom0,bus=ide.2,id=cdrom0-dev"]


def agent_args(sock: Path) -> list[str]:
    """A virtio-serial port named org.qemu.guest_agent.0 whose host end is a listening unix socket ``sock``.

    ``server=on,wait=off``: QEMU listens and the guest boots without anyone connected; cutpoint connects as the
    (one) client when it needs the agent, and finds the socket again through QMP (``query-chardev``)."""
    return ["-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id=qga0,path={_q(sock)},server=on,wait=off",
            "-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0,id=qga0-port"]


def kernel_cmdline(*, seed: int, slots: int, ndisks: int, workload: bool, rate: int, agent: bool = False) -> str:
    # panic=0: hang on panic rather than reboot, so the wait sees the panic text instead of a boot loop.
    parts = ["console=ttyS0", "quiet", "panic=0", f"cutpoint.seed={seed}", f"cutpoint.slots={slots}",
             f"cutpoint.ndisks={ndisks}", f"cutpoint.rate={rate}"]
    if not workload:
        parts.append("cutpoint.workload=0")
    if agent:
        parts.append("cutpoint.agent=1")
    return " ".join(parts)


def qemu_argv(
    *, name: str, dir: Path, accel: str, memory_mb: int, kernel: Path, initrd: Path, append: str,
    disks: list[tuple[DiskSpec, Path]], cdrom: bool, extra_args: list[str], agent_socket: Path | None = None,
) -> list[str]:
    argv = [
        "qemu-system-x86_64", "-name", f"cutpoint-lab-{name}", "-machine", "q35", "-accel", accel,
        "-m", str(memory_mb), "-smp", "1", "-display", "none", "-nodefaults", "-no-user-config",
        "-serial", f"file:{_q(dir / 'console.log')}", "-qmp", f"unix:{_q(dir / 'qmp.sock')},server=on,wait=off",
        "-pidfile", str(dir / "qemu.pid"), "-daemonize",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
    ]
    for i, (spec, path) in enumerate(disks):
        argv += disk_args(i, spec, path)
    if cdrom:
        argv += cdrom_args()
    if agent_socket is not None:
        argv += agent_args(agent_socket)
    return argv + list(extra_args)
