"""A libvirt replace whose point lacks a chunk in the vault refuses before writing anything: every disk file keeps
its inode, size and mtime and the domain keeps its checkpoint. With the chunk back, the replace writes in place (same
files, only differing chunks) and the disks read as the point."""

from __future__ import annotations

import json
import os
from pathlib import Path

import libvirt
import pytest

from cutpoint.vault.vault import Vault
from tests.helpers import cutpoint, raw_bytes
from tests.vault.util import hide_chunk, one_line_error

pytestmark = pytest.mark.vm


def _stat(p: Path) -> tuple[int, int, int]:
    st = p.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def test_replace_with_a_missing_chunk_writes_nothing(lab_domain, tmp_path: Path) -> None:
    lab = lab_domain(["qcow2", "raw"], tag="miss")
    cutpoint("vm", "add", "d", "--libvirt", lab.name, check=True)
    point = json.loads(cutpoint("backup", "d", "--json", check=True).out)["point"]
    ref = tmp_path / "ref"
    cutpoint("restore", "d", point, "--to", str(ref), check=True)
    lab.dom.destroyFlags(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)

    v = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    m = v.manifest(v.catalog.point("d", point))
    v.close()
    vdb = next(d for d in m.disks if d.name == "vdb")
    cid = [c for c in vdb.chunks if c][-1]              # on the second disk: the first would be written before it
    put_back = hide_chunk(cid)
    before = {p: _stat(p) for p in lab.disks}

    one_line_error(cutpoint("restore", "d", point, "--replace"), 6, "missing from the vault", "nothing was written")
    assert {p: _stat(p) for p in lab.disks} == before
    assert lab.checkpoints() == [f"cutpoint-{point}"]

    put_back()
    res = json.loads(cutpoint("restore", "d", point, "--replace", "--json", check=True).out)
    assert res["mode"] == "replace-domain" and [d["disk"] for d in res["disks"]] == ["vda", "vdb"]
    assert [_stat(p)[0] for p in lab.disks] == [before[p][0] for p in lab.disks]      # written in place
    for disk, path in zip(("vda", "vdb"), lab.disks):
        assert raw_bytes(path) == (ref / f"{disk}.raw").read_bytes(), disk
    assert lab.checkpoints() == []
