"""Vault locks as objects, for storage without flock (S3), written through the Backend interface only.

As restic does (doc/design.rst, internal/restic/lock.go): a lock is an object ``locks/<random>`` holding owner,
host, pid, kind and times. A shared lock conflicts with exclusive ones; an exclusive lock with every other. A lock
is *stale* once its expiry has passed (the holder refreshes it well before: a background thread rewrites it every
``ttl/3``), or when it was taken on this host by a pid that no longer exists. Stale locks neither block nor survive:
the next taker removes them. After writing its own lock a taker looks again and backs out if a conflicting live lock
appeared meanwhile, so two racing exclusive takers cannot both win (both may lose; the caller retries).
A lock object whose content is unreadable is treated as live until its ``mtime`` is older than ``ttl`` (hostile or
torn content must not break a lock, nor hold the vault forever).

A *pin* is a lock object of kind ``pin`` naming a point that a process serves (a mount, a file view, an instant
restore): it conflicts with no lock, is refreshed and goes stale like one, and prune and delete on every host keep
a point with a live pin (``pinned``), as the local flock pin does on one host.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass

from .. import pids
from ..errors import CutpointError, LockedError, NotFoundError, UsageError
from .backend import Backend, ObjectInfo

PREFIX = "locks/"
POINT_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")
DEFAULT_TTL = 30 * 60.0          # restic's stale timeout


@dataclass(frozen=True)
class LockInfo:
    owner: str
    host: str
    pid: int
    kind: str                    # "shared", "exclusive" or "pin"
    created: float
    expires: float
    point: str = ""              # a pin's point

    def stale(self, now: float) -> bool:
        if now > self.expires:
            return True
        return self.host == socket.gethostname() and not pids.alive(self.pid)

    def describe(self) -> str:
        return f"{self.kind} lock by {self.owner} (pid {self.pid} on {self.host})"


def _parse(data: bytes) -> LockInfo | None:
    try:
        d = json.loads(data)
        info = LockInfo(str(d["owner"]), str(d["host"]), int(d["pid"]), str(d["kind"]), float(d["created"]),
                        float(d["expires"]), str(d.get("point", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if info.kind == "pin":
        return info if POINT_RE.fullmatch(info.point) else None
    return info if info.kind in ("shared", "exclusive") else None


class HeldLock:
    """A lock this process holds: refreshed in the background until ``release`` (or the ``with`` block ends)."""

    def __init__(self, backend: Backend, name: str, info: LockInfo, ttl: float) -> None:
        self.backend, self.name, self.info, self.ttl = backend, name, info, ttl
        self._stop = threading.Event()
        self.refresh_error: CutpointError | None = None
        self._thread = threading.Thread(target=self._refresh_loop, name=f"lock-refresh {name}", daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        now = time.time()
        self.info = LockInfo(self.info.owner, self.info.host, self.info.pid, self.info.kind, self.info.created,
                             now + self.ttl, self.info.point)
        self.backend.put(self.name, json.dumps(asdict(self.info)).encode())

    def check(self) -> None:
        """Raise ``LockedError`` if this lock may no longer protect us (restic's stricter handling): its last
        refresh is older than its lifetime (another host may have taken it as stale) or the object is gone.
        Long operations call this before a step that relies on the lock (committing, deleting)."""
        if time.time() > self.info.expires:
            raise LockedError(f"lock {self.name} was not refreshed in time ({self.refresh_error}): "
                              "another process may have taken it; stop and retry") from self.refresh_error
        try:
            current = _parse(self.backend.get(self.name))
        except NotFoundError as e:
            raise LockedError(f"lock {self.name} was removed by another process: stop and retry") from e
        if current is None or current.pid != self.info.pid or current.host != self.info.host:
            raise LockedError(f"lock {self.name} was replaced by another process: stop and retry")

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.refresh()
            except CutpointError as e:      # the storage went away: keep trying; the holder can check
                self.refresh_error = e

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        self.backend.delete(self.name)

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _conflicts(kind: str, other: LockInfo | None) -> bool:
    if other is not None and other.kind == "pin":
        return False
    return kind == "exclusive" or other is None or other.kind == "exclusive"


def read_locks(backend: Backend) -> list[tuple[ObjectInfo, LockInfo | None]]:
    out: list[tuple[ObjectInfo, LockInfo | None]] = []
    for obj in backend.list(PREFIX):
        try:
            out.append((obj, _parse(backend.get(obj.name))))
        except NotFoundError:
            continue                        # released meanwhile
    return out


def _check(backend: Backend, kind: str, ttl: float, own: str | None) -> None:
    """Remove stale locks; raise ``LockedError`` naming a live conflicting one."""
    now = time.time()
    for obj, info in read_locks(backend):
        if obj.name == own:
            continue
        stale = info.stale(now) if info is not None else obj.mtime + ttl < now
        if stale:
            backend.delete(obj.name)
        elif _conflicts(kind, info):
            what = info.describe() if info is not None else f"an unreadable lock {obj.name}"
            raise LockedError(f"the vault is locked: {what}; retry when it is done, or remove {obj.name} if "
                              "that process is gone")


def acquire(backend: Backend, kind: str, owner: str, ttl: float = DEFAULT_TTL) -> HeldLock:
    """Take a ``shared`` or ``exclusive`` lock on the vault behind ``backend``, or raise ``LockedError``."""
    if kind not in ("shared", "exclusive"):
        raise UsageError(f"lock kind {kind!r} is not shared or exclusive")
    if ttl <= 0:
        raise UsageError(f"lock lifetime {ttl} s must be positive")
    _check(backend, kind, ttl, None)
    now = time.time()
    info = LockInfo(owner, socket.gethostname(), os.getpid(), kind, now, now + ttl)
    name = PREFIX + secrets.token_hex(16)
    if not backend.create(name, json.dumps(asdict(info)).encode()):
        raise LockedError(f"lock name {name} already exists (random collision): retry")
    try:
        _check(backend, kind, ttl, name)    # a racing taker may have written between our look and our write
    except BaseException:
        backend.delete(name)
        raise
    return HeldLock(backend, name, info, ttl)


def pin(backend: Backend, point: str, owner: str, ttl: float = DEFAULT_TTL) -> HeldLock:
    """Pin ``point`` for every host until released (see the module's docstring). Take it under the shared lock,
    so that no prune is deciding meanwhile."""
    if not POINT_RE.fullmatch(point):
        raise UsageError(f"point id {point!r} cannot be pinned")
    now = time.time()
    info = LockInfo(owner, socket.gethostname(), os.getpid(), "pin", now, now + ttl, point)
    name = PREFIX + secrets.token_hex(16)
    if not backend.create(name, json.dumps(asdict(info)).encode()):
        raise LockedError(f"lock name {name} already exists (random collision): retry")
    return HeldLock(backend, name, info, ttl)


def pinned(backend: Backend) -> set[str]:
    """Points with a live pin on any host (stale pins, whose holder died or stopped refreshing, do not count)."""
    now = time.time()
    return {info.point for _, info in read_locks(backend) if info is not None and info.kind == "pin"
            and not info.stale(now)}
