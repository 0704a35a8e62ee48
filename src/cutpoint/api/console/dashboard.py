"""The dashboard: protection, 7 days of job outcomes, running jobs with progress, vault usage, alerts."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

from ...jobs.store import STATES, Job, iso, parse_iso
from ...service.daemon import Service
from ...service.report import drills, status, usage
from .alerts import open_alerts
from .html import Viewer, esc, nbytes, state_badge, table


def progress(svc: Service, job: Job) -> tuple[str, str, str]:
    """(bytes, rate, ETA) of a running job; the ETA assumes it reads as much as the VM's newest point did."""
    elapsed = max((svc.clock.now() - parse_iso(job.started)).total_seconds(), 1e-3)
    rate = job.bytes / elapsed
    eta = "unknown"
    if job.vm and job.kind == "backup":
        pts = svc.vaults.get().catalog.points(job.vm)
        total = pts[-1].read_bytes if pts else 0
        if total and rate > 0:
            eta = f"~{max(0.0, (total - job.bytes) / rate):.0f} s" if total > job.bytes else "finishing"
    return nbytes(job.bytes), nbytes(rate) + "/s", eta


def running_table(svc: Service) -> str:
    rows = []
    for j in svc.jobs.list(state="running", limit=50):
        b, r, eta = progress(svc, j)
        rows.append([f'<a href="/ui/jobs/{j.id}">#{j.id}</a>', esc(j.kind), _vm_link(j.vm), esc(j.started),
                     f'<span class="progress">{esc(b)}</span>', esc(r), esc(eta)])
    return table(["job", "kind", "VM", "started", "bytes", "rate", "ETA"], rows, "running jobs")


def _vm_link(vm: str | None) -> str:
    return f'<a href="/ui/vms/{esc(vm)}">{esc(vm)}</a>' if vm else ""


def drill_table(svc: Service, last: int = 10) -> str:
    """The newest drills first: a failed one is the thing an operator must see before a disaster does."""
    rows = sorted(drills(svc.vaults.get()), key=lambda r: r.checked, reverse=True)[:last]
    return table(["VM", "point", "verdict", "RTO", "checked", "reasons"],
                 [[esc(r.vm), esc(r.point), f'<span class="badge {"ok" if r.verdict == "passed" else "bad"}">{esc(r.verdict)}</span>',
                   esc(f"{r.rto_s:.1f} s" if r.rto_s is not None else "–"), esc(r.checked), esc("; ".join(r.reasons))]
                  for r in rows], "drills")


def estimated_full(svc: Service) -> tuple[str, int, int]:
    """(date or reason, free bytes, growth bytes/day) from the stored bytes of the last 30 days' points."""
    vault = svc.vaults.get()
    disk = shutil.disk_usage(vault.root)
    since = svc.clock.now() - timedelta(days=30)
    pts = [p for p in vault.catalog.points() if parse_iso(p.created) >= since]
    if len(pts) < 2:
        return "not enough history (two points in 30 days needed)", disk.free, 0
    span = (parse_iso(pts[-1].created) - parse_iso(pts[0].created)).total_seconds()
    grown = sum(p.stored_bytes for p in pts[1:])
    per_day = int(grown / max(span, 60.0) * 86400)
    if per_day <= 0:
        return "not growing", disk.free, 0
    when = svc.clock.now() + timedelta(days=disk.free / per_day)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d"), disk.free, per_day


def outcomes_by_day(svc: Service, days: int = 7) -> str:
    """A row per UTC day of the last ``days``: how many jobs ended in each state (newest day first)."""
    now = svc.clock.now().astimezone(timezone.utc)
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    counts: dict[str, dict[str, int]] = {}
    for j in svc.jobs.list(since=iso(since), limit=100000):
        day = parse_iso(j.started).astimezone(timezone.utc).strftime("%Y-%m-%d")
        counts.setdefault(day, {})
        counts[day][j.state] = counts[day].get(j.state, 0) + 1
    rows = []
    for i in range(days):
        day = (now - timedelta(days=i)).strftime("%Y-%m-%d")
        c = counts.get(day, {})
        rows.append([esc(day)] + [str(c.get(s, 0)) if c.get(s) else '<span class="note">0</span>' for s in STATES])
    return table(["day (UTC)", *STATES], rows, "jobs per day")


