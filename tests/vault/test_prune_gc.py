"""prune and gc end to end on synthetic points (no VM needed): what stays, what goes and why, --dry-run changes
nothing, gc frees exactly the pruned points' chunks and says how much, and the lock table holds (prune waits for
nobody: it is refused while a reader holds the points; a second gc is refused)."""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

from cutpoint.catalog.db import VmRecord
from tests.helpers import cutpoint
from tests.helpers import commit_synthetic_point
from tests.vault.util import MiB, files, one_line_error, open_vault, points, v3_vault, vault_dir


def _points(created: list[str]) -> list[str]:
    """One point per time, each with 1 MiB of its own random data (v3: one chunk; v4: 16 chunks of 64 KiB)."""
    v = open_vault()
    v.catalog.add_vm(VmRecord("v", "qmp", "/nonexistent", "2023-01-01T00:00:00Z", {}))
    ids = []
    for i, c in enumerate(created):
        when = datetime.fromisoformat(c).replace(tzinfo=timezone.utc)
        pid = when.strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(2)
        cs = min(v.chunk_size, MiB)
        commit_synthetic_point(v, pid, "v", when.isoformat().replace("+00:00", "Z"),
                               {"d": [os.urandom(cs) for _ in range(MiB // cs)]}, {"point": pid},
                               sizes={"d": 1 * MiB})
        ids.append(pid)
    v.close()
    return ids


def test_prune_then_gc(tmp_path: Path) -> None:
    """Format v3: a file per chunk, counted one by one."""
    v3_vault()
    ids = _points(["2023-12-30T10:00:00", "2023-12-31T09:00:00", "2023-12-31T18:00:00", "2024-01-01T08:00:00",
                   "2024-01-02T08:00:00", "2024-01-02T09:00:00"])
    d30, d31a, d31b, j1, j2a, j2b = ids
    args = ["prune", "v", "--keep-last", "2", "--keep-daily", "3", "--keep-yearly", "2"]

    dry = cutpoint(*args, "--dry-run", check=True).out
    rows = {next(f for f in line.split() if f in ids): line for line in dry.splitlines()
            if line.startswith(("keep ", "would remove "))}
    assert set(rows) == set(ids)
    assert "last 1, daily 2024-01-02, yearly 2024" in rows[j2b] and "last 2" in rows[j2a]
    assert "daily 2023-12-31, yearly 2023" in rows[d31b] and "daily 2024-01-01" in rows[j1]
    assert rows[d30].startswith("would remove") and "no rule keeps it" in rows[d30]
    assert rows[d31a].startswith("would remove")
    assert "4 kept, 2 to remove" in dry
    assert points() == ids and len(files("points", "*.manifest")) == 6        # dry run: nothing changed

    res = json.loads(cutpoint(*args, "--json", check=True).out)
    assert {k["point"] for k in res["keep"]} == {d31b, j1, j2a, j2b}
    assert {r["point"] for r in res["remove"]} == {d30, d31a}
    assert points() == [d31b, j1, j2a, j2b] and len(files("points", "*.manifest")) == 4

    chunk_bytes = sum(p.stat().st_size for p in files("chunks"))
    dry_gc = json.loads(cutpoint("gc", "--grace", "0", "--dry-run", "--json", check=True).out)
    assert dry_gc["removed_chunks"] == 2 and len(files("chunks")) == 6
    out = cutpoint("gc", "--grace", "0", check=True).out
    left = sum(p.stat().st_size for p in files("chunks"))
    assert len(files("chunks")) == 4 and dry_gc["freed_bytes"] == chunk_bytes - left > 2 * MiB
    assert "removed 2 chunks" in out and "freed 2.0 MiB" in out
    assert json.loads(cutpoint("gc", "--json", check=True).out)["removed_chunks"] == 0
    assert json.loads(cutpoint("verify", "--read-data", "--json", check=True).out)["ok"]

    # the default grace keeps what was just written
    v = open_vault()
    cid, _ = v.chunks.put(os.urandom(MiB))
    v.close()
    g = json.loads(cutpoint("gc", "--json", check=True).out)
    assert g["removed_chunks"] == 0 and g["kept_young"] == 1 and (vault_dir() / "chunks" / cid[:2] / cid).exists()


def test_prune_then_gc_of_packs(tmp_path: Path) -> None:
    """Format v4: each point's chunks and index nodes are one small pack; gc deletes the pruned points' packs whole,
    merges the small packs that stay into one, and every kept point still reads back."""
    ids = _points(["2024-01-01T00:00:00", "2024-01-02T00:00:00", "2024-01-03T00:00:00", "2024-01-04T00:00:00"])
    assert len(files("data")) == 4
    cutpoint("prune", "v", "--keep-last", "2", check=True)
    before = sum(p.stat().st_size for p in files("data"))
    dry = json.loads(cutpoint("gc", "--grace", "0", "--dry-run", "--json", check=True).out)
    assert (dry["packs_removed"], dry["packs_repacked"]) == (2, 2) and dry["freed_bytes"] > 2 * MiB
    assert sum(p.stat().st_size for p in files("data")) == before          # dry run: nothing changed
    out = cutpoint("gc", "--grace", "0", check=True).out
    assert "packs: 4 seen, 2 deleted, 2 repacked into 1" in out, out
    after = sum(p.stat().st_size for p in files("data"))
    assert len(files("data")) == 1 and before - after > 2 * MiB
    assert points() == ids[2:]
    assert json.loads(cutpoint("verify", "--read-data", "--json", check=True).out)["ok"]
    again = json.loads(cutpoint("gc", "--grace", "0", "--json", check=True).out)
    assert (again["packs_removed"], again["packs_repacked"]) == (0, 0)      # one pack alone stays as it is
    # the default grace keeps what was just written
    v = open_vault()
    cid, _ = v.chunks.put(os.urandom(64 << 10))
    v.chunks.flush()
    v.close()
    g = json.loads(cutpoint("gc", "--json", check=True).out)
    assert g["packs_removed"] == 0 and open_vault().chunks.has(cid)


def test_prune_and_gc_refusals() -> None:
    _points(["2024-01-01T00:00:00", "2024-01-02T00:00:00"])
    one_line_error(cutpoint("prune", "v"), 2, "at least one rule")
    one_line_error(cutpoint("prune", "nosuch", "--keep-last", "1"), 3, "unknown VM 'nosuch'")
    v = open_vault()
    with v.points_lock(shared=True):          # as a restore or verify holds it
        one_line_error(cutpoint("prune", "v", "--keep-last", "1"), 8, "busy", f"pid {os.getpid()}", "prune.lock")
        cutpoint("prune", "v", "--keep-last", "1", "--dry-run", check=True)    # a dry run reads only
    with v.gc_lock():
        one_line_error(cutpoint("gc"), 8, "garbage collection is busy", "gc.lock")
    with v.vm_lock("v"):                      # as a running backup holds it
        one_line_error(cutpoint("prune", "v", "--keep-last", "1"), 8, "VM 'v' is busy")
        assert json.loads(cutpoint("gc", "--grace", "0", "--json", check=True).out)["running_backups"] == ["backup v"]
    v.close()
    assert len(points()) == 2
    cutpoint("prune", "v", "--keep-last", "1", check=True)
    assert len(points()) == 1
