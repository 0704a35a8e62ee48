"""On S3 the catalog follows the bucket's manifests: gc and 'vault delete' sync it under their locks. A manifest the
store did not answer for (a timeout, a 5xx after retries) was left out of the catalog with a warning, and gc then
freed the data of a point that may be whole (another host's new point, whose packs nothing else references); an
immutable vault's delete judged the points' ages without it. Both now stop, deleting nothing."""

from __future__ import annotations

import os

import pytest

from cutpoint.catalog.db import VmRecord
from cutpoint.errors import ImmutableError, VaultError
from cutpoint.vault import location
from cutpoint.vault.gc import gc
from cutpoint.vault.s3backend import S3Backend
from cutpoint.vault.vault import Vault
from cutpoint.vault.vaultdelete import delete_vault
from tests.helpers import commit_synthetic_point, cutpoint

PID = "20260101T000000Z-0a0a"


def _another_hosts_point(url: str) -> tuple[Vault, set[str]]:
    """A point in the bucket that this host's catalog does not list yet (committed by another host), and the
    bucket's pack names."""
    vault = Vault.open(location.resolve(url))
    vault.catalog.add_vm(VmRecord("w", "qmp", "/nonexistent", "2026-01-01T00:00:00Z", {}))
    commit_synthetic_point(vault, PID, "w", "2026-12-01T00:00:00Z", {"d": [os.urandom(vault.chunk_size)]})
    vault.catalog.remove_points([PID])
    return vault, {o.name for o in vault.backend.list("data/")}


def _unanswered(monkeypatch: pytest.MonkeyPatch) -> None:
    get = S3Backend.get

    def get_or_time_out(self, name: str, offset: int = 0, length: int | None = None) -> bytes:  # type: ignore[no-untyped-def]
        if name.endswith(f"/{PID}.manifest"):
            raise VaultError(f"cannot reach the store for {name}: ReadTimeoutError")
        return get(self, name, offset, length)

    monkeypatch.setattr(S3Backend, "get", get_or_time_out)


def test_gc_stops_when_a_manifest_cannot_be_read(tmp_path, s3_bucket: str, s3_env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    url = f"s3://{s3_bucket}/gcu"
    cutpoint("vault", "init", url, "--no-encrypt", check=True)
    vault, packs = _another_hosts_point(url)
    try:
        with monkeypatch.context() as m:
            _unanswered(m)
            with pytest.raises(VaultError, match="gc stopped before deleting anything"):
                gc(vault, grace=0)
        assert {o.name for o in vault.backend.list("data/")} == packs
    finally:
        vault.close()
    r = cutpoint("restore", "w", PID, "--to", str(tmp_path / "out"), "--vault", url)
    assert r.code == 0, r.err


def test_an_immutable_vaults_delete_stops_when_a_manifest_cannot_be_read(s3_bucket: str, s3_env,
                                                                          monkeypatch) -> None:
    url = f"s3://{s3_bucket}/vdu"
    cutpoint("vault", "init", url, "--no-encrypt", "--immutable-days", "30", check=True)
    vault, packs = _another_hosts_point(url)
    try:
        with monkeypatch.context() as m:
            _unanswered(m)
            with pytest.raises(ImmutableError, match="cannot be judged"):
                delete_vault(vault, str(vault.config["id"]))
        assert {o.name for o in vault.backend.list("data/")} == packs
    finally:
        vault.close()


def test_two_vms_points_of_one_id_in_the_bucket_leave_the_vault_openable_and_gc_stopped(
        tmp_path, s3_bucket: str, s3_env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two hosts committed points of the same id for two VMs (the same second, the same 16 random bits): the
    second host's catalog row failed after its manifest was in the bucket, and from then on every open of the
    vault, on every host, failed in its catalog sync. The clash is now a problem of that one point, and gc (which
    cannot mark the point it cannot list) stops rather than free its data."""
    url = f"s3://{s3_bucket}/clash"
    cutpoint("vault", "init", url, "--no-encrypt", check=True)
    cutpoint("vault", "key", "export", "--to", str(tmp_path / "auth.key"), "--vault", url, check=True)
    monkeypatch.setenv("CUTPOINT_KEY_FILE", str(tmp_path / "auth.key"))      # every host holds the vault's key
    pid = "20260101T030000Z-beef"
    for n, vm in enumerate(("a", "b")):
        monkeypatch.setenv("CUTPOINT_STATE", str(tmp_path / f"host{n}"))
        vault = Vault.open(location.resolve(url))
        try:
            vault.catalog.add_vm(VmRecord(vm, "qmp", "/nonexistent", "2026-01-01T00:00:00Z", {}))
            if vm == "a":
                commit_synthetic_point(vault, pid, vm, "2026-01-01T03:00:00Z", {"d": [os.urandom(vault.chunk_size)]})
            else:
                with pytest.raises(VaultError, match="UNIQUE"):
                    commit_synthetic_point(vault, pid, vm, "2026-01-01T03:00:00Z",
                                           {"d": [os.urandom(vault.chunk_size)]})
        finally:
            vault.close()
    monkeypatch.setenv("CUTPOINT_STATE", str(tmp_path / "host2"))
    r = cutpoint("points", "--json", "--vault", url)
    assert r.code == 0, r.err
    assert "is already listed for VM a" in r.err, r.err
    r = cutpoint("gc", "--vault", url)
    assert r.code != 0 and "gc stopped before deleting anything" in r.err, r.err
