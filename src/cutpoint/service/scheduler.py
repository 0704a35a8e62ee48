"""The scheduling pass: which VM is owed a backup now, and what happens after each attempt.

Rules (docs/design.md, "Service and policies"):

* A VM is scheduled only while it has a policy. When it first gets one (or its policy's schedule or time zone
  changes) the scheduler *baselines*: the latest slot so far counts as served, so the first backup runs at the next
  slot, not at once.
* On each pass a VM is owed a backup if the latest slot at or before now is newer than the last slot it served.
  Only that latest slot is run: after downtime that missed several slots the VM gets **one** catch-up backup, and the
  skipped slots are recorded on the job (``skipped_slots``), never replayed as a burst.
* One job per VM at a time: a VM with a running job waits for the next pass.
* A failed attempt is retried for the same slot after ``backoff * 2**(n-1)`` seconds (capped), up to ``attempts``
  in all; then the slot is given up (an alert says so). A newer slot supersedes a pending retry.
* An interrupted job (shutdown) leaves its slot owed: after a restart it runs as catch-up.
* After a successful scheduled backup the VM's retention runs (prune), in the same thread while the VM is held; when
  prune removed points, gc runs on a later pass once no job is running, at most every ``gc_interval``.
* A VM with a policy that has had no successful backup within the policy's interval plus its ``rpo_grace_minutes``
  raises one RPO alert per breach, cleared by the next success (``rpo.py``).
* A policy's ``verify`` schedule runs a ``verify`` job of each of its VMs (baselined like backups, one per owed
  slot, waiting while the VM has another job, never retried); a failure (damage found) alerts.
* A policy's ``copy`` copies each of its VMs' points into another vault (``vault/copy.py``): right after each
  successful backup (and its prune), in the same thread, or at its own schedule's slots (baselined like verify).
* A VM whose catalog row is damaged is skipped with one failed job and alert per damage (per process); the other
  VMs are scheduled as usual.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..errors import CutpointError, LockedError, VaultError
from ..jobs.alerts import Alerter
from ..jobs.store import Job, iso
from ..policy.model import Policy
from ..policy.schedule import latest_slot, next_slot, slots_between
from ..policy.store import PolicyStore
from ..vault.prune import parse_created
from .clock import Clock
from .rpo import RpoWatch
from .runner import JobContext, Outcome, Runner
from .state import StateStore, VmState
from .vaults import VaultSource
from .work import BackupFn, backup_job, copy_job, drill_job, gc_job, prune_job, verify_job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3                # attempts per slot, the first included
    backoff: float = 60.0            # seconds before the second attempt; doubles each time
    max_backoff: float = 3600.0

    def delay(self, failed_attempt: int) -> timedelta:
        return timedelta(seconds=min(self.max_backoff, self.backoff * 2 ** (failed_attempt - 1)))


DRILL_LOCK_WAIT = 6 * 3600.0             # a scheduled drill waits this long for another VM's drill to end


class Scheduler:
    def __init__(self, vaults: VaultSource, runner: Runner, state: StateStore, policies: PolicyStore, clock: Clock,
                 alerter: Alerter, rpo: RpoWatch, verify_state: StateStore, *, retry: RetryPolicy = RetryPolicy(),
                 backup_fn: BackupFn | None = None, gc_interval: timedelta = timedelta(hours=1),
                 gc_grace: float | None = None, late: timedelta = timedelta(minutes=5),
                 drill_state: StateStore | None = None, copy_state: StateStore | None = None) -> None:
        self.vaults = vaults
        self.runner = runner
        self.state = state
        self.policies = policies
        self.clock = clock
        self.alerter = alerter
        self.rpo = rpo
        self.verify_state = verify_state
        self.drill_state = drill_state
        self.copy_state = copy_state
        self.retry = retry
        self.backup_fn = backup_fn
        self.gc_interval = gc_interval
        self.gc_grace = gc_grace
        self.late = late                 # a slot run later than this after its time is reported as catch-up
        self.gc_wanted = False
        self.last_gc: datetime | None = None
        self._warned: set[tuple[str, str]] = set()
        self._damaged: dict[str, str] = {}            # VM -> the damage already reported

    def tick(self) -> list[int]:
        """One pass over all VMs; returns the ids of the jobs it started."""
        self.runner.enforce_timeouts()
        now = self.clock.now()
        policies = {p.name: p for p in self.policies.all()}
        started = []
        catalog = self.vaults.get().catalog
        for vm in catalog.vm_rows():
            if vm.damaged is not None:
                job = self._damaged_row(vm.name, vm.damaged)
                if job is not None:
                    started.append(job)
                continue
            self._damaged.pop(vm.name, None)
            pname = vm.settings.get("policy")
            if not pname:
                if self.state.get(vm.name) is not None:
                    self.state.drop(vm.name)      # unassigned: a later assignment starts afresh, owes nothing
                    self.rpo.drop(vm.name)
                if self.verify_state.get(vm.name) is not None:
                    self.verify_state.drop(vm.name)
                continue
            policy = policies.get(pname)
            if policy is None:
                if (vm.name, pname) not in self._warned:
                    self._warned.add((vm.name, pname))
                    log.error("VM %s is assigned policy %r, which does not exist: not scheduled", vm.name, pname)
                continue
            job = self._consider(vm.name, policy, now)
            if job is not None:
                started.append(job)
            self.rpo.check(catalog, vm.name, policy, now, backing_up=self._backing_up(vm.name))
            job = self._consider_verify(vm.name, policy, now)
            if job is not None:
                started.append(job)
            job = self._consider_drill(vm.name, policy, now)
            if job is not None:
                started.append(job)
            job = self._consider_copy(vm.name, policy, now)
            if job is not None:
                started.append(job)
        gc = self._maybe_gc(now)
        return started + ([gc] if gc is not None else [])

    def _backing_up(self, vm: str) -> bool:
        job = self.runner.busy(vm)
        if job is None:
            return False
        try:
            return self.runner.store.get(job).kind == "backup"
        except CutpointError:
            return False

    def _damaged_row(self, vm: str, damage: str) -> int | None:
        """Skip a VM whose catalog row is damaged, with one failed job (and its alert) per damage, not per pass."""
        if self._damaged.get(vm) == damage:
            return None
        reason = (f"catalog row of VM {vm!r} is damaged: {damage}; it is not backed up until the row is repaired "
                  f"(re-register the VM with 'cutpoint vm add {vm} ...')")

        def fail(_ctx: JobContext) -> Outcome:
            raise VaultError(reason)
        try:
            job = self.runner.submit("backup", vm, fail, trigger="schedule", detail={"damaged": damage})
        except LockedError:
            return None
        self._damaged[vm] = damage
        return job

    def next_run(self, vm: str, policy: Policy) -> datetime | None:
        """When the VM's next backup is due (a pending retry or owed slot counts)."""
        now = self.clock.now()
        st = self.state.get(vm)
        if st is not None and st.schedule == policy.schedule_key():
            if st.pending is not None and st.retry_at is not None:
                return st.retry_at
            latest = latest_slot(policy, now)
            if latest is not None and st.handled is not None and latest > st.handled:
                return now
        return next_slot(policy, now)

    def _consider(self, vm: str, policy: Policy, now: datetime) -> int | None:
        st = self.state.get(vm)
        latest = latest_slot(policy, now)
        key = policy.schedule_key()
        if st is None or st.schedule != key:
            self.state.put(VmState(vm, key, handled=latest))
            log.info("VM %s follows policy %s; first backup at %s", vm, policy.name, next_slot(policy, now))
            return None
        if latest is None or (st.handled is not None and latest <= st.handled):
            return None
        if self.runner.busy(vm) is not None:
            return None
        retrying = st.pending == latest
        if retrying and st.retry_at is not None and now < st.retry_at:
            return None
        attempt = st.attempts + 1 if retrying else 1
        skipped = len(slots_between(policy, st.handled, latest)) - 1 if st.handled is not None else 0
        trigger = "retry" if attempt > 1 else "catch-up" if skipped or now - latest > self.late else "schedule"
        try:
            return self.runner.submit(
                "backup", vm, backup_job(vm, policy=policy, backup_fn=self.backup_fn), trigger=trigger,
                slot=iso(latest), attempt=attempt, detail={"policy": policy.name, "skipped_slots": max(0, skipped)},
                alert=False, on_done=lambda job: self._done(vm, policy, latest, attempt, job))
        except LockedError:
            return None

    def _done(self, vm: str, policy: Policy, slot: datetime, attempt: int, job: Job) -> None:
        """Bookkeeping after an attempt (runs in the job's thread, the VM still held)."""
        st = self.state.get(vm)
        if st is None or st.schedule != policy.schedule_key():
            return                                        # the policy changed meanwhile: its state starts afresh
        if job.state == "interrupted":
            return                                        # the slot stays owed
        if job.state == "succeeded":
            if st.handled is None or slot > st.handled:
                st.handled = slot
            st.pending, st.attempts, st.retry_at = None, 0, None
            self.state.put(st)
            pruned = self.runner.chain("prune", vm, prune_job(vm, policy), trigger="service",
                                       detail={"policy": policy.name, "after_job": job.id})
            if pruned.state == "succeeded" and pruned.detail.get("removed"):
                self.gc_wanted = True
            if policy.copy is not None and policy.copy.after_backup:
                self.runner.chain("copy", vm, copy_job(vm, policy.copy, policy.name), trigger="service",
                                  detail={"policy": policy.name, "after_job": job.id, "to": policy.copy.to})
            return
        final = attempt >= self.retry.attempts or bool(job.detail.get("timed_out"))   # a hung VM: the next slot
        if final:
            if st.handled is None or slot > st.handled:
                st.handled = slot
            st.pending, st.attempts, st.retry_at = None, 0, None
        else:
            st.pending, st.attempts, st.retry_at = slot, attempt, self.clock.now() + self.retry.delay(attempt)
        self.state.put(st)
        self.alerter.job_failed(job, final=final)

    def _consider_verify(self, vm: str, policy: Policy, now: datetime) -> int | None:
        """Scheduled verify: baselined like backups; the latest owed slot runs once, never retried (damage does not
        heal by trying again; its failure alerts); an interrupted one stays owed."""
        vp = policy.verify_policy()
        st = self.verify_state.get(vm)
        if vp is None or policy.verify is None:
            if st is not None:
                self.verify_state.drop(vm)
            return None
        latest = latest_slot(vp, now)
        if st is None or st.schedule != vp.schedule_key():
            self.verify_state.put(VmState(vm, vp.schedule_key(), handled=latest))
            return None
        if latest is None or (st.handled is not None and latest <= st.handled) or self.runner.busy(vm) is not None:
            return None
        late = (st.handled is not None and len(slots_between(vp, st.handled, latest)) > 1) or now - latest > self.late
        read_data = policy.verify.read_data
        try:
            return self.runner.submit(
                "verify", vm, verify_job(vm, read_data=read_data, policy=policy.name),
                trigger="catch-up" if late else "schedule", slot=iso(latest),
                detail={"policy": policy.name, "read_data": read_data},
                on_done=lambda job: self._verify_done(vm, vp, latest, job))
        except LockedError:
            return None

    def _verify_done(self, vm: str, vp: Policy, slot: datetime, job: Job) -> None:
        st = self.verify_state.get(vm)
        if st is None or st.schedule != vp.schedule_key() or job.state == "interrupted":
            return
        if st.handled is None or slot > st.handled:
            st.handled = slot
            self.verify_state.put(st)

    def _consider_drill(self, vm: str, policy: Policy, now: datetime) -> int | None:
        """Scheduled restore drills (``policy.drill``): after every Nth point of the VM, or at a schedule's slots
        (baselined like verify: the latest owed slot runs once). ``handled`` is the newest point counted (after N)
        or the slot done. A drill waits for the host's drill lock, so drills of several VMs run one at a time."""
        ds = self.drill_state
        if ds is None:
            return None
        st = ds.get(vm)
        if policy.drill is None:
            if st is not None:
                ds.drop(vm)
            return None
        if self.runner.busy(vm) is not None:
            return None
        pts = self.vaults.get().catalog.points(vm)
        if policy.drill.after_backups:
            key = f"after_backups={policy.drill.after_backups}"
            newest = parse_created(pts[-1].created) if pts else None
            if st is None or st.schedule != key:
                ds.put(VmState(vm, key, handled=newest))
                return None
            if newest is None or (st.handled is not None and newest <= st.handled) \
                    or len(pts) % policy.drill.after_backups:
                return None
            slot: datetime | None = newest
        else:
            dp = policy.drill_policy()
            assert dp is not None
            slot = latest_slot(dp, now)
            if st is None or st.schedule != dp.schedule_key():
                ds.put(VmState(vm, dp.schedule_key(), handled=slot))
                return None
            if slot is None or (st.handled is not None and slot <= st.handled) or not pts:
                return None
        point = pts[-1].id
        if policy.drill.pick == "random" and len(pts) > 1:
            point = random.choice(pts[:-1]).id
        try:
            return self.runner.submit("drill", vm, drill_job(vm, point, lock_wait=DRILL_LOCK_WAIT),
                                      trigger="schedule", detail={"policy": policy.name, "point": point},
                                      on_done=lambda job: self._drill_done(vm, slot, job))
        except LockedError:
            return None

    def _drill_done(self, vm: str, slot: datetime | None, job: Job) -> None:
        ds = self.drill_state
        st = ds.get(vm) if ds is not None else None
        if ds is None or st is None or job.state == "interrupted" or slot is None:
            return
        if st.handled is None or slot > st.handled:
            st.handled = slot
            ds.put(st)

    def _consider_copy(self, vm: str, policy: Policy, now: datetime) -> int | None:
        """Scheduled offsite copy (``policy.copy`` with a schedule): baselined like verify; the latest owed slot
        runs once (a failure alerts; the next slot's copy resumes where it stopped); an interrupted one stays owed."""
        cs = self.copy_state
        if cs is None:
            return None
        cp = policy.copy_policy()
        st = cs.get(vm)
        if cp is None or policy.copy is None:
            if st is not None:
                cs.drop(vm)
            return None
        latest = latest_slot(cp, now)
        if st is None or st.schedule != cp.schedule_key():
            cs.put(VmState(vm, cp.schedule_key(), handled=latest))
            return None
        if latest is None or (st.handled is not None and latest <= st.handled) or self.runner.busy(vm) is not None:
            return None
        try:
            return self.runner.submit(
                "copy", vm, copy_job(vm, policy.copy, policy.name), trigger="schedule", slot=iso(latest),
                detail={"policy": policy.name, "to": policy.copy.to},
                on_done=lambda job: self._copy_done(vm, cp, latest, job))
        except LockedError:
            return None

    def _copy_done(self, vm: str, cp: Policy, slot: datetime, job: Job) -> None:
        cs = self.copy_state
        st = cs.get(vm) if cs is not None else None
        if cs is None or st is None or st.schedule != cp.schedule_key() or job.state == "interrupted":
            return
        if st.handled is None or slot > st.handled:
            st.handled = slot
            cs.put(st)

    def _maybe_gc(self, now: datetime) -> int | None:
        if not self.gc_wanted or not self.runner.idle():
            return None
        if self.last_gc is not None and now - self.last_gc < self.gc_interval:
            return None
        try:
            job = self.runner.submit("gc", None, gc_job(self.gc_grace), trigger="service")
        except (LockedError, CutpointError):
            return None
        self.gc_wanted = False
        self.last_gc = now
        return job
