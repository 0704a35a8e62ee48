"""Shared pieces of the vault fault tests: a two-disk paused VM, a real ``cutpoint`` process killed or stopped at a
named stage (``CUTPOINT_FAULT``), and the checks every fault test ends with.

Only the process under fault (and the commands whose error line is the point of a test) run as CLI subprocesses;
the set-up backups and the after-checks (verify, restore, gc) call the same library functions in-process, which
keeps the fault tests fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cutpoint.backup.run import backup as run_backup
from cutpoint.catalog.db import VmRecord
from cutpoint.restore.images import restore_point
from cutpoint.vault.gc import gc as run_gc
from cutpoint.vault.vault import Vault
from cutpoint.vault.verify import VerifyReport, verify
from tests.helpers import Run, blockdev_args, drive_args, guest_write, make_image, raw_bytes

MiB = 1 << 20


def vault_dir() -> Path:
    return Path(os.environ["CUTPOINT_VAULT"])


def open_vault(**kw: Any) -> Vault:
    return Vault.open(vault_dir(), **kw)


def add_vm(name: str, qmp: Path) -> None:
    v = open_vault()
    v.catalog.add_vm(VmRecord(name, "qmp", str(qmp), datetime.now(timezone.utc).isoformat(timespec="seconds"), {}))
    v.close()


def two_disk_vm(bare_qemu, tmp_path: Path, name: str = "v"):
    """A paused VM ``name`` with a qcow2 disk ``da`` (32 MiB) and a raw disk ``db`` (16 MiB), registered."""
    a = make_image(tmp_path / f"{name}-a.qcow2", "32M", writes=["write -P 0x5a 0 8M", "write -P 0x11 12M 4M"])
    b = make_image(tmp_path / f"{name}-b.raw", "16M", "raw", writes=["write -P 0x6b 0 4M"])
    vm = bare_qemu(blockdev_args(a, "da") + drive_args(b, "db", "raw"), name=name)
    add_vm(name, vm.qmp)
    return vm, {"da": a, "db": b}


def change(vm, seed: int) -> None:
    """Guest writes that make the next point differ (new chunks on both disks)."""
    guest_write(vm.qmp, "da-dev", f"write -P {seed} 4M 2M", f"write -P {seed + 1} 20M 4M")
    guest_write(vm.qmp, "db", f"write -P {seed + 2} 8M 1M")


def snapshot(images: dict[str, Path]) -> dict[str, bytes]:
    return {d: raw_bytes(p) for d, p in images.items()}


def backup(vm: str = "v", full: bool = False, **kw: Any) -> dict:
    from cutpoint.backup.run import BackupOptions
    v = open_vault(**kw)
    try:
        return run_backup(v, vm, BackupOptions(full=full)).to_json()
    finally:
        v.close()


def points(vm: str = "v", **kw: Any) -> list[str]:
    v = open_vault(**kw)
    try:
        return [p.id for p in v.catalog.points(vm)]
    finally:
        v.close()


def restored(point: str, to: Path, vm: str = "v", **kw: Any) -> dict[str, bytes]:
    v = open_vault(**kw)
    try:
        files = restore_point(v, v.manifest(v.catalog.point(vm, point)), to)
        return {f.disk: f.path.read_bytes() for f in files}
    finally:
        v.close()


def verified(target: str | None = None, read_data: bool = True, **kw: Any) -> VerifyReport:
    v = open_vault(**kw)
    try:
        return verify(v, target, read_data=read_data)
    finally:
        v.close()


def gc(**kw: Any) -> dict:
    v = open_vault(**kw)
    try:
        return run_gc(v, grace=0).to_json()
    finally:
        v.close()


def assert_sound(expected: dict[str, dict[str, bytes]], tmp_path: Path, vm: str = "v", **kw: Any) -> None:
    """The vault verifies clean (data read), exactly the expected points are visible, each restores identical."""
    rep = verified(**kw)
    assert rep.ok, rep.to_json()
    assert points(vm, **kw) == list(expected)
    for point, disks in expected.items():
        assert restored(point, tmp_path / f"check-{point}-{time.monotonic_ns()}", vm, **kw) == disks, point


def one_line_error(r: Run, code: int, *needles: str) -> str:
    assert r.code == code, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cutpoint: error: "), r.err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def with_fault(fault: str, *args: str, timeout: float = 120) -> Run:
    """Run the CLI with ``CUTPOINT_FAULT=fault``; a kill fault ends with SIGKILL (-9)."""
    p = subprocess.run([sys.executable, "-m", "cutpoint.cli.main", *args], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "CUTPOINT_FAULT": fault})
    return Run(p.returncode, p.stdout, p.stderr)


def killed_at(fault: str, *args: str) -> None:
    r = with_fault(fault, *args)
    assert r.code == -9, f"expected SIGKILL at {fault}, got {r.code}: {r.err}"


def start_stopped(fault: str, *args: str) -> subprocess.Popen[str]:
    """Start the CLI with a ``=stop`` fault and wait until it has stopped itself there."""
    p = subprocess.Popen([sys.executable, "-m", "cutpoint.cli.main", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "CUTPOINT_FAULT": fault + "=stop"})
    deadline = time.monotonic() + 60
    while _state(p.pid) != "T":
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "process did not reach its stop stage"
        time.sleep(0.02)
    return p


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def files(sub: str, pattern: str = "*") -> list[Path]:
    d = vault_dir() / sub
    return sorted(p for p in d.rglob(pattern) if p.is_file()) if d.exists() else []


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime: 'nothing written' means this is unchanged."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file()}


def encrypted_vault(monkeypatch, passphrase: str = "correct horse") -> None:
    """Make the test's vault an encrypted one, its passphrase in the environment (as a scheduled backup has it).

    Its key file is wrapped with a cheap scrypt cost (N=2^12 instead of 2^17): the cost is a parameter of each key
    file, so every process that opens this vault runs the real KDF, only faster. test_encryption checks the default.
    """
    from cutpoint.vault import crypto

    monkeypatch.setattr(crypto, "SCRYPT_N", 1 << 12)
    monkeypatch.setenv("CUTPOINT_PASSPHRASE", passphrase)
    fresh_vault_dir()
    Vault.create(vault_dir(), encrypt=True)


def fresh_vault_dir() -> None:
    """Remove the test's (never used) default vault and this host's memory of it, to create another there."""
    shutil.rmtree(vault_dir(), ignore_errors=True)
    shutil.rmtree(os.environ["CUTPOINT_STATE"], ignore_errors=True)


def chunk_of(point: str, disk: str, index: int, vm: str = "v") -> str:
    v = open_vault()
    try:
        m = v.manifest(v.catalog.point(vm, point))
        cid = next(d for d in m.disks if d.name == disk).chunks[index]
        assert cid is not None
        return cid
    finally:
        v.close()


def chunk_path(cid: str) -> Path:
    return vault_dir() / "chunks" / cid[:2] / cid


# -- format-aware damage: a v3 vault keeps a file per chunk, a v4 vault keeps chunks in packs --------------------------

def vault_version() -> int:
    import json
    return int(json.loads((vault_dir() / "config.json").read_text())["version"])


def v3_vault(monkeypatch=None, *, encrypt: bool = False) -> None:
    """Make the test's vault one of format v3 (a file per chunk), as made by the previous release."""
    fresh_vault_dir()
    Vault.create(vault_dir(), encrypt=encrypt, version=3)


