"""Helpers for tests: images prepared with qemu-io, QEMU disk arguments, and the real CLI in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


def make_image(path: Path, size: str, fmt: str = "qcow2", writes: list[str] = ()) -> Path:
    """Create an image and fill it with ``qemu-io`` write commands such as ``"write -P 0xab 1M 3M"``."""
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), size], check=True)
    if writes:
        cmd = ["qemu-io", "-f", fmt]
        for w in writes:
            cmd += ["-c", w]
        subprocess.run(cmd + [str(path)], check=True, stdout=subprocess.DEVNULL)
    return path


def blockdev_args(path: Path, node: str, fmt: str = "qcow2", extra: str = "") -> list[str]:
    return ["-blockdev", f"driver=file,filename={path},node-name={node}-file",
            "-blockdev", f"driver={fmt},file={node}-file,node-name={node}{',' + extra if extra else ''}",
            "-device", f"virtio-blk-pci,drive={node},id={node}-dev"]


def drive_args(path: Path, drive_id: str, fmt: str = "qcow2", extra: str = "") -> list[str]:
    return ["-drive", f"file={path},format={fmt},if=none,id={drive_id}{',' + extra if extra else ''}",
            "-device", f"virtio-blk-pci,drive={drive_id}"]


def raw_bytes(path: Path) -> bytes:
    """The guest-visible content of an image (any format), read with qemu-img while QEMU may hold it."""
    out = path.with_name(path.name + ".cmp.raw")
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(path), str(out)], check=True)
    data = out.read_bytes()
    out.unlink()
    return data


@dataclass
class Run:
    code: int
    out: str
    err: str


def cutpoint(*args: str, check: bool = False, timeout: float = 300) -> Run:
    """Run the real CLI in a subprocess (the environment carries the isolated directories)."""
    p = subprocess.run([sys.executable, "-m", "cutpoint.cli.main", *args], capture_output=True, text=True,
                       timeout=timeout)
    r = Run(p.returncode, p.stdout, p.stderr)
    if check and r.code != 0:
        raise AssertionError(f"cutpoint {' '.join(args)} failed ({r.code}): {r.err}")
    return r


def listening(path: Path) -> bool:
    """Whether a unix socket listens at ``path`` (__SO_ACCEPTCON in /proc/net/unix), without connecting: the file
    appears at bind(), before listen(), so a connect in between is refused; and a probe connection would take
    QEMU's one monitor slot."""
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7] == str(path) and int(parts[3], 16) & 0x10000:
                return True
    return False


def qemu_state(qmp: Path) -> dict[str, object]:
    """What a backup could leave behind in QEMU: jobs, exports, fleecing nodes, and bitmaps per node."""
    from cutpoint.drivers.qmp.qmp import QmpSession

    with QmpSession(qmp) as s:
        nodes = s.cmd("query-named-block-nodes", flat=True)
        return {
            "jobs": [j["device"] for j in s.cmd("query-block-jobs")],
            "exports": [e["id"] for e in s.cmd("query-block-exports")],
            "fleece_nodes": [n["node-name"] for n in nodes if n["node-name"].startswith("cutpoint-")],
            "bitmaps": {n["node-name"]: sorted(b.get("name", "<anonymous>") for b in n.get("dirty-bitmaps") or [])
                        for n in nodes if n.get("dirty-bitmaps")},
        }


def assert_clean(qmp: Path, work: Path, expect_bitmaps: dict[str, list[str]]) -> None:
    st = qemu_state(qmp)
    assert st["jobs"] == [] and st["exports"] == [] and st["fleece_nodes"] == [], st
    assert st["bitmaps"] == expect_bitmaps, st
    left = [p for p in work.rglob("*") if not p.is_dir()] if work.exists() else []
    assert left == [], left


def guest_write(qmp: Path, target: str, *commands: str) -> None:
    """Write to a disk of a running (or paused) QEMU through its block layer, as a guest write would: dirty
    bitmaps see it. ``target`` is a legacy drive id, or the device id (``-device ...,id=``) of a virtio-blk disk
    attached with -blockdev; commands are qemu-io commands. HMP prints nothing on success."""
    from cutpoint.drivers.qmp.qmp import QmpSession

    with QmpSession(qmp) as s:
        for c in (*commands, "flush"):  # flush: qcow2 metadata reaches the file, for raw_bytes() to see it
            out = s.cmd("human-monitor-command", command_line=f'qemu-io {target} "{c}"')
            if out.strip():
                out = s.cmd("human-monitor-command",
                            command_line=f'qemu-io -d /machine/peripheral/{target}/virtio-backend "{c}"')
            assert not out.strip(), out


def synthetic_manifest(vault, point: str, vm: str, created: str, disks: dict[str, list[bytes | None]],
                       **fields):
    """A manifest of the vault's own format for disks given as lists of chunk contents (None: a zero chunk), the
    chunks stored through ``vault.chunks``: format 2 lists the ids (v2/v3 vaults), format 3 stores each disk's
    index tree (v4 vaults: ``vault.tree.store_leaf``/``build``) as a backup does. Not committed: pass it to
    ``vault.commit_point`` (or see ``commit_synthetic_point``). Each disk is ``len(chunks) * chunk_size`` long
    unless ``sizes={disk: bytes}`` says shorter (its last chunk then is that much shorter)."""
    from cutpoint.vault import tree
    from cutpoint.vault.manifest import FORMAT_DELTA, DiskManifest, Manifest

    cs = vault.chunk_size
    sizes = fields.pop("sizes", {})
    out = []
    for name, blocks in disks.items():
        size = sizes.get(name, cs * len(blocks))
        ids: list[str | None] = []
        stored = 0
        for b in blocks:
            if b is None:
                ids.append(None)
                continue
            cid, w = vault.chunks.put(b)
            ids.append(cid)
            stored += w
        if not vault.packed:
            out.append(DiskManifest(name, size, ids, stored_bytes=stored))
            continue
        fan = vault.fanout
        leaves: list[bytes | None] = []
        index = 0
        for j in range(0, len(ids), fan):
            lid, w = tree.store_leaf(vault.chunks, [bytes.fromhex(c) if c else None for c in ids[j:j + fan]])
            leaves.append(lid)
            index += w
        root, height, w = tree.build(vault.chunks, leaves, len(ids), fan)
        out.append(DiskManifest(name, size, tree.ChunkTree(vault.chunks, root, height, len(ids), fan),
                                stored_bytes=stored, tree=root.hex() if root else None, tree_height=height,
                                index_bytes=index + w))
    if vault.packed:
        fields.update(format=FORMAT_DELTA, fanout=vault.fanout)
    return Manifest(point=point, vm=vm, created=created, chunk_size=cs, disks=out, **fields)


def commit_synthetic_point(vault, point: str, vm: str, created: str, disks: dict[str, list[bytes | None]],
                           summary: dict | None = None, **fields):
    """Commit a point built by ``synthetic_manifest`` (chunks made durable first, as a backup commits)."""
    m = synthetic_manifest(vault, point, vm, created, disks, **fields)
    return vault.commit_point(m, summary or {})
