"""A lock object whose refreshes failed past its expiry is lost for good (docs/format.md §20.4), on a local
directory and on a real S3 server. The fault: ``refresh`` advanced the holder's expiry before its PUT and the PUT
was unconditional, so once another host had removed the lock as stale (and taken the vault exclusively), the
holder's next successful refresh silently re-created it and ``check`` passed: a backup would commit while a gc on
the other host deleted what it relied on. Faults are injected only at the backend's ``put``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from cutpoint.errors import LockedError, VaultError
from cutpoint.vault import objlocks
from cutpoint.vault.backend import Backend

LOST = "another host may have taken the vault"


class PutFaults:
    """The backend's ``put`` of lock objects fails (the store unreachable) while ``failing``, or runs ``before``
    first (a slow write)."""

    def __init__(self, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failing = False
        self.before: Callable[[], None] | None = None
        self.failed = 0
        real = backend.put

        def put(name: str, data: bytes | memoryview) -> None:
            if name.startswith(objlocks.PREFIX):
                if self.failing:
                    self.failed += 1
                    raise VaultError(f"cannot reach the store for {name}: ConnectTimeoutError")
                if self.before is not None:
                    self.before()
            real(name, data)

        monkeypatch.setattr(backend, "put", put)


def _lock_names(b: Backend) -> set[str]:
    return {o.name for o in b.list("locks/")}


def _other_host_takes_the_vault(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> objlocks.HeldLock:
    with monkeypatch.context() as m:       # another host: the pid rule does not apply, only the expiry
        m.setattr(objlocks.socket, "gethostname", lambda: "host-b")
        return objlocks.acquire(backend, "exclusive", "gc on host-b", ttl=60)


def test_a_lock_removed_as_stale_is_not_recreated_by_its_holder(backend: Backend,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    faults = PutFaults(backend, monkeypatch)
    held = objlocks.acquire(backend, "shared", "backup vm1", ttl=0.6)
    faults.failing = True                           # the network flaps for longer than the lock's lifetime
    time.sleep(0.9)
    assert faults.failed > 0
    gc = _other_host_takes_the_vault(backend, monkeypatch)     # rightly: A's lock has expired
    assert _lock_names(backend) == {gc.name}
    faults.failing = False                          # the network is back
    with pytest.raises(LockedError, match=LOST):
        held.refresh()
    time.sleep(0.5)                                 # the background refresher's turns too
    assert _lock_names(backend) == {gc.name}        # never re-created
    with pytest.raises(LockedError, match=f"{held.name}.*{LOST}"):
        held.check()                                # the backup stops before it commits
    assert held.lost
    held.release()
    assert _lock_names(backend) == {gc.name}        # A's release leaves B's lock alone
    gc.release()


def test_expiry_advances_only_after_a_successful_refresh(backend: Backend,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    faults = PutFaults(backend, monkeypatch)
    with objlocks.acquire(backend, "shared", "backup vm1", ttl=60) as held:
        written = held.info.expires
        faults.failing = True
        time.sleep(0.05)
        with pytest.raises(VaultError, match="cannot reach"):
            held.refresh()
        assert held.info.expires == written        # the failed write promised nothing
        assert json.loads(backend.get(held.name))["expires"] == written
        faults.failing = False
        held.refresh()
        assert held.info.expires > written
        assert json.loads(backend.get(held.name))["expires"] == held.info.expires
        held.check()
        assert not held.lost


def test_refreshes_failing_past_the_expiry_lose_the_lock(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody took the vault, but nobody can tell the holder that: its written expiry passed, so it stops."""
    faults = PutFaults(backend, monkeypatch)
    held = objlocks.acquire(backend, "shared", "backup vm1", ttl=0.6)
    written = held.info.expires
    faults.failing = True
    time.sleep(0.9)
    faults.failing = False
    with pytest.raises(LockedError, match=f"{held.name}.*not refreshed in time.*{LOST}"):
        held.check()
    with pytest.raises(LockedError, match=LOST):
        held.refresh()
    assert held.info.expires == written
    assert held.name not in _lock_names(backend) or json.loads(backend.get(held.name))["expires"] == written
    held.release()
    assert _lock_names(backend) == set()


