"""Lock objects (no flock) on a local directory and on a real S3 server: conflicts, release, stale takeover
(expired, or a dead pid on this host), a live lock refusing, refresh while held."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from cutpoint.errors import LockedError
from cutpoint.vault import objlocks
from cutpoint.vault.backend import Backend


def _plant(b: Backend, name: str, *, host: str, pid: int, kind: str, expires: float, ns: str | None = None) -> None:
    doc = {"owner": "someone", "host": host, "pid": pid, "kind": kind, "created": time.time() - 5, "expires": expires}
    if ns is not None:
        doc["ns"] = ns
    b.put(f"locks/{name}", json.dumps(doc).encode())


def _lock_names(b: Backend) -> set[str]:
    return {o.name for o in b.list("locks/")}


def test_shared_locks_coexist_exclusive_refused(backend: Backend) -> None:
    a = objlocks.acquire(backend, "shared", "backup vm1")
    b = objlocks.acquire(backend, "shared", "backup vm2")
    with pytest.raises(LockedError, match="shared lock by backup vm1|shared lock by backup vm2"):
        objlocks.acquire(backend, "exclusive", "gc")
    assert _lock_names(backend) == {a.name, b.name}     # the refused taker left nothing behind
    a.release()
    b.release()
    assert _lock_names(backend) == set()
    with objlocks.acquire(backend, "exclusive", "gc") as x:
        with pytest.raises(LockedError, match="exclusive lock by gc"):
            objlocks.acquire(backend, "shared", "backup vm1")
        assert _lock_names(backend) == {x.name}
    assert _lock_names(backend) == set()


def test_expired_lock_taken_over(backend: Backend) -> None:
    _plant(backend, "old", host="elsewhere", pid=1, kind="exclusive", expires=time.time() - 1)
    with objlocks.acquire(backend, "exclusive", "gc") as x:
        assert _lock_names(backend) == {x.name}


def test_dead_pid_on_this_host_taken_over(backend: Backend) -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    _plant(backend, "dead", host=socket.gethostname(), pid=p.pid, kind="exclusive", expires=time.time() + 3600)
    with objlocks.acquire(backend, "shared", "backup") as x:
        assert _lock_names(backend) == {x.name}


def test_a_live_lock_of_another_pid_namespace_under_this_host_name_is_not_stale(backend: Backend) -> None:
    """A container sharing the host's name but not its PID namespace (host networking), or another machine of the
    same name: its holder's pid means nothing here. Judged by that pid, its live lock was removed as stale and gc
    ran beside its backup. Such a lock is judged by its expiry alone."""
    p = subprocess.Popen(["true"])
    p.wait()                                            # a pid that no process here has
    boot = objlocks.namespace().partition(":")[0]
    assert boot
    for name, ns in (("container", f"{boot}:4026530000"), ("twin", "another-boot-id:4026531836")):
        _plant(backend, name, host=socket.gethostname(), pid=p.pid, kind="exclusive", expires=time.time() + 3600,
               ns=ns)
        with pytest.raises(LockedError, match="exclusive lock by someone"):
            objlocks.acquire(backend, "shared", "backup")
        assert f"locks/{name}" in _lock_names(backend)
        backend.delete(f"locks/{name}")
    _plant(backend, "here", host=socket.gethostname(), pid=p.pid, kind="exclusive", expires=time.time() + 3600,
           ns=objlocks.namespace())                     # this namespace: the pid is judged, and it is dead
    with objlocks.acquire(backend, "shared", "backup") as x:
        assert _lock_names(backend) == {x.name}
    with objlocks.acquire(backend, "shared", "backup") as x:
        assert x.info.ns == objlocks.namespace()


def test_live_lock_refuses(backend: Backend) -> None:
    _plant(backend, "remote", host="elsewhere", pid=1, kind="exclusive", expires=time.time() + 3600)
    with pytest.raises(LockedError, match="pid 1 on elsewhere"):
        objlocks.acquire(backend, "shared", "backup")
    p = subprocess.Popen(["sleep", "30"])
    try:
        backend.delete("locks/remote")
        _plant(backend, "live", host=socket.gethostname(), pid=p.pid, kind="shared", expires=time.time() + 3600)
        with pytest.raises(LockedError):
            objlocks.acquire(backend, "exclusive", "gc")
        assert _lock_names(backend) == {"locks/live"}
    finally:
        p.kill()
        p.wait()


def test_unreadable_lock_blocks_until_old(backend: Backend) -> None:
    backend.put("locks/garbage", b"\x00not json")
    with pytest.raises(LockedError, match="unreadable lock locks/garbage"):
        objlocks.acquire(backend, "exclusive", "gc")
    time.sleep(1.6)                                 # S3 mtimes are whole seconds
    with objlocks.acquire(backend, "exclusive", "gc", ttl=0.5):     # older than the lifetime now: stale
        assert "locks/garbage" not in _lock_names(backend)


def test_held_lock_is_refreshed(backend: Backend) -> None:
    with objlocks.acquire(backend, "shared", "backup", ttl=0.9) as x:
        first = x.info.expires
        time.sleep(1.5)
        stored = json.loads(backend.get(x.name))
        assert stored["expires"] > first            # rewritten by the refresher thread
        assert x.refresh_error is None
        with pytest.raises(LockedError):          # still live to others, though the first expiry has passed
            objlocks.acquire(backend, "exclusive", "gc", ttl=0.9)


def test_locks_on_an_object_lock_bucket_are_released(s3_env: object, s3_lock_bucket: str) -> None:
    """Vault objects there carry retention; lock objects must not, or release could never delete them."""
    from cutpoint.vault.s3backend import Retention, S3Backend
    b = S3Backend(s3_lock_bucket, "v", retention=Retention("COMPLIANCE", 1))
    with objlocks.acquire(b, "exclusive", "gc") as x:
        assert _lock_names(b) == {x.name}
    assert _lock_names(b) == set()


def test_lost_lock_is_reported(backend: Backend) -> None:
    """A lock removed behind the holder's back (an unlock on another host) stops it at its next check."""
    with objlocks.acquire(backend, "exclusive", "gc") as x:
        x.check()
        backend.delete(x.name)
        with pytest.raises(LockedError, match="removed by another process"):
            x.check()


