"""The drill VM's command line (no network, own serial console, a display for screendump) and PPM -> PNG."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from cutpoint.errors import CutpointError
from cutpoint.restore import drillvm
from cutpoint.restore.cmdline import Rewritten


def _rw(argv: list[str], d: Path) -> Rewritten:
    return Rewritten(argv, str(d), d / "qmp.sock", d / "qemu.pid", False)


def test_isolate_drops_every_network_device_and_adds_no_default_nic(tmp_path: Path) -> None:
    rw = _rw(["qemu-system-x86_64", "-m", "512", "-netdev", "tap,id=n0,ifname=tap0", "-device",
              "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01", "-nic", "user,model=e1000", "-net", "nic",
              "-device", "e1000,netdev=n1", "-serial", "file:/orig/console.log", "-device", "virtio-blk-pci,drive=d"],
             tmp_path)
    dropped = drillvm.isolate(rw, tmp_path)
    argv = rw.argv
    assert "tap,id=n0,ifname=tap0" not in argv and not any("virtio-net" in a or "e1000" in a for a in argv)
    assert ["-nic", "none"] == argv[argv.index("-nic"):argv.index("-nic") + 2] and argv.count("-nic") == 1
    assert "-net" not in argv and "-netdev" not in argv and len(dropped) == 5
    assert argv[argv.index("-serial") + 1] == f"file:{tmp_path}/console.log" and "/orig/console.log" not in argv
    assert "VGA,id=cutpoint-drill-vga" in argv and "-no-reboot" in argv and "virtio-blk-pci,drive=d" in argv
    assert drillvm.memory_mb(argv) == 512


def test_isolate_keeps_an_existing_display_and_adds_a_serial(tmp_path: Path) -> None:
    rw = _rw(["qemu-system-x86_64", "-device", "virtio-vga", "-m", "size=2G", "-smp", "cpus=2"], tmp_path)
    drillvm.isolate(rw, tmp_path)
    assert not any(a.startswith("VGA") for a in rw.argv) and f"file:{tmp_path}/console.log" in rw.argv
    assert drillvm.memory_mb(rw.argv) == 2048 and drillvm.cpus(rw.argv) == 2


def _png_pixels(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    return w, h, zlib.decompress(idat)


def test_ppm_to_png_keeps_every_pixel(tmp_path: Path) -> None:
    pixels = bytes(range(256)) * 3 + bytes(48)         # 3x... : 2 rows of 136 pixels
    w, h = 136, 2
    pixels = (pixels * 2)[: w * h * 3]
    ppm = tmp_path / "s.ppm"
    ppm.write_bytes(b"P6\n# a comment\n136 2\n255\n" + pixels)
    assert drillvm.ppm_to_png(ppm, tmp_path / "s.png") == (w, h)
    pw, ph, raw = _png_pixels((tmp_path / "s.png").read_bytes())
    assert (pw, ph) == (w, h)
    assert raw == b"\0" + pixels[:w * 3] + b"\0" + pixels[w * 3:]


@pytest.mark.parametrize("blob", [b"P5\n2 2\n255\n" + bytes(4), b"P6\n2 2\n65535\n" + bytes(24),
                                  b"P6\n4 4\n255\n" + bytes(3), b"P6\n"])
def test_ppm_that_is_not_a_screen_is_refused(tmp_path: Path, blob: bytes) -> None:
    ppm = tmp_path / "s.ppm"
    ppm.write_bytes(blob)
    with pytest.raises(CutpointError, match="screendump"):
        drillvm.ppm_to_png(ppm, tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()
