"""libvirt fixtures: a running libvirtd (started here when it is not), and lab guests defined as libvirt domains.

The lab guest (``cutpoint.lab.image``: Debian's kernel + a busybox initramfs running the ordered-write workload) is
expressed as a ``type='qemu'`` domain with direct kernel boot, the same kernel command line as ``cutpoint lab up``,
its disks as virtio disks vda, vdb, ... and its serial console in a file. Every domain is destroyed and undefined
(with its checkpoint metadata) by the fixture, so no QEMU process and no domain outlives a test.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cutpoint.lab import libvirtd as lab_libvirtd

URI = lab_libvirtd.URI


@pytest.fixture(scope="session")
def libvirtd() -> str:
    """libvirtd and virtlogd running (started as root if needed); fails, never skips, with the reason."""
    for tool in ("virsh", "libvirtd", "virtlogd"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/install-deps (libvirt-daemon-system, libvirt-clients)")
    why = lab_libvirtd.ensure(URI)
    if why is not None:
        pytest.fail(why)
    _remove_orphans()
    return URI


def start_domain(dom) -> None:  # type: ignore[no-untyped-def]
    """Start a defined domain. libvirt gives each QEMU a private mount namespace, which needs '/' to be a mount
    point: inside a chroot (such as the fresh-machine check) it cannot, and no domain can start there at all. That
    is the environment's limit, not cutpoint's, so those tests are skipped with the reason; on a machine's real root
    they run."""
    import libvirt

    try:
        dom.create()
    except libvirt.libvirtError as exc:
        if "Failed disable mount propagation out of the root filesystem" in str(exc):   # mount("/", MS_SLAVE)
            pytest.skip(f"libvirt cannot start domains here, '/' is not a mount point (a chroot?): {exc}")
        raise


TAG = re.compile(r"cutpoint test domain, pytest pid (\d+)")


def _remove_orphans() -> None:
    """Domains of a test run that was killed (its finalizers never ran) are removed by the next run: each test
    domain names the pid of the pytest that made it, and only domains whose pytest is gone are touched."""
    import libvirt

    conn = libvirt.open(URI)
    try:
        for dom in conn.listAllDomains(0):
            try:
                m = TAG.search(dom.metadata(libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, None, 0) or "")
            except libvirt.libvirtError:
                continue                                    # no description: not a test domain
            if m and dom.name().startswith("cpt-") and not Path(f"/proc/{m.group(1)}").exists():
                remove_domain(URI, dom.name())
    finally:
        conn.close()


@dataclass
class LabDomain:
    name: str
    dir: Path
    uri: str
    disks: list[Path]
    console: Path
    extra: list[str] = field(default_factory=list)

    @property
    def dom(self):  # type: ignore[no-untyped-def]
        import libvirt

        if "conn" not in self.__dict__:
            self.__dict__["conn"] = libvirt.open(self.uri)
        return self.__dict__["conn"].lookupByName(self.name)

    def qemu_pid(self) -> int:
        return int(Path(f"/run/libvirt/qemu/{self.name}.pid").read_text().strip())

    def text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern: str, timeout: float = 90.0, after: int = 0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()[after:]
            m = rx.search(text)
            if m:
                return m
            for bad in ("CUTPOINT-WORKLOAD-ERROR", "Kernel panic"):
                if bad in text:
                    raise AssertionError(f"domain {self.name}: {bad}\n{text[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"domain {self.name}: no {pattern!r} after {timeout:.0f}s\n{text[-2000:]}")
            time.sleep(0.1)

    def checkpoints(self) -> list[str]:
        return sorted(c.getName() for c in self.dom.listAllCheckpoints(0))

    def restart(self) -> None:
        """Stop QEMU gracefully (SIGTERM: qcow2 bitmaps are saved) and start the domain again on its disks."""
        import libvirt

        d = self.dom
        d.destroyFlags(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
        mark = len(self.text())
        start_domain(d)
        self.wait_for(r"CUTPOINT-WORKLOAD-STARTED", after=mark)


def domain_xml(name: str, d: Path, kernel: Path, initrd: Path, cmdline: str, disks: list[tuple[Path, str]],
               extra: str = "") -> str:
    devs = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/><source file='{p}'/>"
        f"<target dev='vd{chr(97 + i)}' bus='virtio'/></disk>" for i, (p, fmt) in enumerate(disks))
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <description>cutpoint test domain, pytest pid {os.getpid()}</description>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><kernel>{kernel}</kernel><initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline></os>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>{devs}{extra}
    <serial type='file'><source path='{d / "console.log"}' append='on'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>"""


