"""Runs jobs: one row in the jobs table each, at most one job per VM at a time, interruptible at shutdown.

A job is a function of a :class:`JobContext`. It reports progress through ``ctx.progress`` (the same
``(name, done, total)`` callback backup and restore take); that callback is also where a shutdown reaches the job: it
raises :class:`JobInterrupted`, which unwinds the backup through its own cleanup (cut released, no catalog row), so
an interrupted job leaves the vault exactly as a failed one does and is recorded as ``interrupted``.

Follow-up work on the same VM (retention after a backup) runs in the same thread through :meth:`Runner.chain`
while the VM is still held, so nothing can slip in between.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..errors import CutpointError, LockedError
from ..jobs.alerts import Alerter
from ..jobs.store import Job, JobStore
from ..vault.vault import Vault
from .clock import Clock
from .vaults import VaultSource

log = logging.getLogger(__name__)
SLOW_ENV = "CUTPOINT_TEST_JOB_DELAY"
"""Tests only: seconds to sleep per progress step, so a test can stop the service in the middle of a backup."""


class JobInterrupted(CutpointError):
    """The service is shutting down; the job stopped where it was and cleaned up."""

    exit_code = 130


class JobTimedOut(CutpointError):
    """The job ran past the job timeout; it stopped at its next progress step and cleaned up (a failure)."""


class JobFailed(CutpointError):
    """A job's own verdict of failure (a verify that found damage), with what to keep on the job's record."""

    def __init__(self, message: str, detail: dict[str, Any]) -> None:
        super().__init__(message)
        self.detail = detail


DEFAULT_TIMEOUT = timedelta(hours=6)
DEFAULT_ABANDON = timedelta(minutes=10)


@dataclass
class Outcome:
    """What a job function returns: bytes moved, the point it made (if any), anything else worth keeping."""

    bytes: int = 0
    point: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobContext:
    job_id: int
    vault: Vault
    store: JobStore
    cancel: threading.Event
    timeout: threading.Event = field(default_factory=threading.Event)   # set by the runner past the deadline
    timeout_reason: str = "timed out"
    _done: dict[str, int] = field(default_factory=dict)
    _last: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)   # a backup's disks report from their own threads

    def check(self) -> None:
        if self.cancel.is_set():
            raise JobInterrupted("interrupted: the service is shutting down")
        if self.timeout.is_set():
            raise JobTimedOut(self.timeout_reason)

    def progress(self, name: str, done: int, total: int) -> None:
        self.check()
        with self._lock:                       # the write too: a slow one must not land after a later sum
            self._done[name] = done
            now = time.monotonic()
            if now - self._last >= 0.5 or done >= total:
                self._last = now
                self.store.progress(self.job_id, sum(self._done.values()))
        delay = float(os.environ.get(SLOW_ENV) or 0)
        if delay:
            time.sleep(delay)
            self.check()


JobFn = Callable[[JobContext], Outcome]
DoneFn = Callable[[Job], None]


@dataclass
class _Running:
    key: str
    started: datetime
    on_done: DoneFn | None
    alert: bool
    ctx: JobContext | None = None
    stop_asked: datetime | None = None       # when the timeout was signalled
    abandoned: bool = False


class Runner:
    """Starts jobs on threads (or inline, for clock-driven tests) and keeps the one-job-per-VM rule.

    ``timeout``: a job running longer (by the service clock) is asked to stop at its next progress step and fails
    with a timeout error; one that has not stopped ``abandon`` later is recorded failed and its VM released, so a
    hung job cannot block its VM's later slots (its thread is left to end on its own; its result is discarded).
    """

    def __init__(self, vaults: VaultSource, store: JobStore, clock: Clock, alerter: Alerter, *,
                 inline: bool = False, timeout: timedelta | None = DEFAULT_TIMEOUT,
                 abandon: timedelta = DEFAULT_ABANDON) -> None:
        self.vaults = vaults
        self.store = store
        self.clock = clock
        self.alerter = alerter
        self.inline = inline
        self.timeout = timeout
        self.abandon = abandon
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self._busy: dict[str, int] = {}          # VM (or "*kind" for VM-less jobs) -> job id
        self._threads: dict[int, threading.Thread] = {}
        self._running: dict[int, _Running] = {}

    def busy(self, vm: str) -> int | None:
        with self._lock:
            return self._busy.get(vm)

    def idle(self) -> bool:
        with self._lock:
            return not self._busy

    def submit(self, kind: str, vm: str | None, fn: JobFn, *, trigger: str, slot: str | None = None,
               attempt: int = 1, detail: dict[str, Any] | None = None, on_done: DoneFn | None = None,
               alert: bool = True) -> int:
        """Record and start a job; ``LockedError`` if the VM already has one (or the service is stopping)."""
        key = vm if vm is not None else f"*{kind}"
        with self._lock:
            if self.cancel.is_set():
                raise LockedError("the service is shutting down; no new jobs are started")
            if key in self._busy:
                raise LockedError(f"{'VM ' + repr(vm) if vm else kind} already has job {self._busy[key]} running; "
                                  "one job per VM at a time")
            now = self.clock.now()
            job_id = self.store.start(kind, vm, trigger, now, slot=slot, attempt=attempt, detail=detail)
            self._busy[key] = job_id
            self._running[job_id] = _Running(key, now, on_done, alert)
        args = (key, job_id, fn, on_done, alert)
        if self.inline:
            self._thread(*args)
        else:
            t = threading.Thread(target=self._thread, args=args, name=f"cutpoint-job-{job_id}", daemon=True)
            with self._lock:
                self._threads[job_id] = t
            t.start()
        return job_id

    def chain(self, kind: str, vm: str | None, fn: JobFn, *, trigger: str,
              detail: dict[str, Any] | None = None) -> Job:
        """Run a follow-up job now, in the calling job's thread, under the VM that thread already holds."""
        job_id = self.store.start(kind, vm, trigger, self.clock.now(), detail=detail)
        vault = self.vaults.get() if self.inline else self.vaults.fresh()
        try:
            job = self._execute(job_id, fn, vault, alert=True)
            return job if job is not None else self.store.get(job_id)
        finally:
            if not self.inline:
                vault.close()

    def _thread(self, key: str, job_id: int, fn: JobFn, on_done: DoneFn | None, alert: bool) -> None:
        vault = self.vaults.get() if self.inline else self.vaults.fresh()
        try:
            job = self._execute(job_id, fn, vault, alert=alert)
            if job is not None:
                _call(on_done, job)
        finally:
            if not self.inline:
                vault.close()
            with self._lock:
                if self._busy.get(key) == job_id:
                    self._busy.pop(key, None)
                self._threads.pop(job_id, None)
                self._running.pop(job_id, None)

    def _abandoned(self, job_id: int) -> bool:
        with self._lock:
            r = self._running.get(job_id)
            return r is not None and r.abandoned

    def enforce_timeouts(self) -> list[int]:
        """Signal jobs past the timeout to stop; abandon those that did not within ``abandon``. Returns the ids
        abandoned now (called on every scheduling pass)."""
        if self.timeout is None:
            return []
        now = self.clock.now()
        gone: list[tuple[int, _Running]] = []
        with self._lock:
            for job_id, r in self._running.items():
                if r.abandoned or r.ctx is None or now - r.started <= self.timeout:
                    continue
                if r.stop_asked is None:
                    r.stop_asked = now
                    r.ctx.timeout_reason = f"timed out after {_span(self.timeout)} (the job timeout, serve " \
                                           "--job-timeout); stopped and cleaned up"
                    r.ctx.timeout.set()
                    log.error("job %d ran past the job timeout (%s): stopping it", job_id, _span(self.timeout))
                elif now - r.stop_asked > self.abandon:
                    r.abandoned = True
                    if self._busy.get(r.key) == job_id:
                        self._busy.pop(r.key)
                    gone.append((job_id, r))
        for job_id, r in gone:
            error = (f"timed out after {_span(self.timeout)} (the job timeout, serve --job-timeout) and did not stop "
                     f"within {_span(self.abandon)}; abandoned (its thread is still blocked; the VM's later slots "
                     "run, and may find the VM locked until it returns)")
            job = self.store.finish(job_id, "failed", now, error=error, detail={"timed_out": True})
            log.error("job %d %s", job_id, error)
            if r.alert:
                self.alerter.job_failed(job)
            _call(r.on_done, job)
        return [j for j, _ in gone]

    def _execute(self, job_id: int, fn: JobFn, vault: Vault, *, alert: bool) -> Job | None:
        ctx = JobContext(job_id, vault, self.store, self.cancel)
        with self._lock:
            if job_id in self._running:
                self._running[job_id].ctx = ctx
        try:
            ctx.check()
            out = fn(ctx)
            if self._abandoned(job_id):
                log.warning("job %d returned after it was abandoned; its result is discarded", job_id)
                return None
            job = self.store.finish(job_id, "succeeded", self.clock.now(), nbytes=out.bytes, point=out.point,
                                    detail=out.detail)
            log.info("job %d: %s%s succeeded in %.1f s%s", job.id, job.kind, f" of {job.vm}" if job.vm else "",
                     job.duration_s or 0.0, f", point {job.point}" if job.point and job.kind == "backup" else "")
            return job
        except JobInterrupted as exc:
            if self._abandoned(job_id):
                return None
            log.warning("job %d interrupted", job_id)
            return self.store.finish(job_id, "interrupted", self.clock.now(), error=str(exc))
        except CutpointError as exc:
            if self._abandoned(job_id):
                return None
            job = self.store.finish(job_id, "failed", self.clock.now(), error=" ".join(str(exc).split()),
                                    detail={"timed_out": True} if isinstance(exc, JobTimedOut)
                                    else exc.detail if isinstance(exc, JobFailed) else None)
        except Exception as exc:  # noqa: BLE001 - a bug in one job is that job's failure, not the daemon's
            if self._abandoned(job_id):
                return None
            log.exception("job %d crashed", job_id)
            job = self.store.finish(job_id, "failed", self.clock.now(),
                                    error=f"internal error: {type(exc).__name__}: {exc}")
        if alert:
            self.alerter.job_failed(job)
        return job

    def interrupt(self) -> None:
        """Stop starting jobs and ask running ones to stop at their next progress step."""
        self.cancel.set()

    def wait(self, timeout: float) -> bool:
        """Wait for running jobs; True if none is left."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._threads.values())
            if not threads:
                return True
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                with self._lock:
                    return not self._threads


def _call(on_done: DoneFn | None, job: Job) -> None:
    if on_done is None:
        return
    try:
        on_done(job)
    except Exception:   # noqa: BLE001 - a bookkeeping bug must not kill the runner thread
        log.exception("after job %d", job.id)


def _span(t: timedelta) -> str:
    secs = int(t.total_seconds())
    if secs % 3600 == 0:
        return f"{secs // 3600} h"
    if secs % 60 == 0:
        return f"{secs // 60} min"
    return f"{secs} s"
