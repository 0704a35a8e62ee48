"""The pieces of the agent lab guest that need no boot: QEMU arguments, kernel command line, the initramfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutpoint.lab import image
from cutpoint.lab.qemu_args import DiskSpec, kernel_cmdline, qemu_argv


def test_agent_port_and_cmdline() -> None:
    argv = qemu_argv(name="x", dir=Path("/l/x"), accel="tcg", memory_mb=256, kernel=Path("/k"), initrd=Path("/i"),
                     append="", disks=[(DiskSpec(1 << 20), Path("/l/x/disk0.qcow2"))], cdrom=False, extra_args=[],
                     agent_socket=Path("/l/a,b/qga.sock"))
    joined = " ".join(argv)
    assert "socket,id=qga0,path=/l/a,,b/qga.sock,server=on,wait=off" in joined
    assert "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0" in joined
    assert "qga0" not in " ".join(qemu_argv(name="x", dir=Path("/l/x"), accel="tcg", memory_mb=256,
                                            kernel=Path("/k"), initrd=Path("/i"), append="", disks=[],
                                            cdrom=False, extra_args=[]))
    assert "cutpoint.agent=1" in kernel_cmdline(seed=1, slots=8, ndisks=1, workload=True, rate=0, agent=True)
    assert "cutpoint.agent" not in kernel_cmdline(seed=1, slots=8, ndisks=1, workload=True, rate=0)


@pytest.mark.skipif(not image.QEMU_GA.is_file(), reason="qemu-guest-agent is not installed")
def test_agent_initrd_appends_qemu_ga_with_its_libraries() -> None:
    libs = image.shared_libraries(image.QEMU_GA)
    assert any("ld-linux" in p.name for p in libs) and any(p.name.startswith("libglib-2.0") for p in libs)
    g = image.build()
    assert g.agent_initrd is not None
    base, agent = g.initrd.read_bytes(), g.agent_initrd.read_bytes()
    assert agent.startswith(base) and len(agent) > len(base)      # one more archive, concatenated
