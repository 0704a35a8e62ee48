"""The guest builder: modules in dependency order, a well-formed initramfs, a cache that rebuilds only on change."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

from cutpoint.lab import accel, image


def test_modules_resolve_in_dependency_order() -> None:
    _, version = image.find_kernel()
    names = [p.name for p in image.resolve_modules(version)]
    for before, after in [("virtio_ring.ko", "virtio.ko"), ("virtio.ko", "virtio_pci.ko"),
                          ("virtio_pci_modern_dev.ko", "virtio_pci.ko"), ("virtio.ko", "virtio_blk.ko"),
                          ("jbd2.ko", "ext4.ko"), ("mbcache.ko", "ext4.ko"), ("fat.ko", "vfat.ko")]:
        if before in names and after in names:
            assert names.index(before) < names.index(after), names
    assert "virtio_blk.ko" in names and "virtio_console.ko" in names
    assert len(names) == len(set(names))


def test_build_is_cached_and_complete(shared_cache: Path) -> None:
    g = image.build()
    assert g.dir.parent == shared_cache / "guest"
    assert image.build() == g  # second call: same cached directory, nothing rebuilt
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=gzip.decompress(g.initrd.read_bytes()),
                             capture_output=True, check=True).stdout.decode().split()
    for entry in ("init", "bin/busybox", "bin/sh", "bin/workload", "dev/console", "etc/modules.order",
                  "lib/modules/virtio_blk.ko"):
        assert entry in listing, entry
    assert g.kernel.is_file() and g.kernel.stat().st_size > 1 << 20
    assert [m for m in g.modules] == [Path(p).name for p in image.resolve_modules(g.kernel_version)]
    assert not list((shared_cache / "guest").glob(".build-*"))  # no leftover temp dirs


def test_kvm_probe_recognises_a_booting_kernel() -> None:
    g = image.build()
    # TCG always works, so the probe logic itself is checked here; whether KVM works depends on the host.
    assert accel.probe_kvm(g.kernel, timeout=20, accel="tcg")
    assert accel.choose(g.kernel) in ("kvm", "tcg")


def test_concurrent_builds_agree(tmp_path: Path) -> None:
    """Parallel builders (e.g. test workers) into an empty cache both succeed and end up with one guest."""
    env = {**os.environ, "CUTPOINT_CACHE": str(tmp_path)}
    code = "from cutpoint.lab.image import build; print(build().dir)"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and Path(outs[0]).parent == tmp_path / "guest"
    assert [p.name for p in (tmp_path / "guest").iterdir()] == [Path(outs[0]).name]
