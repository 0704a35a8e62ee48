"""Backup and restore through the real CLI on a paused QEMU whose disks hold known data."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def test_identical_chunks_are_stored_once(bare_qemu, tmp_path: Path) -> None:
    vm, _ = _vm(bare_qemu, tmp_path)
    cutpoint("vm", "add", "web", "--qmp", str(vm.qmp), check=True)
    first = json.loads(cutpoint("backup", "web", "--json", check=True).out)
    # data's chunk at 20M..24M and logs' chunk at 4M..8M hold identical bytes: stored once
    stored = sum(d["stored_bytes"] for d in first["disks"])
    chunk_files = [p for p in (Path(os.environ["CUTPOINT_VAULT"]) / "chunks").rglob("*") if p.is_file()]
    # sys: 2 chunks with data (0-4M, 20-24M), data: 2 (0-4M, 4-8M), logs: 1 (same as data's 20-24M)
    # data's 20-24M chunk == logs' 4-8M chunk == all 0x11: one file. sys's 20-24M chunk holds 0x11 only in 1M.
    assert len(chunk_files) == 5
    assert stored == sum(p.stat().st_size for p in chunk_files)
    second = json.loads(cutpoint("backup", "web", "--full", "--json", check=True).out)
    assert second["mode"] == "full" and "requested" in second["full_reason"]
    assert sum(d["stored_bytes"] for d in second["disks"]) == 0
    assert len([p for p in (Path(os.environ["CUTPOINT_VAULT"]) / "chunks").rglob("*") if p.is_file()]) == 5
