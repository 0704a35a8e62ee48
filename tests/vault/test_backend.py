"""The backend contract every vault storage must keep (local directory here; object storage adds itself to
``backends``): atomic put, conditional create, ranged get, listing that skips what is not an object, and names
that cannot escape the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cutpoint.errors import NotFoundError, VaultError
from cutpoint.vault.backend import Backend, LocalBackend, check_name


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "s3":
        from cutpoint.vault.s3backend import S3Backend
        yield S3Backend(request.getfixturevalue("s3_bucket"), "vaults/one")
    else:
        yield LocalBackend(tmp_path / "store")


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