def vault_of_format(fmt: int, monkeypatch, *, encrypt: bool = False) -> None:
    """The test's vault in format ``fmt`` (3 or 4), encrypted if asked."""
    if encrypt:
        encrypted_vault(monkeypatch)
        if fmt == 3:
            fresh_vault_dir()
            Vault.create(vault_dir(), encrypt=True, version=3)
    elif fmt == 3:
        v3_vault()


def pack_of(cid: str) -> tuple[Path, int, int]:
    """(pack file, offset, length) of a chunk's stored blob in a v4 vault."""
    from cutpoint.vault.packfile import pack_name
    v = open_vault()
    try:
        loc = v.chunks.location(cid)              # type: ignore[union-attr]
        assert loc is not None, cid
        return vault_dir() / pack_name(loc.pid), loc.offset, loc.length
    finally:
        v.close()


def flip_chunk(cid: str) -> None:
    """Flip one bit in the middle of a chunk's stored bytes, whatever the format."""
    if vault_version() >= 4:
        path, off, length = pack_of(cid)
        pos = off + length // 2
    else:
        path = chunk_path(cid)
        pos = path.stat().st_size // 2
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x01]))


def lose_chunk(cid: str) -> set[str]:
    """Remove a chunk from the storage: its file (v3) or the whole pack holding it (v4, where an object is the
    unit that can go missing). Returns the ids of every chunk lost with it."""
    if vault_version() < 4:
        chunk_path(cid).unlink()
        return {cid}
    path, _, _ = pack_of(cid)
    v = open_vault()
    try:
        from cutpoint.vault.packfile import pack_id_of
        pid = pack_id_of(str(path.relative_to(vault_dir())))
        lost = {e.bid.hex() for e in v.chunks.reload(entries=True).packs[pid] if e.kind == 0}   # type: ignore[union-attr]
    finally:
        v.close()
    path.unlink()
    return lost


