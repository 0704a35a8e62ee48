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


def test_a_writer_that_only_deduplicated_syncs_before_its_manifest(monkeypatch) -> None:
    """Format v4: backup A has written its packs and its index object but not yet run the sync after it; B finds
    every blob there and writes no pack. B's flush returned without a sync, so B's manifest could become durable
    before the index object that lists its blobs (a copy that reuses everything is such a writer)."""
    events: list[str] = []
    a, b = open_vault(), open_vault()
    data = b"shared block " * 5000
    cid, _ = a.chunks.put(data)
    sync, calls = LocalBackend.sync, [0]

    def as_if_not_yet(self) -> None:                  # A's flush, cut off before its second sync
        calls[0] += 1
        if calls[0] != 2:
            sync(self)

    monkeypatch.setattr(LocalBackend, "sync", as_if_not_yet)
    a.chunks.flush()
    monkeypatch.setattr(LocalBackend, "sync", lambda self: (events.append("sync"), sync(self))[1])
    assert b.chunks.put(data) == (cid, 0)             # B loads the index now: A's object lists the blob
    b.chunks.flush()                                  # what commit_point does before writing B's manifest
    assert events == ["sync"], events
    a.close(), b.close()