def render(svc: Service, viewer: Viewer) -> tuple[str, bool]:
    """(HTML, whether a job runs: the page then refreshes itself to show its progress)."""
    return _render(svc, viewer), bool(svc.jobs.list(state="running", limit=1))


def _render(svc: Service, viewer: Viewer) -> str:
    rep = status(svc, 24 * 7)
    use = usage(svc.vaults.get())
    breach = {v.vm.name: bool(svc.rpo.open_breach(v.vm.name)) for v in rep.vms}
    breaching = [v for v in rep.vms if breach[v.vm.name]]
    protected = [v for v in rep.vms if v.protected]
    unprotected = [v for v in rep.vms if not v.protected]
    cards = "".join(f'<div class="card">{esc(label)}<b>{n}</b></div>' for label, n in (
        ("protected VMs", len(protected)), ("unprotected VMs", len(unprotected)),
        ("breaching RPO", len(breaching))))
    vm_rows = []
    for v in rep.vms:
        state = ('<span class="bad">RPO breach</span>' if breach[v.vm.name] else
                 '<span class="ok">protected</span>' if v.protected else '<span class="warn">unprotected</span>')
        vm_rows.append([_vm_link(v.vm.name), state, esc(v.vm.policy or "none"), str(v.vm.points),
                        esc(v.last_success or "never"), esc(v.vm.next_run or ""),
                        f"{v.backups_ok} ok / {v.jobs_failed} failed"])
    outcomes = " ".join(f"{state_badge(s)} {n}" for s, n in sorted(rep.jobs.items())) or "no jobs"
    logical = sum(v.logical_bytes for v in use.vms)
    stored = use.vault_stored_bytes
    full, free, per_day = estimated_full(svc)
    dedup = f"{logical / stored:.2f}×" if stored else "n/a"
    alerts = open_alerts(svc)
    alert_rows = [[esc(a.when), esc(a.what), esc(a.text)] for a in alerts[:10]]
    return (f'<section aria-labelledby="h-prot"><h2 id="h-prot">Protection</h2><div class="cards">{cards}</div>'
            + table(["VM", "state", "policy", "points", "last success", "next run", "7 days"], vm_rows, "VMs")
            + f'</section><section aria-labelledby="h-out"><h2 id="h-out">Job outcomes, 7 days</h2>'
            f"<p>{outcomes}</p>{outcomes_by_day(svc)}</section>"
            f'<section aria-labelledby="h-run"><h2 id="h-run">Running jobs</h2>{running_table(svc)}</section>'
            f'<section aria-labelledby="h-use"><h2 id="h-use">Vault usage</h2><div class="cards">'
            f'<div class="card">logical<b>{esc(nbytes(logical))}</b></div>'
            f'<div class="card">stored<b>{esc(nbytes(stored))}</b></div>'
            f'<div class="card">dedup factor<b>{esc(dedup)}</b></div>'
            f'<div class="card">estimated full<b>{esc(full)}</b>{esc(nbytes(free))} free, '
            f'{esc(nbytes(per_day))}/day</div></div></section>'
            f'<section aria-labelledby="h-drill"><h2 id="h-drill">Last drill verdicts</h2>{drill_table(svc)}</section>'
            f'<section aria-labelledby="h-al"><h2 id="h-al">Alerts</h2>'
            + table(["when", "what", "detail"], alert_rows, "open alerts")
            + '<p><a href="/ui/alerts">all alerts</a></p></section>'
            + f'<p class="note">generated {esc(iso(datetime.now(timezone.utc)))}</p>')
