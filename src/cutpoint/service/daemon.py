"""The backup service: the scheduler loop, the job runner and the stores, started and stopped as one.

``cutpoint serve`` wraps this with the REST API. Shutdown order is what keeps the catalog honest: stop starting jobs,
interrupt running ones at their next progress step (their own cleanup runs: cut released, no catalog row), wait for
them, and only then mark whatever is still ``running`` as ``interrupted``. A SIGKILL skips all of that; the next start
reaps those jobs instead (the process that ran them is gone).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from ..errors import CutpointError
from ..jobs.alerts import Alerter
from ..jobs.store import JobStore
from ..policy.store import PolicyStore
from ..vault.vault import Vault
from .clock import Clock, SystemClock
from .rpo import RpoWatch
from .runner import DEFAULT_ABANDON, DEFAULT_TIMEOUT, Runner
from .scheduler import RetryPolicy, Scheduler
from .state import StateStore
from .vaults import VaultSource
from .work import BackupFn

log = logging.getLogger(__name__)


class Service:
    def __init__(self, vault: Vault, *, clock: Clock | None = None, tick: float = 5.0, webhook: str | None = None,
                 retry: RetryPolicy = RetryPolicy(), backup_fn: BackupFn | None = None, inline: bool = False,
                 gc_interval: timedelta = timedelta(hours=1), gc_grace: float | None = None,
                 job_timeout: timedelta | None = DEFAULT_TIMEOUT, job_abandon: timedelta = DEFAULT_ABANDON) -> None:
        self.clock: Clock = clock or SystemClock()
        self.tick_seconds = tick
        self.vaults = VaultSource(vault)
        path = self.vaults.catalog_path
        self.jobs = JobStore(path)
        self.state = StateStore(path)
        self.verify_state = StateStore(path, "verify_state")
        self.drill_state = StateStore(path, "drill_state")
        self.copy_state = StateStore(path, "copy_state")
        self.policies = PolicyStore(path)
        self.alerter = Alerter(webhook)
        self.rpo = RpoWatch(path, self.alerter)
        self.runner = Runner(self.vaults, self.jobs, self.clock, self.alerter, inline=inline, timeout=job_timeout,
                             abandon=job_abandon)
        self.scheduler = Scheduler(self.vaults, self.runner, self.state, self.policies, self.clock, self.alerter,
                                   self.rpo, self.verify_state, retry=retry, backup_fn=backup_fn,
                                   gc_interval=gc_interval, gc_grace=gc_grace, drill_state=self.drill_state,
                                   copy_state=self.copy_state)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.running = False

    def recover(self) -> list[int]:
        """Mark jobs left ``running`` by a dead process (a killed daemon, a killed CLI backup) as interrupted."""
        reaped = self.jobs.reap(self.clock.now(), own_running=set())
        if reaped:
            log.warning("jobs %s were left running by a process that ended; marked interrupted",
                        ", ".join(map(str, reaped)))
        return reaped

    def tick(self) -> list[int]:
        return self.scheduler.tick()

    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="cutpoint-scheduler", daemon=True)
        self.running = True
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.scheduler.tick()
            except CutpointError as exc:
                log.error("scheduling pass failed: %s", exc)
            except Exception:  # noqa: BLE001 - the loop must outlive a bug in one pass
                log.exception("scheduling pass crashed")
            if self.clock.wait(self._stop, self.tick_seconds):
                break

    def stop(self, grace: float = 60.0) -> bool:
        """Stop cleanly; True if every running job finished (interrupted or not) within ``grace`` seconds."""
        self._stop.set()
        self.runner.interrupt()
        if self._thread is not None:
            self._thread.join(grace)
        clean = self.runner.wait(grace)
        left = self.jobs.reap(self.clock.now(), own_running=set())
        if left:
            log.error("jobs %s did not stop within %.0f s; marked interrupted", ", ".join(map(str, left)), grace)
        self.alerter.flush(5.0)
        self.running = False
        return clean and not left

    def close(self) -> None:
        for store in (self.jobs, self.state, self.verify_state, self.drill_state, self.copy_state, self.policies,
                      self.rpo):
            store.close()
