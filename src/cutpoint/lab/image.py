"""Build the lab guest: the host's Debian kernel plus a busybox initramfs that runs the ordered-write workload.

Nothing is downloaded: the kernel and its modules come from the host's linux-image package, busybox from
busybox-static, and the workload is compiled from ``guest/workload.c`` with the host's gcc. When the host has
Debian's qemu-guest-agent, a second initramfs ``initrd-agent.img`` is the first one with ``qemu-ga``, the shared
libraries ``ldd`` resolves for it (dynamic loader included) and the lab's fsfreeze hook appended as another cpio
archive (the kernel unpacks concatenated archives in turn), so guests without an agent boot exactly as before.
The result is cached under ``cache_home()/guest/<hash of all inputs>/`` and built in a temporary directory renamed into place, so
concurrent builders (parallel tests) never see a half-written guest.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import json
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import CutpointError, NotFoundError
from ..paths import cache_home

BUILDER_VERSION = "3"
BUSYBOX = Path("/bin/busybox")
QEMU_GA = Path("/usr/sbin/qemu-ga")
# Loaded in dependency order (resolved from modules.dep). Virtio is needed; the rest serves filesystem-level lab
# work (freeze tests, file-level restore) and is skipped if this kernel lacks it.
REQUIRED_MODULES = ["virtio_pci", "virtio_blk", "virtio_console"]
OPTIONAL_MODULES = ["crc32c_generic", "libcrc32c", "ext4", "vfat", "nls_cp437", "nls_iso8859-1", "nls_utf8"]


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    workload: Path  # the static workload binary; also runs on the host with --files
    kernel_version: str
    dir: Path
    modules: tuple[str, ...]
    agent_initrd: Path | None = None  # initrd with qemu-ga added, None when the host has no qemu-ga


def guest_source(name: str) -> bytes:
    return resources.files("cutpoint.lab").joinpath("guest", name).read_bytes()


def _version_key(v: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", v)]


def find_kernel() -> tuple[Path, str]:
    """The guest kernel: ``$CUTPOINT_KERNEL`` or the newest /boot/vmlinuz-* whose modules are installed."""
    env = os.environ.get("CUTPOINT_KERNEL")
    candidates = [Path(env)] if env else sorted(
        Path("/boot").glob("vmlinuz-*"), key=lambda p: _version_key(p.name), reverse=True
    )
    for k in candidates:
        ver = k.name.removeprefix("vmlinuz-")
        if k.is_file() and (Path("/lib/modules") / ver / "modules.dep").is_file():
            if not os.access(k, os.R_OK):
                raise CutpointError(f"cannot read the guest kernel {k}; run as root or make it readable")
            return k, ver
    raise NotFoundError(
        "no guest kernel: need /boot/vmlinuz-VERSION with /lib/modules/VERSION (install linux-image-amd64)"
        + (f"; CUTPOINT_KERNEL={env} has no matching modules" if env else "")
    )


def _norm(name: str) -> str:
    return name.replace("-", "_")


def resolve_modules(version: str) -> list[Path]:
    """Module files for REQUIRED/OPTIONAL_MODULES and their dependencies, dependencies first."""
    base = Path("/lib/modules") / version
    deps: dict[str, list[str]] = {}
    for line in (base / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {_norm(Path(m).name.split(".ko")[0]): m for m in deps}
    builtin_file = base / "modules.builtin"
    builtin = {
        _norm(Path(m).name.split(".ko")[0]) for m in (builtin_file.read_text().split() if builtin_file.exists() else [])
    }
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in deps.get(mod, []):
            visit(dep)
        order.append(mod)

    for name in REQUIRED_MODULES + OPTIONAL_MODULES:
        key = _norm(name)
        if key in builtin:
            continue
        if key not in by_name:
            if name in REQUIRED_MODULES:
                raise NotFoundError(f"kernel {version} has no module {name}; the lab guest needs it")
            continue
        visit(by_name[key])
    for mod in order:
        if mod.endswith((".xz", ".zst", ".gz")):
            raise CutpointError(f"module {mod} is compressed; busybox insmod needs uncompressed modules")
    return [base / m for m in order]


def _check_static(path: Path) -> None:
    if not path.is_file():
        raise NotFoundError(f"{path} not found; install busybox-static")
    with open(path, "rb") as f:
        if b"ld-linux" in f.read(8192):
            raise CutpointError(f"{path} is dynamically linked; install busybox-static")


def _stamp(p: Path) -> str:
    st = p.stat()
    return f"{p}:{st.st_size}:{st.st_mtime_ns}"


def cache_key(kernel: Path, version: str) -> str:
    h = hashlib.sha256()
    for part in (
        BUILDER_VERSION, version, _stamp(kernel), _stamp(Path("/lib/modules") / version / "modules.dep"),
        _stamp(BUSYBOX), ",".join(REQUIRED_MODULES + OPTIONAL_MODULES),
        _stamp(QEMU_GA) if QEMU_GA.is_file() else "no-qemu-ga",
    ):
        h.update(part.encode() + b"\0")
    h.update(guest_source("workload.c") + b"\0" + guest_source("init.sh") + b"\0" + guest_source("fsfreeze-hook"))
    return h.hexdigest()[:16]


class _Cpio:
    """A newc archive, which is what the kernel unpacks as an initramfs (no cpio binary or root needed)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 1

    def _add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % v for v in fields) + name.encode() + b"\0"
        self.parts.append(hdr + b"\0" * (-len(hdr) % 4))
        self.parts.append(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._add(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._add(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._add(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._add(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._add("TRAILER!!!", 0)
        data = b"".join(self.parts)
        return data + b"\0" * (-len(data) % 512)


def shared_libraries(binary: Path) -> list[Path]:
    """The shared objects ``binary`` loads, as ``ldd`` resolves them (the dynamic loader included)."""
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if r.returncode != 0:
        raise CutpointError(f"ldd {binary} failed: {r.stderr.strip()}")
    libs = []
    for line in r.stdout.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            libs.append(Path(m.group(1)))
        elif "not found" in line:
            raise CutpointError(f"{binary} needs a library the host lacks: {line.strip()}")
    return libs


def agent_archive() -> bytes:
    """A gzip'd cpio archive adding qemu-ga, its libraries (under the paths the loader looks for) and the hook."""
    cpio = _Cpio()
    made: set[str] = set()

    def parents(path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in made:
                made.add(d)
                cpio.dir(d)

    for name, data, mode in [("usr/sbin/qemu-ga", QEMU_GA.read_bytes(), 0o755),
                             ("etc/qemu/fsfreeze-hook", guest_source("fsfreeze-hook"), 0o755)] + [
            (str(lib).lstrip("/"), lib.read_bytes(), 0o755) for lib in shared_libraries(QEMU_GA)]:
        parents(name)
        cpio.file(name, data, mode)
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def compile_workload(out: Path) -> Path:
    """Compile the workload statically (it runs as the guest's only C program, with no libc in the initramfs)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "workload.c"
        src.write_bytes(guest_source("workload.c"))
        r = subprocess.run(
            ["gcc", "-static", "-O2", "-Wall", "-o", str(out), str(src)], capture_output=True, text=True
        )
    if r.returncode != 0:
        raise CutpointError(f"compiling the lab workload failed (need gcc and libc6-dev):\n{r.stderr.strip()}")
    return out


def extract_vmlinux(kernel: Path, version: str) -> bytes | None:
    """The uncompressed ELF kernel inside a bzImage, or None if unavailable.

    QEMU boots it through the PVH entry point, which skips the in-guest decompressor: under TCG that decompression
    alone costs about 3 s of a 6 s boot. Needs CONFIG_PVH, which Debian's kernels have.
    """
    config = Path("/boot") / f"config-{version}"
    if config.is_file() and "CONFIG_PVH=y" not in config.read_text():
        return None
    data = kernel.read_bytes()
    for magic, decompress in ((b"\xfd7zXZ\x00", _unxz), (b"\x1f\x8b\x08\x00", _gunzip)):
        i = data.find(magic)
        if i < 0:
            continue
        try:
            out = decompress(data[i:])
        except (lzma.LZMAError, zlib.error, OSError, EOFError):
            continue
        if out.startswith(b"\x7fELF"):
            return out
    return None


def _unxz(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)


def _gunzip(data: bytes) -> bytes:
    return zlib.decompressobj(31).decompress(data)


def _build_into(d: Path, kernel: Path, version: str) -> tuple[str, ...]:
    modules = resolve_modules(version)
    workload = compile_workload(d / "workload")
    cpio = _Cpio()
    for name in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "mnt", "etc", "lib",
                 "lib/modules", "root"):
        cpio.dir(name)
    cpio.chardev("dev/console", 5, 1)
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("bin/workload", workload.read_bytes(), 0o755)
    cpio.file("init", guest_source("init.sh"), 0o755)
    names = []
    for m in modules:
        names.append(m.name)
        cpio.file(f"lib/modules/{m.name}", m.read_bytes())
    cpio.file("etc/modules.order", ("\n".join(names) + "\n").encode())
    base = gzip.compress(cpio.finish(), compresslevel=6, mtime=0)
    (d / "initrd.img").write_bytes(base)
    if QEMU_GA.is_file():
        (d / "initrd-agent.img").write_bytes(base + agent_archive())
    elf = extract_vmlinux(kernel, version)
    if elf is not None:
        (d / "vmlinux").write_bytes(elf)
    else:
        shutil.copyfile(kernel, d / "vmlinuz")
    (d / "build.json").write_text(
        json.dumps({"kernel": str(kernel), "version": version, "modules": names, "busybox": str(BUSYBOX)}, indent=1)
    )
    return tuple(names)


def _prune(root: Path, keep: Path, newest: int = 3) -> None:
    """Drop all but the newest few cached guests (each ~70 MB). Running VMs are unaffected: QEMU reads -kernel and
    -initrd once, at start."""
    entries = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p != keep),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[newest - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def build(*, force: bool = False) -> GuestImage:
    """Build the guest (or reuse the cached one) and return its paths."""
    kernel, version = find_kernel()
    _check_static(BUSYBOX)
    root = cache_home() / "guest"
    final = root / cache_key(kernel, version)
    if force and final.exists():
        shutil.rmtree(final, ignore_errors=True)
    if not (final / "build.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        os.chmod(tmp, 0o755)
        try:
            _build_into(tmp, kernel, version)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / "build.json").is_file():  # lost a race to a builder that then failed: retry once
                    shutil.rmtree(final, ignore_errors=True)
                    os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _prune(root, keep=final)
    info = json.loads((final / "build.json").read_text())
    kfile = final / "vmlinux" if (final / "vmlinux").is_file() else final / "vmlinuz"
    return GuestImage(
        kernel=kfile, initrd=final / "initrd.img", workload=final / "workload",
        kernel_version=version, dir=final, modules=tuple(info["modules"]),
        agent_initrd=final / "initrd-agent.img" if (final / "initrd-agent.img").is_file() else None,
    )
