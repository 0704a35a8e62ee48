"""A drill VM's command line and its screenshot: what makes a drill safe beside the production VM.

The command line starts as every VM-from-a-point does (``vmsetup.command_line``: new name, disks on our overlays,
every socket, pidfile and log moved into the drill's own directory), then ``isolate`` makes it a drill VM:

* every network device and backend is dropped and ``-nic none`` added (so QEMU adds no default NIC either): the
  drill cannot reach the host's networks, nor answer as the original on them;
* the first serial port goes to ``console.log`` in the drill directory, where the console signal reads it;
* a VGA device is added when there is no display device, so ``screendump`` has something to capture;
* ``-no-reboot``: a guest that panics and reboots stops instead of looping through the timeout.

``ppm_to_png`` converts QEMU's screendump (binary PPM, P6) to PNG with zlib alone: no imaging library needed.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from ..errors import CutpointError
from .cmdline import NIC_PREFIXES, Rewritten
from .qemuopts import Opt, join_argv, parse_kv, split_argv

DISPLAY_DEVICES = ("VGA", "virtio-vga", "virtio-gpu", "qxl-vga", "qxl", "bochs-display", "cirrus-vga",
                   "ramfb", "secondary-vga", "ati-vga", "virtio-gpu-pci")
NET_OPTS = ("netdev", "nic", "net")
MAX_PPM = 64 << 20                        # 4096x4096x3 and a header: anything larger is not a screen
DEFAULT_CONSOLE = r"login:|Reached target .*(Multi-User|Graphical)"   # the console signal's pattern (drill.py)
DEFAULT_TIMEOUT = 300.0                   # seconds for every signal, unless the VM's settings say otherwise


def isolate(rw: Rewritten, vmdir: Path) -> list[str]:
    """Rewrite ``rw.argv`` in place into a drill VM's; returns what was dropped, for the record."""
    binary, opts = split_argv(rw.argv)
    keep: list[Opt] = []
    dropped: list[str] = []
    serial_done = False
    has_display = False
    for o in opts:
        if o.name in NET_OPTS:
            dropped.append(f"-{o.name} {o.arg}")
            continue
        if o.name == "device":
            driver = (parse_kv(o.arg or "") or [("", None)])[0][0]
            if driver.startswith(NIC_PREFIXES) or driver.endswith("-net") or driver.endswith("-net-pci"):
                dropped.append(f"-device {driver}")
                continue
            if driver in DISPLAY_DEVICES:
                has_display = True
        if o.name == "vga" and (o.arg or "") != "none":
            has_display = True
        if o.name == "serial" and not serial_done:
            o = Opt("serial", f"file:{_q(vmdir / 'console.log')}", o.dashes)
            serial_done = True
        if o.name in ("no-reboot",):
            continue
        keep.append(o)
    if not serial_done:
        keep.append(Opt("serial", f"file:{_q(vmdir / 'console.log')}"))
    if not has_display:
        keep.append(Opt("device", "VGA,id=cutpoint-drill-vga"))
    keep += [Opt("nic", "none"), Opt("no-reboot")]
    rw.argv = join_argv(binary, keep)
    return dropped


def memory_mb(argv: list[str]) -> int:
    """The guest's memory (``-m``) in MiB; QEMU's default 128 when unset."""
    _, opts = split_argv(argv)
    for o in opts:
        if o.name == "m" and o.arg:
            items = parse_kv(o.arg)
            v = items[0][0] if items[0][1] is None else (dict((k, x) for k, x in items).get("size") or "128")
            return _mib(v)
    return 128


def cpus(argv: list[str]) -> int:
    _, opts = split_argv(argv)
    for o in opts:
        if o.name == "smp" and o.arg:
            items = parse_kv(o.arg)
            v = items[0][0] if items[0][1] is None else dict((k, x) for k, x in items).get("cpus") or "1"
            try:
                return max(1, int(v))
            except ValueError:
                return 1
    return 1


def _mib(v: str) -> int:
    units = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1 << 20}
    v = v.strip().lower().removesuffix("b")
    try:
        if v and v[-1] in units:
            return int(float(v[:-1]) * units[v[-1]])
        return int(float(v))                       # a bare number is MiB for -m
    except ValueError:
        return 128


def _q(p: Path) -> str:
    return str(p).replace(",", ",,")


def ppm_to_png(ppm: Path, png: Path) -> tuple[int, int]:
    """Convert a binary PPM (P6, maxval 255) to an RGB PNG; returns (width, height)."""
    data = ppm.read_bytes()[:MAX_PPM + 1]
    if len(data) > MAX_PPM:
        raise CutpointError(f"screendump {ppm} is larger than {MAX_PPM} bytes")
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.find(b"\n", pos) + 1 or len(data)
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        if start == pos:
            raise CutpointError(f"screendump {ppm} is not a PPM image (short header)")
        fields.append(data[start:pos])
    pos += 1
    if fields[0] != b"P6" or not all(f.isdigit() for f in fields[1:]):
        raise CutpointError(f"screendump {ppm} is not a binary PPM (P6) image")
    w, h, maxval = (int(f) for f in fields[1:])
    if maxval != 255 or not (0 < w <= 8192 and 0 < h <= 8192) or len(data) - pos < w * h * 3:
        raise CutpointError(f"screendump {ppm} has an unexpected size or depth ({w}x{h}, maxval {maxval})")
    pixels = data[pos:pos + w * h * 3]
    stride = w * 3
    raw = b"".join(b"\0" + pixels[y * stride:(y + 1) * stride] for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    out = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    png.write_bytes(out)
    return w, h
