"""Backup and restore through the real CLI on a paused QEMU whose disks hold known data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import blockdev_args, cutpoint, drive_args, make_image, raw_bytes

CHUNK = 4 << 20


def _vm(bare_qemu, tmp_path: Path):
    a = make_image(tmp_path / "a.qcow2", "64M", writes=["write -P 0xab 1M 3M", "write -P 0x11 20M 1M"])
    # b holds at 8M exactly the 4 MiB chunk that a holds at 0..4M? no: a chunk equal to one of c's
    b = make_image(tmp_path / "b.raw", "48M", "raw", writes=["write -P 0xcd 0 5M", "write -P 0x11 20M 4M"])
    c = make_image(tmp_path / "c.qcow2", "16M", writes=["write -P 0x11 4M 4M"])
    vm = bare_qemu(blockdev_args(a, "sys") + drive_args(b, "data", "raw") + blockdev_args(c, "logs"))
    return vm, {"sys": a, "data": b, "logs": c}


def test_backup_json_contract_and_byte_identical_restore(bare_qemu, tmp_path: Path) -> None:
    vm, images = _vm(bare_qemu, tmp_path)
    cutpoint("vm", "add", "web", "--qmp", str(vm.qmp), check=True)
    r = cutpoint("backup", "web", "--json", check=True)
    res = json.loads(r.out)
    assert list(res) == ["point", "vm", "created", "consistency", "requested", "fallback_reason", "pause_ms",
                         "frozen_ms", "mode", "full_reason", "parent", "duration_s", "warnings", "skipped", "disks"]
    assert all(list(d) == ["name", "size", "read_bytes", "stored_bytes", "dirty_bytes", "mode", "cache"]
               for d in res["disks"])
    assert res["vm"] == "web" and res["consistency"] == "crash" and res["mode"] == "full"
    assert res["created"].endswith("Z") and 0 < res["pause_ms"] < 5000
    disks = {d["name"]: d for d in res["disks"]}
    assert set(disks) == {"sys", "data", "logs"}
    assert disks["sys"]["size"] == 64 << 20 and disks["data"]["size"] == 48 << 20
    # zero regions (per base:allocation) are not read
    assert disks["sys"]["read_bytes"] < 64 << 20

    for fmt in ("raw", "qcow2"):
        out = tmp_path / f"restored-{fmt}"
        r = cutpoint("restore", "web", res["point"], "--to", str(out), "--format", fmt, "--json", check=True)
        files = json.loads(r.out)
        assert files["point"] == res["point"]
        assert {f["disk"] for f in files["files"]} == {"sys", "data", "logs"}
        for f in files["files"]:
            assert Path(f["path"]).name == f"{f['disk']}.{fmt}" and f["size"] == disks[f["disk"]]["size"]
            assert raw_bytes(Path(f["path"])) == raw_bytes(images[f["disk"]]), f["disk"]
    # raw restores are sparse where the source read as zero
    st = os.stat(tmp_path / "restored-raw" / "sys.raw")
    assert st.st_blocks * 512 < 16 << 20


@pytest.mark.both_formats
def test_identical_chunks_are_stored_once(bare_qemu, tmp_path: Path, vault_format: int) -> None:
    vm, _ = _vm(bare_qemu, tmp_path)
    cutpoint("vm", "add", "web", "--qmp", str(vm.qmp), check=True)
    first = json.loads(cutpoint("backup", "web", "--json", check=True).out)
    stored = sum(d["stored_bytes"] for d in first["disks"])
    if vault_format == 3:
        # 4 MiB chunks. sys: 2 chunks with data (0-4M, 20-24M), data: 2 (0-4M, 4-8M), logs: 1 (same as data's
        # 20-24M): data's 20-24M chunk == logs' 4-8M chunk == all 0x11: one file. sys's 20-24M chunk holds 0x11 in 1M.
        assert _stored() == 5 and stored == _stored_bytes()
    else:
        # 64 KiB chunks: every non-zero chunk is all 0xab, all 0x11 or all 0xcd: three blobs for 13 MiB of data
        assert _stored() == 3 and stored == _stored_bytes()
    second = json.loads(cutpoint("backup", "web", "--full", "--json", check=True).out)
    assert second["mode"] == "full" and "requested" in second["full_reason"]
    assert sum(d["stored_bytes"] for d in second["disks"]) == 0
    assert _stored() == (5 if vault_format == 3 else 3)


def _stored() -> int:
    """Distinct data chunks in the vault: chunk files (v3) or data blobs in the index (v4)."""
    return len(_sizes())


def _stored_bytes() -> int:
    return sum(_sizes())


def _sizes() -> list[int]:
    from cutpoint.vault.vault import Vault
    v = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    try:
        if not v.packed:
            return [p.stat().st_size for p in (v.root / "chunks").rglob("*") if p.is_file()]
        return [loc.length for loc in v.chunks.index().where.values() if loc.kind == 0]   # type: ignore[union-attr]
    finally:
        v.close()