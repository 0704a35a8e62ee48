"""A catalog row is vault data: whoever can write the vault can plant a point whose id is a path ('../../x') with a
matching manifest column. Prune must not turn that id into an unlink outside the vault (it deleted the file)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tests.helpers import cutpoint


def test_prune_does_not_unlink_through_a_hostile_point_id(tmp_path: Path) -> None:
    vault = Path(os.environ["CUTPOINT_VAULT"])
    victim = tmp_path / "victim.manifest"                     # outside the vault
    victim.write_text("precious")
    (vault / "points" / "v").mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(tmp_path / "victim", vault / "points" / "v")
    cutpoint("points", check=True)                              # the catalog and its tables exist
    db = sqlite3.connect(vault / "catalog.sqlite")
    for pid, created, manifest in ((rel, "2026-01-01T00:00:00.000Z", f"points/v/{rel}.manifest"),
                                   ("20260102T000000Z-beef", "2026-01-02T00:00:00.000Z",
                                    "points/v/20260102T000000Z-beef.manifest")):
        db.execute("INSERT INTO points VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   (pid, "v", created, "crash", "full", 1.0, 0, 0, 0, manifest, "{}"))
    db.commit()
    db.close()
    cutpoint("vault", "trust")                                  # the planted rows are accepted as the vault is now
    cutpoint("prune", "v", "--keep-last", "1")
    assert victim.read_text() == "precious"
