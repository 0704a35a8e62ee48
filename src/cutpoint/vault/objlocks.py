"""Vault locks as objects, for storage without flock (S3), written through the Backend interface only.

As restic does (doc/design.rst, internal/restic/lock.go): a lock is an object ``locks/<random>`` holding owner,
host, pid, kind and times. A shared lock conflicts with exclusive ones; an exclusive lock with every other. A lock
is *stale* once its expiry has passed (the holder refreshes it well before: a background thread rewrites it every
``ttl/3``), or when it was taken on this host, in this boot and PID namespace, by a pid that no longer exists.
Stale locks neither block nor survive: the next taker removes them. After writing its own lock a taker looks again and backs out if a conflicting live lock
appeared meanwhile, so two racing exclusive takers cannot both win (both may lose; the caller retries).
A holder never re-creates its lock: a refresh first checks that the expiry it last wrote is still ahead and that the
object is still its own, and a lock that fails that (or whose refresh lands only after that expiry) is *lost* for
good; ``check`` then stops the holder (restic likewise refuses to refresh a lock that was removed while stale).
A lock object whose content is unreadable is treated as live until its ``mtime`` is older than ``ttl`` (hostile or
torn content must not break a lock, nor hold the vault forever).

A *pin* is a lock object of kind ``pin`` naming a point that a process serves (a mount, a file view, an instant
restore): it conflicts with no lock, is refreshed and goes stale like one, and prune and delete on every host keep
a point with a live pin (``pinned``), as the local flock pin does on one host.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NoReturn

from .. import pids
from ..errors import CutpointError, LockedError, NotFoundError, UsageError, VaultError
from .backend import Backend, ObjectInfo

PREFIX = "locks/"
log = logging.getLogger(__name__)
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
    ns: str = ""                 # "boot_id:pid namespace inode" of the holder ("" in locks of older versions)

    def stale(self, now: float) -> bool:
        """Expired, or held by a pid that no longer exists *here*: only when the holder ran on this host, in this
        boot and this PID namespace does its pid name a process this one can see. A container sharing the host's
        name but not its PID namespace, or another machine of the same name, would otherwise have its live lock
        judged stale (and removed) by the first process that could not find its pid; such a lock is judged by its
        expiry alone."""
        if now > self.expires:
            return True
        if self.host != socket.gethostname() or (self.ns and self.ns != namespace()):
            return False
        return not pids.alive(self.pid)

    def describe(self) -> str:
        return f"{self.kind} lock by {self.owner} (pid {self.pid} on {self.host})"


def namespace() -> str:
    """This process's boot and PID namespace, as a lock records them: within both, and only there, a pid names one
    process. "" where /proc cannot tell."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _parse(data: bytes) -> LockInfo | None:
    try:
        d = json.loads(data)
        info = LockInfo(str(d["owner"]), str(d["host"]), int(d["pid"]), str(d["kind"]), float(d["created"]),
                        float(d["expires"]), str(d.get("point", "")), str(d.get("ns", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if info.kind == "pin":
        return info if POINT_RE.fullmatch(info.point) else None
    return info if info.kind in ("shared", "exclusive") else None


class HeldLock:
    """A lock this process holds: refreshed in the background until ``release`` (or the ``with`` block ends).

    ``info`` is what was last *successfully* written: its ``expires`` advances only once a refresh's write has
    landed. A refresh rewrites the object only while that expiry is still ahead and the object is still this
    holder's (same owner, host, pid, kind, creation time and point); otherwise, or when the write itself lands
    after that expiry, the lock is *lost* (``lost``): never written again (a lock another host removed as stale is
    not re-created), and every later ``refresh`` and ``check`` raises ``LockedError``."""

    def __init__(self, backend: Backend, name: str, info: LockInfo, ttl: float) -> None:
        self.backend, self.name, self.info, self.ttl = backend, name, info, ttl
        self._stop = threading.Event()
        self._writing = threading.Lock()         # one refresh at a time: the thread's or a caller's
        self._lost: tuple[str, BaseException | None] | None = None
        self.refresh_error: CutpointError | None = None
        self._thread = threading.Thread(target=self._refresh_loop, name=f"lock-refresh {name}", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> bool:
        """True once this lock can no longer protect its holder (see the class docstring); it stays so."""
        return self._lost is not None

    def _lose(self, reason: str, cause: BaseException | None = None) -> NoReturn:
        if self._lost is None:
            self._lost = (f"lost the lock {self.name} on the vault at {_where(self.backend)}: {reason}; another "
                          "host may have taken the vault, so this operation was stopped before it commits or "
                          "deletes anything more: retry it", cause)
        self._raise_if_lost()
        raise AssertionError("unreachable")

    def _raise_if_lost(self) -> None:
        if self._lost is not None:
            message, cause = self._lost
            raise LockedError(message) from cause

    def _own(self, current: LockInfo | None) -> bool:
        mine = self.info
        return current is not None and (current.owner, current.host, current.pid, current.kind, current.created,
                                        current.point) == (mine.owner, mine.host, mine.pid, mine.kind,
                                                           mine.created, mine.point)

    def _still_held(self) -> None:
        """Lose the lock (raise ``LockedError``) unless its written expiry is ahead and its object is its own.
        A store that cannot be read raises its own error and loses nothing (yet)."""
        self._raise_if_lost()
        if time.time() >= self.info.expires:
            self._lose(f"it was not refreshed in time (its written expiry passed {time.time() - self.info.expires:.1f} "
                       f"s ago; last refresh error: {self.refresh_error})", self.refresh_error)
        try:
            current = _parse(self.backend.get(self.name))
        except NotFoundError as e:
            self._lose("it was removed by another process (as stale, or by an unlock)", e)
        if not self._own(current):
            self._lose("it was replaced by another process")
        if time.time() >= self.info.expires:      # the read was slow: what it saw may be out of date already
            self._lose("it was not refreshed in time (its written expiry passed while it was being checked)")

    def refresh(self) -> None:
        """Push the expiry ``ttl`` ahead, if the lock is still held (see the class docstring); raise
        ``LockedError`` if it is lost, or the store's error if the write failed (then nothing changed here)."""
        with self._writing:
            if self.info.kind == "pin":
                self._refresh_pin()
                return
            self._still_held()
            written = self.info.expires
            new = self._write()
            if time.time() >= written:
                # It landed when the lock could already be taken as stale: it may have re-created a lock another
                # host removed, so it proves nothing; remove it (it is this holder's) and give the lock up.
                try:
                    self.backend.delete(self.name)
                except CutpointError:
                    pass                        # stale anyway: the next taker removes it
                self._lose("its refresh was written only after its expiry")
            self.info = new

    def _refresh_pin(self) -> None:
        """A pin gates no commit or delete of its holder: it only keeps other hosts from pruning the point served.
        Losing it for good would leave a point being read unprotected for the rest of a serve that may last days,
        so a pin is rewritten after an outage (and the lapse said), never given up."""
        lapsed = time.time() >= self.info.expires
        new = self._write()
        if lapsed:
            log.warning("the pin of point %s (%s) lapsed before it could be refreshed (%s): another host's prune "
                        "may have removed the point meanwhile; it is pinned again now", self.info.point, self.name,
                        self.refresh_error)
        self.info = new

    def _write(self) -> LockInfo:
        """The lock object rewritten with its expiry ``ttl`` ahead; what was written (``info`` is the caller's to
        move on: only once the write has landed)."""
        new = replace(self.info, expires=time.time() + self.ttl)
        try:
            self.backend.put(self.name, json.dumps(asdict(new)).encode())
        except OSError as e:
            raise VaultError(f"cannot write lock {self.name}: {e.strerror or e}") from e
        return new

    def check(self) -> None:
        """Raise ``LockedError`` if this lock may no longer protect us (restic's stricter handling): it is lost,
        its last written expiry has passed (another host may have taken it as stale), or its object is gone or not
        its own. Long operations call this right before a step that relies on the lock (committing, deleting)."""
        self._still_held()

    def _refresh_loop(self) -> None:
        wait = self.ttl / 3
        while not self._stop.wait(wait):
            try:
                self.refresh()
                wait = self.ttl / 3
            except LockedError as e:        # lost: never written again
                self.refresh_error = e
                return
            except CutpointError as e:      # the storage went away: retry sooner, until the expiry; the holder checks
                self.refresh_error = e
                wait = self.ttl / 20

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._lost is None:
            self.backend.delete(self.name)
            return
        try:                                # a lost lock's object is removed only if it is still this holder's
            if self._own(_parse(self.backend.get(self.name))):
                self.backend.delete(self.name)
        except NotFoundError:
            pass

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _where(backend: Backend) -> str:
    bucket = getattr(backend, "bucket", None)
    if bucket is not None:
        return f"s3://{bucket}/{getattr(backend, 'prefix', '')}"
    return str(getattr(backend, "root", type(backend).__name__))


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
    info = LockInfo(owner, socket.gethostname(), os.getpid(), kind, now, now + ttl, ns=namespace())
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
    info = LockInfo(owner, socket.gethostname(), os.getpid(), "pin", now, now + ttl, point, namespace())
    name = PREFIX + secrets.token_hex(16)
    if not backend.create(name, json.dumps(asdict(info)).encode()):
        raise LockedError(f"lock name {name} already exists (random collision): retry")
    return HeldLock(backend, name, info, ttl)


def pinned(backend: Backend) -> set[str]:
    """Points with a live pin on any host (stale pins, whose holder died or stopped refreshing, do not count)."""
    now = time.time()
    return {info.point for _, info in read_locks(backend) if info is not None and info.kind == "pin"
            and not info.stale(now)}
