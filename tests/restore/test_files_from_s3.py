"""File-level recovery from a point in an S3 vault: the NBD server process reads the point's packs from the bucket
(ranged GETs, read-ahead), and a file comes back byte-identical without reading the chunks of other files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.helpers import blockdev_args, cutpoint

MiB = 1 << 20


def test_files_ls_and_get_from_an_s3_vault(bare_qemu, tmp_path: Path, s3_bucket: str, s3_env) -> None:
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "config.txt").write_text("from the bucket\n")
    (src / "etc" / "blob.bin").write_bytes(os.urandom(3 * MiB + 17))
    (src / "big.bin").write_bytes(os.urandom(12 * MiB))
    disk = tmp_path / "fs.raw"
    subprocess.run(["mkfs.ext4", "-q", "-d", str(src), str(disk), "32M"], check=True)
    url = f"s3://{s3_bucket}/files"
    v = ("--vault", url)
    cutpoint("vault", "init", url, "--no-encrypt", check=True)
    vm = bare_qemu(blockdev_args(disk, "fs", "raw"))
    cutpoint("vm", "add", "f", "--qmp", str(vm.qmp), *v, check=True)
    cutpoint("backup", "f", *v, check=True)

    ls = json.loads(cutpoint("files", "ls", "f", "latest", "/etc", "--json", *v, check=True).out)
    assert {e["name"] for e in ls["entries"]} == {"config.txt", "blob.bin"}, ls
    out = tmp_path / "out"
    got = json.loads(cutpoint("files", "get", "f", "latest", "/etc", "--to", str(out), "--json", *v,
                              check=True).out)
    assert (out / "etc" / "config.txt").read_text() == "from the bucket\n"
    assert (out / "etc" / "blob.bin").read_bytes() == (src / "etc" / "blob.bin").read_bytes()
    assert got["chunks_read"] < got["chunks_stored"], got         # big.bin's chunks were never read