def stored_objects() -> list[Path]:
    """The files that hold chunk data: chunk files (v3) or packs (v4)."""
    return files("data") if vault_version() >= 4 else files("chunks")


def hide_chunk(cid: str):
    """Make exactly one chunk missing from the vault, and return how to put it back: v3 moves its file aside; v4
    rewrites the index without it (its pack stays, holding the other chunks and the index nodes)."""
    if vault_version() < 4:
        aside = chunk_path(cid).with_name(cid + ".aside")
        shutil.move(chunk_path(cid), aside)
        return lambda: shutil.move(aside, chunk_path(cid))
    from cutpoint.vault import packindex
    v = open_vault()
    try:
        idx = v.chunks.reload(entries=True)                           # type: ignore[union-attr]
        old = {name: (vault_dir() / name).read_bytes() for name in idx.objects}
        bid = bytes.fromhex(cid)
        name = packindex.new_index_name()
        kept = [(pid, [e for e in entries if e.bid != bid]) for pid, entries in idx.packs.items()]
        (vault_dir() / name).write_bytes(packindex.encode_index(v.sealer, name, kept))
        for o in old:
            (vault_dir() / o).unlink()
    finally:
        v.close()

    def back() -> None:
        (vault_dir() / name).unlink()
        for o, data in old.items():
            (vault_dir() / o).write_bytes(data)
    return back


# -- immutability and soft delete (docs/format.md §19) ------------------------------------------------------------------

def protected_vault(fmt: int = 4, *, immutable_days: int = 0, soft_delete_days: int = 14) -> None:
    """The test's vault made afresh in format ``fmt`` with this protection (as 'vault init --immutable-days N
    --soft-delete-days N' makes it)."""
    from cutpoint.vault.protection import Protection
    fresh_vault_dir()
    Vault.create(vault_dir(), version=fmt, protection=Protection(immutable_days, soft_delete_days))


def synthetic_points(ages_days: list[float], vm: str = "v") -> dict[str, bytes]:
    """Commit one point per age (days before now, oldest first), each a 2-chunk disk ``d`` of its own random bytes,
    with no VM; returns {point: the disk's bytes}, for byte-identical read-back."""
    import secrets
    from datetime import timedelta

    from cutpoint.catalog.db import VmRecord
    from tests.helpers import commit_synthetic_point

    v = open_vault()
    try:
        if vm not in {r.name for r in v.catalog.vms()}:
            v.catalog.add_vm(VmRecord(vm, "qmp", "/nonexistent", "2023-01-01T00:00:00Z", {}))
        out = {}
        for age in ages_days:
            when = (datetime.now(timezone.utc) - timedelta(days=age)).replace(microsecond=0)
            pid = when.strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(2)
            blocks = [os.urandom(v.chunk_size) for _ in range(2)]
            commit_synthetic_point(v, pid, vm, when.isoformat().replace("+00:00", "Z"), {"d": list(blocks)},
                                   {"point": pid})
            out[pid] = b"".join(blocks)
        return out
    finally:
        v.close()


def read_back(point: str, to: Path, vm: str = "v") -> bytes:
    """Restore a visible point's disk ``d`` into ``to`` and return its bytes."""
    return restored(point, to, vm)["d"]


def age_deletion(vm: str, point: str, days: float) -> None:
    """Pretend a soft-deleted point was deleted ``days`` ago: rewrite the deletion time in its record on disk."""
    import json
    from datetime import timedelta
    path = vault_dir() / "deleted" / vm / f"{point}.deleted"
    doc = json.loads(path.read_text())
    doc["deleted"] = (datetime.now(timezone.utc) - timedelta(days=days)).isoformat(timespec="seconds")
    path.write_text(json.dumps(doc))


def gc_now(root: Path, **kw: Any) -> Any:
    """One gc of the vault at ``root`` (grace 0 unless given), in-process, the vault closed after."""
    v = Vault.open(root)
    try:
        return run_gc(v, **{"grace": 0, **kw})
    finally:
        v.close()


def age_packs(root: Path, seconds: float) -> None:
    """Every file under the vault's ``data/`` made ``seconds`` older (past gc's cutoff)."""
    for p in (root / "data").rglob("*"):
        if p.is_file():
            t = p.stat().st_mtime - seconds
            os.utime(p, (t, t))
