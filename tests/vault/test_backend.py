"""The backend contract every vault storage must keep (local directory here; object storage adds itself to
``backends``): atomic put, conditional create, ranged get, listing that skips what is not an object, and names
that cannot escape the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutpoint.errors import NotFoundError, VaultError
from cutpoint.vault.backend import Backend, LocalBackend, check_name


def test_put_get_replace(backend: Backend) -> None:
    backend.put("packs/ab/one", b"hello world")
    assert backend.get("packs/ab/one") == b"hello world"
    assert backend.get("packs/ab/one", 6, 5) == b"world"
    backend.put("packs/ab/one", b"second")
    assert backend.get("packs/ab/one") == b"second"


def test_create_is_conditional(backend: Backend) -> None:
    assert backend.create("locks/x", b"mine") is True
    assert backend.create("locks/x", b"theirs") is False
    assert backend.get("locks/x") == b"mine"


def test_missing_object(backend: Backend) -> None:
    with pytest.raises(NotFoundError):
        backend.get("packs/none")
    backend.delete("packs/none")                # absent is fine: deletes are retried


def test_list_and_delete(backend: Backend) -> None:
    for n in ("packs/aa/1", "packs/bb/2", "index/3"):
        backend.put(n, n.encode())
    backend.sync()
    assert sorted(o.name for o in backend.list("packs/")) == ["packs/aa/1", "packs/bb/2"]
    assert {o.name: o.size for o in backend.list()} == {"packs/aa/1": 10, "packs/bb/2": 10, "index/3": 7}
    backend.delete("packs/aa/1")
    assert [o.name for o in backend.list("packs/aa")] == []


def test_list_by_a_prefix_that_ends_inside_a_name(backend: Backend) -> None:
    for n in ("data/ab/1", "data/ac/2", "data/b0/3", "datum/4", "index/5"):
        backend.put(n, b"x")
    assert sorted(o.name for o in backend.list("data/a")) == ["data/ab/1", "data/ac/2"]
    assert sorted(o.name for o in backend.list("dat")) == ["data/ab/1", "data/ac/2", "data/b0/3", "datum/4"]
    assert sorted(o.name for o in backend.list("data/ab/")) == ["data/ab/1"]


def test_a_local_listing_walks_only_the_prefix_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command lists index/, bad/ or locks/; walking data/ for them stats every pack (64k per TiB)."""
    import os

    b = LocalBackend(tmp_path / "store")
    for k in range(20):
        b.put(f"data/{k:02x}/pack{k}", b"p")
    b.put("index/one", b"i")
    scanned: list[str] = []
    real = os.scandir

    def spy(path: object) -> object:
        if isinstance(path, (str, Path)):
            scanned.append(os.path.relpath(path, b.root))
        return real(path)  # type: ignore[call-overload]
    monkeypatch.setattr(os, "scandir", spy)
    assert [o.name for o in b.list("index/")] == ["index/one"]
    assert not [d for d in scanned if d.startswith("data")], scanned
    scanned.clear()
    assert len(list(b.list("data/"))) == 20 and len([d for d in scanned if d.startswith("data/")]) == 20


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a//b", "a/../b", "-a", "a/-x", "a b", "a/.hidden", "", "a/"])
def test_hostile_object_names_refused(backend: Backend, name: str) -> None:
    with pytest.raises(VaultError):
        backend.put(name, b"x")
    with pytest.raises(VaultError):
        check_name(name)


def test_listing_skips_planted_names(tmp_path: Path) -> None:
    root = tmp_path / "store"
    b = LocalBackend(root)
    b.put("packs/ok", b"1")
    (root / "packs" / "Evil Name").write_bytes(b"x")
    (root / "packs" / ".tmp-half").write_bytes(b"x")
    assert [o.name for o in b.list()] == ["packs/ok"]


