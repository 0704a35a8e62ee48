"""A chunk found already present (a dedup hit) may have been renamed into place by a concurrent backup that has not
yet fsynced its directory: the manifest that references it must not be written before that directory is fsynced too,
or a crash could leave a durable manifest naming a chunk whose name was never made durable."""

from __future__ import annotations

from pathlib import Path

from cutpoint.vault import chunks as chunks_mod
from cutpoint.vault.backend import LocalBackend
from tests.vault.util import open_vault, v3_vault


def test_dedup_hit_directory_is_fsynced_before_the_manifest(monkeypatch) -> None:
    """Format v3: a chunk file per id."""
    v3_vault()
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


def test_no_dedup_hit_on_a_pack_not_yet_durable(monkeypatch) -> None:
    """Format v4: a blob is found by another backup only through an index object, which is written after one sync of
    the packs it lists; a concurrent backup's pack that is not yet synced and indexed is invisible, so the second
    backup stores the blob itself rather than reference something not durable."""
    events: list[str] = []
    put, sync = LocalBackend.put, LocalBackend.sync
    monkeypatch.setattr(LocalBackend, "put", lambda self, name, data: (events.append(f"put {name.split('/')[0]}"),
                                                                       put(self, name, data))[1])
    monkeypatch.setattr(LocalBackend, "sync", lambda self: (events.append("sync"), sync(self))[1])
    a, b = open_vault(), open_vault()                 # two backups writing at once
    data = b"shared block " * 5000
    cid, written = a.chunks.put(data)                 # in A's pack, not yet written, synced or indexed
    assert written > 0
    cid_b, written_b = b.chunks.put(data)
    assert cid_b == cid and written_b > 0             # B cannot see it: it stores its own copy
    events.clear()
    b.chunks.flush()                                  # what commit_point does before writing B's manifest
    assert events == ["put data", "sync", "put index", "sync"], events
    a.chunks.flush()
    c = open_vault()                                  # a third backup now finds it (both copies are durable)
    assert c.chunks.put(data) == (cid, 0)
    a.close(), b.close(), c.close()