def remove_domain(uri: str, name: str) -> None:
    import libvirt

    try:
        conn = libvirt.open(uri)
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    for _ in range(3):                   # destroy can time out on a loaded host; undefining a running domain
        try:                             # would only make it transient and leave it running
            if dom.isActive():
                dom.destroy()
            break
        except libvirt.libvirtError:
            time.sleep(1)
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                      | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    conn.close()


@pytest.fixture
def lab_domain(libvirtd: str, isolated: Path) -> Iterator[Callable[..., LabDomain]]:
    """Factory: ``lab_domain(formats, size=..., extra_xml=..., start=True)`` defines (and boots) a lab guest."""
    from cutpoint.lab import image
    from cutpoint.lab.qemu_args import kernel_cmdline

    os.chmod(isolated, 0o755)            # libvirt's QEMU (another user) must reach the work and domain directories
    names: list[str] = []

    def make(formats: list[str], size: int = 32 << 20, extra_xml: str = "", start: bool = True,
             tag: str = "lab", agent: bool = False) -> LabDomain:
        """``agent``: ext4 on every disk, qemu-ga in the guest on a libvirt-managed channel (the consistency lab)."""
        import libvirt

        guest = image.build()
        if agent and guest.agent_initrd is None:
            pytest.fail("the agent lab guest needs /usr/sbin/qemu-ga on the host: apt-get install qemu-guest-agent")
        name = f"cpt-{tag}-{random.randrange(16**6):06x}"
        d = isolated / name
        d.mkdir(mode=0o755)
        kernel, initrd = d / guest.kernel.name, d / "initrd.img"
        for src, dst in ((guest.kernel, kernel), (guest.agent_initrd if agent else guest.initrd, initrd)):
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        disks = []
        for i, fmt in enumerate(formats):
            p = d / f"disk{i}.{fmt}"
            if agent:          # as the lab's agent guests: ext4 made on the host, inode tables written now
                raw = p.with_suffix(".mkfs")
                subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), str(size)], check=True)
                subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(raw)],
                               check=True)
                subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, str(raw), str(p)], check=True)
                raw.unlink()
            else:
                subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(p), str(size)], check=True)
            disks.append((p, fmt))
        cmdline = kernel_cmdline(seed=random.randrange(1, 1 << 63), slots=256, ndisks=len(disks), workload=True,
                                 rate=0, agent=agent)
        if agent:
            extra_xml += ("<channel type='unix'><source mode='bind'/>"
                          "<target type='virtio' name='org.qemu.guest_agent.0'/></channel>")
        conn = libvirt.open(libvirtd)
        dom = conn.defineXML(domain_xml(name, d, kernel, initrd, cmdline, disks, extra_xml))
        names.append(name)
        lab = LabDomain(name, d, libvirtd, [p for p, _ in disks], d / "console.log")
        if start:
            start_domain(dom)
            lab.wait_for(r"CUTPOINT-WORKLOAD-STARTED")
            if agent:
                lab.wait_for(r"CUTPOINT-AGENT-STARTED")
                deadline = time.monotonic() + 60
                while "state='connected'" not in dom.XMLDesc(0):      # qemu-ga has opened its port
                    assert time.monotonic() < deadline, f"qemu-ga did not connect in {name}\n{lab.text()[-2000:]}"
                    time.sleep(0.1)
        conn.close()
        return lab

    yield make
    for name in names:
        remove_domain(libvirtd, name)
    left = [n for n in names if Path(f"/run/libvirt/qemu/{n}.pid").exists()]
    assert not left, f"QEMU of domains {left} still running"