def test_a_lost_lock_stays_lost(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once lost, nothing brings it back, not even its object reappearing with its own content."""
    PutFaults(backend, monkeypatch)
    held = objlocks.acquire(backend, "shared", "backup vm1", ttl=0.6)
    content = backend.get(held.name)
    backend.delete(held.name)                       # an unlock on another host
    with pytest.raises(LockedError, match="removed by another process"):
        held.check()
    backend.put(held.name, content)                 # restored behind its back, still live
    for _ in range(2):
        with pytest.raises(LockedError, match=LOST):
            held.check()
        with pytest.raises(LockedError, match=LOST):
            held.refresh()
    assert json.loads(backend.get(held.name))["expires"] == json.loads(content)["expires"]     # not rewritten
    held.release()


def test_a_replaced_lock_is_not_overwritten(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    PutFaults(backend, monkeypatch)
    with objlocks.acquire(backend, "shared", "backup vm1", ttl=60) as held:
        theirs = json.dumps({"owner": "gc", "host": "host-b", "pid": 7, "kind": "exclusive",
                             "created": time.time(), "expires": time.time() + 60}).encode()
        backend.put(held.name, theirs)
        with pytest.raises(LockedError, match=f"replaced by another process.*{LOST}"):
            held.refresh()
        assert backend.get(held.name) == theirs
        with pytest.raises(LockedError, match=LOST):
            held.check()
    assert backend.get(held.name) == theirs          # and its release does not delete another's lock


def test_a_refresh_that_lands_after_the_expiry_does_not_keep_the_lock(backend: Backend,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that was slow (retries, a stopped process) landed when the lock could already have been taken as
    stale: the holder cannot know it was not, so the lock is lost and the late object removed."""
    faults = PutFaults(backend, monkeypatch)
    held = objlocks.acquire(backend, "shared", "backup vm1", ttl=0.9)
    written = held.info.expires

    def slow() -> None:
        faults.before = None
        time.sleep(max(0.0, written - time.time()) + 0.2)

    faults.before = slow
    with pytest.raises(LockedError, match=LOST):
        held.refresh()
    assert held.name not in _lock_names(backend)
    with pytest.raises(LockedError, match=LOST):
        held.check()
    held.release()
    assert _lock_names(backend) == set()


def test_a_live_lock_survives_a_short_outage(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Failed refreshes before the expiry are retried and do not lose the lock."""
    faults = PutFaults(backend, monkeypatch)
    with objlocks.acquire(backend, "shared", "backup vm1", ttl=1.5) as held:
        faults.failing = True
        time.sleep(0.7)                             # a refresh (every 0.5 s) failed
        assert faults.failed > 0 and held.refresh_error is not None
        faults.failing = False
        time.sleep(0.5)
        held.check()
        assert not held.lost
        assert json.loads(backend.get(held.name))["expires"] == held.info.expires > time.time()


def test_a_pin_that_lapsed_in_an_outage_is_pinned_again(backend: Backend, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A pin gates nothing of its holder's; it keeps other hosts' prunes off a point being served, maybe for days.
    Treated as lost for good after one outage, it was never written again, and the point stayed unprotected for
    the rest of the serve. It is rewritten once the store answers, and the lapse is said."""
    faults = PutFaults(backend, monkeypatch)
    pin = objlocks.pin(backend, "20260101T000000Z-0a0a", "mount", ttl=0.6)
    try:
        faults.failing = True
        time.sleep(0.9)                             # expired: other hosts no longer see it
        assert "20260101T000000Z-0a0a" not in objlocks.pinned(backend)
        faults.failing = False
        pin.refresh()
        assert not pin.lost
        assert "20260101T000000Z-0a0a" in objlocks.pinned(backend)
        assert "lapsed" in caplog.text
    finally:
        pin.release()
    assert _lock_names(backend) == set()
