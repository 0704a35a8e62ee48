"""A format v4 backup that deduplicates against an old pack of dead blobs registers that pack, so that gc keeps it.
When the backup commits and ends while gc is still marking, its registration is gone before gc reads them, and its
point was not among those gc marked: gc deleted (or repacked without them) the blobs the new point references.
gc now also marks, under the packs lock, the points committed since its mark."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from cutpoint.catalog.db import VmRecord
from cutpoint.vault import packgc
from cutpoint.vault.prune import prune
from cutpoint.vault.retention import Retention
from cutpoint.vault.vault import Vault
from cutpoint.vault.verify import verify
from tests.helpers import commit_synthetic_point
from tests.vault.util import age_packs, gc_now

KiB = 1024


def test_a_backup_that_relied_on_an_old_pack_and_ended_during_the_mark_keeps_its_blobs(
        tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "packed"
    Vault.create(root, version=4)
    v = Vault.open(root)
    now = datetime.now(timezone.utc).isoformat()
    for name in ("v", "w"):
        v.catalog.add_vm(VmRecord(name, "qmp", "/x", now, {}))
    x = [os.urandom(64 * KiB) for _ in range(8)]
    commit_synthetic_point(v, "20260101T000000Z-0001", "w", "2026-01-01T00:00:00Z", {"d": list(x)})
    commit_synthetic_point(v, "20260102T000000Z-0002", "w", "2026-01-02T00:00:00Z", {"d": [os.urandom(64 * KiB)]})
    prune(v, "w", Retention(last=1))                 # x's blobs are dead now, in a pack older than the cutoff
    v.close()
    age_packs(root, 5000)

    sweep = packgc.sweep

    def a_backup_ends_during_the_mark(*args, **kwargs):  # type: ignore[no-untyped-def]
        b = Vault.open(root)
        try:
            with b.vm_lock("v"):                     # a backup of VM v: it finds x in the old pack, relies on it
                commit_synthetic_point(b, "20260103T000000Z-0003", "v", "2026-01-03T00:00:00Z", {"d": list(x)})
        finally:
            b.close()                                # ... and ends: its registration goes with it
        return sweep(*args, **kwargs)

    monkeypatch.setattr(packgc, "sweep", a_backup_ends_during_the_mark)
    gc_now(root)
    rv = Vault.open(root)
    try:
        rep = verify(rv, read_data=True)
        assert {p.point: p.state for p in rep.points} == {"20260102T000000Z-0002": "ok",
                                                          "20260103T000000Z-0003": "ok"}, rep.points
        m = rv.manifest(rv.catalog.point("v", "20260103T000000Z-0003"))
        assert [rv.chunks.get(c) for c in m.disks[0].chunks] == x
    finally:
        rv.close()
