"""The verifier, on images the real workload program wrote (host --files mode), intact and damaged in the ways a
broken backup damages them: a dropped write, a stale slot, disks cut at different moments, swapped disks, torn and
garbage blocks, a missing disk."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cutpoint.errors import NotFoundError
from cutpoint.lab.image import compile_workload
from cutpoint.lab.verify import BLOCK, make_block, schedule, stride, verify_dir, verify_images
from tests.helpers import cutpoint

SEED = 0xC0FFEE
SLOTS = 64
SIZES = [4 << 20, 2 << 20, 3 << 20]


@pytest.fixture(scope="session")
def workload_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_workload(tmp_path_factory.mktemp("wl") / "workload")


def run(bin: Path, files: list[Path], count: int, seed: int = SEED, slots: int = SLOTS) -> str:
    r = subprocess.run([str(bin), "--files", *map(str, files), "--seed", str(seed), "--slots", str(slots),
                        "--count", str(count)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def make_disks(d: Path, sizes: list[int] = SIZES) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    files = []
    for i, size in enumerate(sizes):
        p = d / f"disk{i}.raw"
        with open(p, "wb") as f:
            f.truncate(size)
        files.append(p)
    return files


def snapshot(files: list[Path], d: Path) -> list[Path]:
    d.mkdir()
    return [Path(shutil.copy(f, d / f.name)) for f in files]


def slot_offset(path: Path, slot: int) -> int:
    return slot * stride(path.stat().st_size, SLOTS)


def read_slot(path: Path, slot: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(slot_offset(path, slot))
        return f.read(BLOCK)


def write_slot(path: Path, slot: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(slot_offset(path, slot))
        f.write(data)


def last_writers(k: int, ndisks: int = 3) -> dict[tuple[int, int], list[int]]:
    out: dict[tuple[int, int], list[int]] = {}
    for seq in range(1, k + 1):
        out.setdefault(schedule(SEED, seq, ndisks, SLOTS), []).append(seq)
    return out


def test_consistent_prefix_and_resume(workload_bin: Path, tmp_path: Path) -> None:
    files = make_disks(tmp_path / "d")
    out = run(workload_bin, files, 1500)
    assert "CUTPOINT-WORKLOAD-STARTED seq=1 " in out
    v = verify_images(files)
    assert v.ok and v.k == 1500 and v.ndisks == 3, v.summary()
    assert v.disks == [str(f) for f in files] and v.seed == SEED and v.nslots == SLOTS
    assert v.summary() == "consistent: prefix of the first k=1500 writes across 3 disks"
    out = run(workload_bin, files, 700)  # a restarted guest resumes the same global order
    assert "STARTED seq=1501 " in out
    assert verify_dir(tmp_path / "d").k == 2200
    assert verify_images(files, strict_order=True).ok


def test_python_block_format_matches_the_c_program(workload_bin: Path, tmp_path: Path) -> None:
    files = make_disks(tmp_path / "d")
    run(workload_bin, files, 100)
    disk, slot = schedule(SEED, 100, 3, SLOTS)
    assert read_slot(files[disk], slot) == make_block(SEED, 100, disk, 3, slot, SLOTS)
    assert read_slot(files[disk], slot)[:8] == b"CUTPTWL1"


def test_unwritten_disks_are_the_empty_prefix(tmp_path: Path) -> None:
    v = verify_images(make_disks(tmp_path / "d"))
    assert v.ok and v.k == 0


def test_in_flight_write_may_be_absent(workload_bin: Path, tmp_path: Path) -> None:
    files = make_disks(tmp_path / "d")
    run(workload_bin, files, 999)
    before = snapshot(files, tmp_path / "before")
    run(workload_bin, files, 1)
    # Undo only write 1000, the last one: that is the consistent state k=999.
    disk, slot = schedule(SEED, 1000, 3, SLOTS)
    write_slot(files[disk], slot, read_slot(before[disk], slot))
    v = verify_images(files)
    assert v.ok and v.k == 999, v.summary()


def test_dropped_write_is_caught(workload_bin: Path, tmp_path: Path) -> None:
    files = make_disks(tmp_path / "d")
    run(workload_bin, files, 300)
    # A slot written exactly once, well before the end: losing that write leaves later writes without it.
    (disk, slot), seqs = next((key, s) for key, s in sorted(last_writers(300).items()) if len(s) == 1 and s[0] < 250)
    write_slot(files[disk], slot, bytes(BLOCK))
    v = verify_images(files)
    assert not v.ok and v.k == 300
    assert v.first_missing == seqs[0]
    assert any(f"disk{disk} slot {slot}" in m and f"missing write {seqs[0]}" in m for m in v.violations), v.violations
    assert "VIOLATION" in v.summary()


def test_stale_overwritten_slot_is_caught(workload_bin: Path, tmp_path: Path) -> None:
    files = make_disks(tmp_path / "d")
    run(workload_bin, files, 2000)
    # Not the very last write (its absence is simply the consistent state k=1999).
    (disk, slot), seqs = next((key, s) for key, s in sorted(last_writers(2000).items()) if len(s) >= 2 and s[-1] < 1900)
    old, new = seqs[-2], seqs[-1]
    write_slot(files[disk], slot, make_block(SEED, old, disk, 3, slot, SLOTS))  # the overwrite never landed
    v = verify_images(files)
    assert not v.ok
    msg = (f"disk{disk} slot {slot} ({files[disk]}): holds seq {old}, expected seq {new} "
           f"(missing writes {old + 1}..{new})")
    assert msg in v.violations, v.violations


def test_disks_cut_at_different_moments_are_caught(workload_bin: Path, tmp_path: Path) -> None:
    files = make_disks(tmp_path / "d")
    run(workload_bin, files, 800)
    early = snapshot(files, tmp_path / "early")
    run(workload_bin, files, 800)
    # What a non-atomic backup produces: disk1 copied before, the others after 800 more writes.
    mixed = [files[0], early[1], files[2]]
    v = verify_images(mixed)
    assert not v.ok and v.k == 1600
    assert v.violations and all("disk1 slot" in m for m in v.violations), v.violations
    assert v.violation_count >= len(v.violations)


def test_swapped_disks(workload_bin: Path, tmp_path: Path) -> None:
    files = make_disks(tmp_path / "d")
    run(workload_bin, files, 500)
    swapped = [files[1], files[0], files[2]]
    assert verify_images(swapped).ok  # the headers say which disk an image is
    v = verify_images(swapped, strict_order=True)  # ... unless the order itself is what is checked
    assert not v.ok
    assert any("disk1.raw is image 0 but holds disk 1" in m for m in v.violations), v.violations
    # Content swapped between two disks inside one image: each block says which disk it belongs to.
    (d0, s0) = schedule(SEED, 500, 3, SLOTS)
    other = (d0 + 1) % 3
    write_slot(files[other], s0, read_slot(files[d0], s0))
    v = verify_images(files)
    assert not v.ok and any("mixes blocks of disks" in m for m in v.violations), v.violations


def test_torn_and_garbage_blocks_are_caught(workload_bin: Path, tmp_path: Path) -> None:
    files = make_disks(tmp_path / "d")
    run(workload_bin, files, 1000)
    disk, slot = schedule(SEED, 1000, 3, SLOTS)
    block = read_slot(files[disk], slot)
    write_slot(files[disk], slot, block[:2048] + bytes(2048))  # half the sectors of the last write landed
    v = verify_images(files)
    assert not v.ok
    assert any(f"disk{disk} slot {slot}" in m and "torn block" in m for m in v.violations), v.violations

    write_slot(files[disk], slot, block)
    assert verify_images(files).ok
    disk2, slot2 = schedule(SEED, 10, 3, SLOTS)
    write_slot(files[disk2], slot2, os.urandom(BLOCK))
    v = verify_images(files)
    assert not v.ok and any(f"disk{disk2} slot {slot2}" in m and "garbage" in m for m in v.violations)


def test_missing_disk_image_is_caught(workload_bin: Path, tmp_path: Path) -> None:
    files = make_disks(tmp_path / "d")
    run(workload_bin, files, 300)
    v = verify_images(files[:2])
    assert not v.ok and any("disk2: no image holds it" in m for m in v.violations), v.violations


def test_qcow2_and_raw_mixed_in_a_directory(workload_bin: Path, tmp_path: Path) -> None:
    files = make_disks(tmp_path / "d")
    run(workload_bin, files, 400)
    q = files[1].with_suffix(".qcow2")
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(files[1]), str(q)], check=True)
    files[1].unlink()
    (tmp_path / "d" / "notes.txt").write_text("not an image")
    v = verify_dir(tmp_path / "d")
    assert v.ok and v.k == 400 and v.disks[1] == str(q), v.summary()
    assert sorted(os.listdir(tmp_path / "d")) == ["disk0.raw", "disk1.qcow2", "disk2.raw", "notes.txt"]


def test_no_images_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no disk images"):
        verify_dir(tmp_path)


def test_cli_verify_exit_codes(workload_bin: Path, tmp_path: Path) -> None:
    files = make_disks(tmp_path / "d")
    run(workload_bin, files, 300)
    r = cutpoint("lab", "verify", str(tmp_path / "d"))
    assert r.code == 0 and "consistent: prefix of the first k=300 writes across 3 disks" in r.out, r.err
    disk, slot = schedule(SEED, 300, 3, SLOTS)
    write_slot(files[disk], slot, os.urandom(BLOCK))
    r = cutpoint("lab", "verify", "--json", str(tmp_path / "d"))
    assert r.code == 7, (r.out, r.err)
    assert '"ok": false' in r.out
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cutpoint("lab", "verify", str(empty))
    assert r.code == 3 and "no disk images" in r.err


def test_foreign_data_without_any_workload_block_is_not_an_empty_prefix(tmp_path: Path) -> None:
    files = make_disks(tmp_path / "d")
    write_slot(files[1], 5, b"\0" * 100 + b"not a workload block".ljust(BLOCK - 100, b"x"))
    v = verify_images(files)
    assert not v.ok and v.k == 0
    assert v.violations == [f"{files[1]}: no workload block anywhere, but non-zero data at offset "
                            f"{slot_offset(files[1], 5) + 100}"]