def test_a_pin_blocks_no_lock_and_is_listed_while_live(backend: Backend) -> None:
    pin = objlocks.pin(backend, "20260101T000000Z-ab12", "serving")
    with objlocks.acquire(backend, "exclusive", "prune"):          # prune runs, and keeps the pinned point
        assert objlocks.pinned(backend) == {"20260101T000000Z-ab12"}
    pin.release()
    assert objlocks.pinned(backend) == set() and _lock_names(backend) == set()


def test_a_stale_pin_pins_nothing(backend: Backend) -> None:
    backend.put("locks/deadpin", json.dumps({"owner": "x", "host": "elsewhere", "pid": 1, "kind": "pin",
                                             "created": time.time() - 99, "expires": time.time() - 1,
                                             "point": "20260101T000000Z-ab12"}).encode())
    assert objlocks.pinned(backend) == set()
    objlocks.acquire(backend, "exclusive", "prune").release()       # and it is removed as stale
    assert _lock_names(backend) == set()


def test_a_pin_naming_no_point_is_an_unreadable_lock(backend: Backend) -> None:
    backend.put("locks/badpin", json.dumps({"owner": "x", "host": "elsewhere", "pid": 1, "kind": "pin",
                                            "created": time.time(), "expires": time.time() + 99,
                                            "point": "../../etc"}).encode())
    assert objlocks.pinned(backend) == set()
    with pytest.raises(LockedError, match="unreadable lock locks/badpin"):
        objlocks.acquire(backend, "exclusive", "prune")
