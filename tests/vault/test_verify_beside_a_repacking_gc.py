"""A structure-only verify (format v4) judges chunks by the index it read when it began; gc may run beside it and
repack the packs meanwhile. The moved chunks counted as missing, and a sound point was recorded 'failed' (its next
backup then full, prune no longer counting it as good). Before a verdict, verify now looks again with a fresh
index."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from cutpoint.catalog.db import VmRecord
from cutpoint.vault import gc as gcmod
from cutpoint.vault.packstore import PackStore
from cutpoint.vault.prune import prune
from cutpoint.vault.retention import Retention
from cutpoint.vault.vault import Vault
from cutpoint.vault.verify import verify
from tests.helpers import commit_synthetic_point


def test_a_structure_verify_beside_a_repacking_gc_records_no_false_failure(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "packed"
    Vault.create(root, version=4)
    v = Vault.open(root)
    v.catalog.add_vm(VmRecord("v", "qmp", "/x", datetime.now(timezone.utc).isoformat(), {}))
    a = [os.urandom(64 * 1024) for _ in range(40)]
    commit_synthetic_point(v, "20260101T000000Z-0001", "v", "2026-01-01T00:00:00Z", {"d": list(a)})
    commit_synthetic_point(v, "20260102T000000Z-0002", "v", "2026-01-02T00:00:00Z",
                           {"d": a[:20] + [os.urandom(64 * 1024) for _ in range(20)]})
    prune(v, "v", Retention(last=1))                  # half of the first pack is dead: gc repacks it
    v.close()
    for p in (root / "data").rglob("*"):
        if p.is_file():
            t = p.stat().st_mtime - 5000
            os.utime(p, (t, t))

    lost_ids = PackStore.lost_ids
    repacked: list[int] = []

    def gc_repacks_first(self: PackStore) -> set[bytes]:
        if not repacked:                              # verify has walked the trees with its index; gc runs now
            g = Vault.open(root)
            try:
                repacked.append(gcmod.gc(g, grace=0).packs_repacked)
            finally:
                g.close()
        return lost_ids(self)

    monkeypatch.setattr(PackStore, "lost_ids", gc_repacks_first)
    ver = Vault.open(root)
    try:
        rep = verify(ver)
        assert repacked and repacked[0] >= 1, repacked
        assert [(p.point, p.state, p.problems) for p in rep.points] == [("20260102T000000Z-0002", "ok", [])]
        rec = ver.catalog.verified("20260102T000000Z-0002")
        assert rec is not None and rec.state == "ok", rec
    finally:
        ver.close()