def test_racing_creates_one_wins(backend: Backend) -> None:
    """Conditional create holds under concurrency (threads share one client: the S3 client must be thread-safe)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as ex:
        won = list(ex.map(lambda i: backend.create("locks/race", str(i).encode()), range(8)))
    assert won.count(True) == 1
    assert backend.get("locks/race") == str(won.index(True)).encode()


def test_a_small_object_is_durable_before_its_name(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An index object, written and renamed into place without a fsync: another process's fsync could commit the
    rename while the data, delayed-allocated, was not written, and after a power loss the torn object stopped every
    load of the vault. A small object's file is fsynced before it gets its name."""
    import os

    from cutpoint.vault import backend as backend_mod
    from cutpoint.vault.backend import LocalBackend

    order: list[str] = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(backend_mod.os, "fsync", lambda fd: (order.append("fsync"), fsync(fd))[1])
    monkeypatch.setattr(backend_mod.os, "replace", lambda a, b: (order.append("rename"), replace(a, b))[1])
    LocalBackend(tmp_path / "store").put("index/" + "ab" * 32, b"an index object")
    assert order[-2:] == ["fsync", "rename"], order


def test_a_directory_that_cannot_be_listed_is_an_error_not_an_empty_listing(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """os.walk skipped a directory it could not read (EIO, EACCES), so its packs were missing from the listing and
    gc took them for lost: it wrote an index without them. Such a listing now fails, naming the directory."""
    import errno
    import os

    import pytest

    from cutpoint.errors import VaultError
    from cutpoint.vault import backend as backend_mod
    from cutpoint.vault.backend import LocalBackend

    b = LocalBackend(tmp_path / "store")
    b.put("data/ab/" + "ab" * 32, b"a pack")
    walk = os.walk

    def eio_in_data(top, onerror=None, **kw):  # type: ignore[no-untyped-def]
        for dirpath, dirnames, filenames in walk(top, onerror=onerror, **kw):
            if dirpath.endswith("/data") and onerror is not None:
                onerror(OSError(errno.EIO, os.strerror(errno.EIO), os.path.join(dirpath, "ab")))
                dirnames[:] = []
            yield dirpath, dirnames, filenames

    monkeypatch.setattr(backend_mod.os, "walk", eio_in_data)
    with pytest.raises(VaultError, match="cannot list .*data/ab.*Input/output error"):
        list(b.list("data/"))
    assert list(LocalBackend(tmp_path / "nowhere").list("data/")) == []      # absent: empty, as before


def test_a_symlinked_directory_in_a_local_vault_stops_gc_before_it_deletes_anything(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """data/ moved to another disk and linked back: os.walk does not enter links, so the listing was empty, and gc
    took every pack for lost, wrote an index listing none and deleted the old index objects."""
    import os
    import shutil

    import pytest

    from cutpoint.errors import VaultError
    from cutpoint.vault.gc import gc
    from tests.vault.util import open_vault

    v = open_vault()
    v.chunks.put(os.urandom(64 << 10))
    v.chunks.flush()
    index = sorted(o.name for o in v.backend.list("index/"))
    v.close()
    shutil.move(str(v.root / "data"), str(tmp_path / "elsewhere"))
    os.symlink(tmp_path / "elsewhere", v.root / "data")
    g = open_vault()
    with pytest.raises(VaultError, match="is a symbolic link"):
        gc(g, grace=0)
    g.close()
    assert sorted(p.relative_to(v.root).as_posix() for p in (v.root / "index").iterdir()) == index


def test_sync_also_syncs_a_filesystem_mounted_inside_the_vault(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """data/ as a mount point of its own: one syncfs of the vault's filesystem did not cover the packs, so the
    index object and the manifest could become durable before them."""
    import os
    import subprocess

    import pytest

    from cutpoint.vault import backend as backend_mod
    from cutpoint.vault.backend import LocalBackend

    root = tmp_path / "store"
    (root / "data").mkdir(parents=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "cutpoint-test",
                                            str(root / "data")], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root, or a chroot)")
    try:
        synced: list[str] = []
        real = backend_mod._libc

        class Spy:
            def syncfs(self, fd: int) -> int:
                synced.append(os.readlink(f"/proc/self/fd/{fd}"))
                return int(real.syncfs(fd))

        monkeypatch.setattr(backend_mod, "_libc", Spy())
        LocalBackend(root).sync()
        assert sorted(synced) == sorted([str(root), str(root / "data")]), synced
    finally:
        subprocess.run(["umount", str(root / "data")], check=True)
