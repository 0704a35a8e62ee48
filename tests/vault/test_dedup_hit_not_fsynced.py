"""A chunk found already present (a dedup hit) may have been renamed into place by a concurrent backup that has not
yet fsynced its directory: the manifest that references it must not be written before that directory is fsynced too,
or a crash could leave a durable manifest naming a chunk whose name was never made durable."""

from __future__ import annotations

from pathlib import Path

from cutpoint.vault import chunks as chunks_mod
from tests.vault.util import open_vault


def test_dedup_hit_directory_is_fsynced_before_the_manifest(monkeypatch) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(chunks_mod, "fsync_dir", lambda p: synced.append(Path(p)))
    a, b = open_vault(), open_vault()                 # two backups writing at once
    data = b"shared block " * 40000
    cid, written = a.chunks.put(data)                 # backup A renamed it in; its flush has not run yet
    assert written > 0
    cid_b, written_b = b.chunks.put(data)             # backup B: a dedup hit
    assert cid_b == cid and written_b == 0
    b.chunks.flush()                                  # what commit_point does before writing B's manifest
    assert b.chunks.path(cid).parent in synced, synced
    a.close(), b.close()
