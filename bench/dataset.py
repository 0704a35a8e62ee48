"""The benchmark's disks: realistic content, built once and cached under bench/work/.

``sys.raw`` is an ext4 filesystem filled from the host's /usr (an installed-OS-like mix of binaries, libraries and
text) with free space left as zeros; ``data.raw`` holds random data, compressible text and zeros in equal thirds-ish.
Both are sparse raw files so that every tool sees the same bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

MiB = 1 << 20
WORK = Path(__file__).resolve().parent / "work"
VERSION = "1"


def _fill_tree(dst: Path, budget: int) -> None:
    """Copy files from /usr into dst until ``budget`` bytes, breadth over depth so the mix stays varied."""
    used = 0
    for root in ("/usr/lib/x86_64-linux-gnu", "/usr/share", "/usr/bin", "/usr/lib/python3"):
        for dirpath, _, files in os.walk(root):
            for f in files:
                src = Path(dirpath) / f
                try:
                    if src.is_symlink() or not src.is_file():
                        continue
                    size = src.stat().st_size
                except OSError:
                    continue
                if used + size > budget:
                    return
                rel = src.relative_to("/")
                (dst / rel.parent).mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copyfile(src, dst / rel)
                except OSError:
                    continue
                used += size


def build(sys_size: int = 1536 * MiB, data_size: int = 1024 * MiB) -> dict[str, Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    d = WORK / f"dataset-v{VERSION}-{sys_size // MiB}-{data_size // MiB}"
    if (d / "done").exists():
        return {"sys": d / "sys.raw", "data": d / "data.raw"}
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    tree = d / "tree"
    _fill_tree(tree, int(sys_size * 0.6))
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(d / "sys.raw"), str(sys_size // 1024) + "k"],
                   check=True)
    shutil.rmtree(tree)
    with open(d / "data.raw", "wb") as f:
        f.truncate(data_size)
        third = data_size // 3
        rnd = os.urandom(MiB)
        for off in range(0, third, MiB):     # random (incompressible, but not repeated: vary each MiB)
            f.seek(off)
            f.write(os.urandom(MiB) if off % (8 * MiB) else rnd)
        text = b"".join(f"{i:08d} the quick brown fox jumps over the lazy dog; lorem ipsum dolor sit amet\n".encode()
                        for i in range(MiB // 80 + 1))[:MiB]
        for off in range(third, 2 * third, MiB):
            f.seek(off)
            f.write(text)
    (d / "done").write_text("ok")
    return {"sys": d / "sys.raw", "data": d / "data.raw"}
