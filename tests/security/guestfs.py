"""Hostile guest filesystems, crafted on the host the way a guest could write its own disk, and backed up as a point.

``debugfs -w`` makes the entries; names that debugfs cannot make (holding ``/`` or NUL) are made under a unique
placeholder of the same length and then patched into the image's directory block: ext2 without metadata_csum has no
checksum over directory entries, so the guest's kernel (and every tool) sees exactly those bytes.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.helpers import blockdev_args, cutpoint

MiB = 1 << 20


class Ext2:
    def __init__(self, path: Path, size: str = "64M") -> None:
        self.path = path
        self.cmds: list[bytes] = []
        self.patches: dict[bytes, bytes] = {}
        subprocess.run(["mkfs.ext2", "-q", "-F", "-O", "^metadata_csum,^dir_index", str(path), size], check=True)

    def run(self, *cmds: bytes | str) -> Ext2:
        self.cmds += [c.encode() if isinstance(c, str) else c for c in cmds]
        return self

    def placeholder(self, name: bytes) -> bytes:
        """A unique plain name to create now; it becomes ``name`` when the image is finished (a shorter name, such
        as ``..``, by also rewriting the entry's name_len byte)."""
        token = secrets.token_hex(max(4, len(name)))[:max(8, len(name))].encode()
        self.patches[token] = name
        return token

    def finish(self) -> Path:
        script = b"\n".join(self.cmds) + b"\n"
        r = subprocess.run(["debugfs", "-w", "-f", "-", str(self.path)], input=script, capture_output=True)
        assert r.returncode == 0, r.stderr
        data = bytearray(self.path.read_bytes())
        for token, name in self.patches.items():
            assert data.count(token) == 1, (token, data.count(token))
            at = data.index(token)
            if len(name) < len(token):
                assert data[at - 2] == len(token)                # ext2 dirent: inode, rec_len, name_len, type, name
                data[at - 2] = len(name)
            data[at:at + len(name)] = name
        self.path.write_bytes(bytes(data))
        return self.path


def backup(bare_qemu: Callable[..., object], image: Path, vm: str = "guest") -> str:
    """Back up a bare VM with ``image`` as its only disk; returns the point."""
    qemu = bare_qemu(blockdev_args(image, "vda", "raw"))
    cutpoint("vm", "add", vm, "--qmp", str(qemu.qmp), check=True)  # type: ignore[attr-defined]
    return str(json.loads(cutpoint("backup", vm, "--json", check=True).out)["point"])
