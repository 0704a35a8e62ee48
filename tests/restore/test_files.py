"""File-level recovery from a point: ext4 and vfat, whole-disk and GPT-partitioned, fetching only needed chunks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import blockdev_args, cutpoint

MiB = 1 << 20


def _one_line_error(r, code: int, *needles: str) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cutpoint: error: "), r.err
    for n in needles:
        assert n in lines[0], lines[0]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def point(bare_qemu, tmp_path: Path):
    """A bare VM with four disks, backed up once: ext4 on the whole disk (qcow2), a GPT disk with vfat and ext4
    partitions (raw), a swap disk (raw) and vfat on the whole disk (raw); returns (source trees, point id)."""
    rnd = os.urandom
    ext_src = tmp_path / "ext-src"
    (ext_src / "dir" / "nested").mkdir(parents=True)
    (ext_src / "hello.txt").write_text("hello from ext4\n")
    (ext_src / "dir" / "nested" / "data.bin").write_bytes(rnd(2 * MiB + 123))
    (ext_src / "dir" / "small.txt").write_text("small\n")
    (ext_src / "big.bin").write_bytes(rnd(16 * MiB))
    raw_a = tmp_path / "a.raw"
    subprocess.run(["mkfs.ext4", "-q", "-d", str(ext_src), str(raw_a), "64M"], check=True)
    disk_a = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw_a), str(disk_a)], check=True)

    fat_src = tmp_path / "fat-src"
    (fat_src / "docs").mkdir(parents=True)
    (fat_src / "Long File Name.txt").write_bytes(rnd(300_000))
    (fat_src / "docs" / "readme.txt").write_text("vfat readme\n")
    fat = tmp_path / "fat.img"
    subprocess.run(["truncate", "-s", "24M", str(fat)], check=True)
    subprocess.run(["mkfs.vfat", "-n", "CPTEST", str(fat)], check=True, capture_output=True)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    subprocess.run(["mcopy", "-s", "-i", str(fat), str(fat_src / "Long File Name.txt"), str(fat_src / "docs"),
                    "::/"], check=True, env=env)
    ext2_src = tmp_path / "ext2-src"
    ext2_src.mkdir()
    (ext2_src / "in-part2.txt").write_text("second partition\n")
    part2 = tmp_path / "p2.img"
    subprocess.run(["mkfs.ext4", "-q", "-d", str(ext2_src), str(part2), "16M"], check=True)
    disk_b = tmp_path / "b.raw"
    subprocess.run(["truncate", "-s", "48M", str(disk_b)], check=True)
    subprocess.run(["sfdisk", "-q", str(disk_b)], input=b"label: gpt\nstart=2048, size=49152, type=EBD0A0A2-B9E5-"
                   b"4433-87C0-68B6B72699C7\nstart=51200, size=32768, type=L\n", check=True)
    for img, sector in ((fat, 2048), (part2, 51200)):
        subprocess.run(["dd", f"if={img}", f"of={disk_b}", "bs=512", f"seek={sector}", "conv=notrunc,sparse",
                        "status=none"], check=True)
    disk_d = tmp_path / "d.raw"                 # the same vfat on a whole disk, no partition table
    disk_d.write_bytes(fat.read_bytes())
    disk_c = tmp_path / "c.raw"
    subprocess.run(["truncate", "-s", "8M", str(disk_c)], check=True)
    subprocess.run(["mkswap", str(disk_c)], check=True, capture_output=True)

    vm = bare_qemu(blockdev_args(disk_a, "exta") + blockdev_args(disk_b, "gpt", "raw")
                   + blockdev_args(disk_c, "swap", "raw") + blockdev_args(disk_d, "fatd", "raw"))
    cutpoint("vm", "add", "src", "--qmp", str(vm.qmp), check=True)
    res = json.loads(cutpoint("backup", "src", "--json", check=True).out)
    return {"ext": ext_src, "fat": fat_src, "ext2": ext2_src}, res["point"]


@pytest.mark.both_formats
def test_ls_get_and_bad_input(point, tmp_path: Path) -> None:
    src, pid = point
    over = json.loads(cutpoint("files", "ls", "src", pid, "--json", check=True).out)
    kinds = {d["disk"]: [(v["partition"], v["fstype"]) for v in d["volumes"]] for d in over["disks"]}
    assert kinds == {"exta": [(0, "ext4")], "gpt": [(1, "vfat"), (2, "ext4")], "swap": [(0, "swap")],
                     "fatd": [(0, "vfat")]}

    root = json.loads(cutpoint("files", "ls", "src", pid, "--disk", "exta", "--json", check=True).out)
    names = {e["name"]: e for e in root["entries"]}
    assert {"hello.txt", "dir", "big.bin", "lost+found"} <= set(names)
    assert names["dir"]["type"] == "dir" and names["big.bin"]["size"] == 16 * MiB
    one = json.loads(cutpoint("files", "ls", "src", pid, "--disk", "exta", "/dir/nested/data.bin", "--json",
                              check=True).out)
    assert one["type"] == "file" and one["entries"][0]["size"] == 2 * MiB + 123

    out = tmp_path / "out"
    got = json.loads(cutpoint("files", "get", "src", pid, "--disk", "exta", "/dir/nested/data.bin", "--to", str(out),
                              "--json", check=True).out)
    assert (out / "data.bin").read_bytes() == (src["ext"] / "dir" / "nested" / "data.bin").read_bytes()
    assert got["chunks_read"] < got["chunks_stored"], got         # the 16 MiB file's chunks were never read
    job = json.loads(cutpoint("jobs", "--json", "--limit", "1", check=True).out)[0]   # a restore job, like any
    assert (job["kind"], job["state"], job["point"], job["bytes"]) == ("restore", "succeeded", pid, got["bytes"])
    assert job["detail"]["mode"] == "files" and job["detail"]["chunks_read"] == got["chunks_read"]
    json.loads(cutpoint("files", "get", "src", pid, "--disk", "exta", "/dir", "--to", str(out), "--json",
                        check=True).out)
    assert _tree(out / "dir") == _tree(src["ext"] / "dir")

    fat_root = json.loads(cutpoint("files", "ls", "src", pid, "--disk", "gpt", "--json", check=True).out)
    assert fat_root["volume"]["fstype"] == "vfat"
    assert {e["name"] for e in fat_root["entries"]} == {"Long File Name.txt", "docs"}
    cutpoint("files", "get", "src", pid, "--disk", "gpt", "/Long File Name.txt", "--to", str(out), check=True)
    cutpoint("files", "get", "src", pid, "--disk", "gpt", "/DOCS", "--to", str(out), check=True)
    assert (out / "Long File Name.txt").read_bytes() == (src["fat"] / "Long File Name.txt").read_bytes()
    assert _tree(out / "docs") == _tree(src["fat"] / "docs")
    cutpoint("files", "get", "src", pid, "--disk", "gpt", "--part", "2", "/in-part2.txt", "--to", str(out),
             check=True)
    assert (out / "in-part2.txt").read_text() == "second partition\n"
    whole = tmp_path / "out-whole-vfat"                  # vfat on a disk without a partition table
    listed = json.loads(cutpoint("files", "ls", "src", pid, "--disk", "fatd", "/docs", "--json", check=True).out)
    assert listed["volume"]["fstype"] == "vfat" and [e["name"] for e in listed["entries"]] == ["readme.txt"]
    cutpoint("files", "get", "src", pid, "--disk", "fatd", "/Long File Name.txt", "--to", str(whole), check=True)
    assert (whole / "Long File Name.txt").read_bytes() == (src["fat"] / "Long File Name.txt").read_bytes()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]

    # bad input: one clear line, non-zero exit, nothing half-written
    out = tmp_path / "out-bad"
    _one_line_error(cutpoint("files", "get", "src", pid, "--disk", "exta", "/no/such", "--to", str(out)), 3,
                    "/no/such", "does not exist")
    _one_line_error(cutpoint("files", "ls", "src", pid, "--disk", "gpt", "/nosuch.txt"), 3, "does not exist")
    _one_line_error(cutpoint("files", "ls", "src", pid, "--disk", "swap"), 9, "swap", "ext2, ext3, ext4, vfat")
    _one_line_error(cutpoint("files", "ls", "src", pid, "--disk", "nodisk"), 3, "no disk 'nodisk'")
    _one_line_error(cutpoint("files", "ls", "src", "nopoint", "--disk", "exta"), 3, "no restore point")
    _one_line_error(cutpoint("files", "ls", "src", pid, "--disk", "gpt", "--part", "7"), 3, "no partition 7")
    cutpoint("files", "get", "src", pid, "--disk", "exta", "/hello.txt", "--to", str(out), check=True)
    _one_line_error(cutpoint("files", "get", "src", pid, "--disk", "exta", "/hello.txt", "--to", str(out)), 2,
                    "already exists")
    assert sorted(p.name for p in out.iterdir()) == ["hello.txt"]      # nothing half-written


@pytest.mark.both_formats
def test_mount(point, tmp_path: Path) -> None:
    src, pid = point
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = cutpoint("mount", "src", pid, str(mnt), "--disk", "exta", "--json")
    if r.code == 9:
        pytest.skip(f"host cannot mount through FUSE: {r.err}")
    assert r.code == 0, r.err
    try:
        assert (mnt / "dir" / "nested" / "data.bin").read_bytes() == \
            (src["ext"] / "dir" / "nested" / "data.bin").read_bytes()
        with pytest.raises(OSError):
            (mnt / "new.txt").write_text("read-only")
    finally:
        cutpoint("umount", str(mnt), check=True)
    assert not os.path.ismount(mnt) and list(mnt.iterdir()) == []
    mnt2 = tmp_path / "mnt2"
    mnt2.mkdir()
    cutpoint("mount", "src", pid, str(mnt2), "--disk", "gpt", "--part", "2", check=True)
    try:
        assert (mnt2 / "in-part2.txt").read_text() == "second partition\n"
    finally:
        cutpoint("umount", str(mnt2), check=True)
    _one_line_error(cutpoint("mount", "src", pid, str(mnt2), "--disk", "gpt"), 9, "cannot mount vfat",
                    "cutpoint files")


@pytest.mark.no_vault
def test_files_from_an_encrypted_vault(bare_qemu, tmp_path: Path) -> None:
    """The NBD server is another process: it unlocks the vault with the passphrase file the command was given."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret.txt").write_text("only with the passphrase\n")
    disk = tmp_path / "e.raw"
    subprocess.run(["mkfs.ext4", "-q", "-d", str(src), str(disk), "16M"], check=True)
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    cutpoint("vault", "init", "--encrypt", "--passphrase-file", str(pw), check=True)
    vm = bare_qemu(blockdev_args(disk, "enc", "raw"))
    cutpoint("vm", "add", "e", "--qmp", str(vm.qmp), "--passphrase-file", str(pw), check=True)
    cutpoint("backup", "e", "--passphrase-file", str(pw), check=True)
    out = tmp_path / "out"
    cutpoint("files", "get", "e", "latest", "/secret.txt", "--to", str(out), "--passphrase-file", str(pw), check=True)
    assert (out / "secret.txt").read_text() == "only with the passphrase\n"
