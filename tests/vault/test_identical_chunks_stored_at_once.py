"""Two writers storing the same content at the same moment in a format v3 vault (the disks of one backup, whose
identical chunks are written on different threads, or two backups; writers share the directory lock): each checked
that no chunk had the name, then renamed its own in, and both counted it as stored. A fresh Debian 12 saw
``stored_bytes`` 1206 against 1005 on disk in test_identical_chunks_are_stored_once[v3]. Now a chunk is named by a
hard link, which only one of them can create."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cutpoint.vault import chunks
from cutpoint.vault.vault import Vault


def test_the_same_chunk_stored_by_two_threads_at_once_is_counted_once(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "v3"
    Vault.create(root, version=3)
    vault = Vault.open(root)
    store = vault.chunks
    assert isinstance(store, chunks.ChunkStore)
    data = os.urandom(64 << 10) + bytes(1 << 20)
    both = threading.Barrier(2, timeout=2)
    touch, misses = chunks._touch, threading.local()

    def both_find_it_absent(path: Path) -> bool:
        """The moment of the race, made to happen: each writer's second look (just before it names its chunk)
        waits until the other has looked too."""
        found = touch(path)
        misses.n = getattr(misses, "n", 0) + (not found)
        if not found and misses.n == 2:
            try:
                both.wait()
            except threading.BrokenBarrierError:
                pass
        return found

    monkeypatch.setattr(chunks, "_touch", both_find_it_absent)
    got: list[int] = []
    threads = [threading.Thread(target=lambda: got.append(store.put(data)[1])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cid = store.chunk_id(data)
    on_disk = store.path(cid).stat().st_size
    assert sorted(got) == [0, on_disk], got
    assert store.get(cid) == data
    assert not list(store.path(cid).parent.glob(".tmp-*"))
    vault.close()


def test_a_filesystem_without_hard_links_stores_chunks_by_rename(tmp_path: Path, monkeypatch) -> None:
    """FUSE filesystems without link(2) (rclone mount, gcsfuse) answer ENOSYS: naming a chunk by a hard link failed
    every write there, where the rename had worked. They get the check and the rename."""
    import errno

    root = tmp_path / "v3"
    Vault.create(root, version=3)
    vault = Vault.open(root)
    store = vault.chunks
    assert isinstance(store, chunks.ChunkStore)

    def no_link(src: str, dst: object) -> None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(chunks.os, "link", no_link)
    data = os.urandom(64 << 10)
    cid, written = store.put(data)
    assert written == store.path(cid).stat().st_size and store.get(cid) == data
    assert store.put(data) == (cid, 0)
    assert not list(store.path(cid).parent.glob(".tmp-*"))
    vault.close()
