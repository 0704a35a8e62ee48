"""Jobs (a filterable log and each job's detail, refreshing while it runs) and alerts (with acknowledge)."""

from __future__ import annotations

import json

from ...jobs.store import KINDS, STATES
from ...service.daemon import Service
from .alerts import alerts
from .dashboard import progress
from .html import Viewer, esc, field, form, nbytes, state_badge, table


def render_list(svc: Service, viewer: Viewer, vm: str | None, state: str | None, kind: str | None) -> str:
    errors: dict[str, str] = {}
    if state and state not in STATES:
        errors["state"] = f"{state!r} is not one of {', '.join(STATES)}"
        state = None
    if kind and kind not in KINDS:
        errors["kind"] = f"{kind!r} is not one of {', '.join(KINDS)}"
        kind = None
    filt = ('<form method="get" action="/ui/jobs" class="block"><fieldset><legend>filter</legend>'
            + field("vm", "VM", vm or "", errors)
            + field("state", "state", state or "", errors, options=("",) + STATES)
            + field("kind", "kind", kind or "", errors, options=("",) + KINDS)
            + '<button type="submit">Filter</button></fieldset></form>')
    rows = [[f'<a href="/ui/jobs/{j.id}">#{j.id}</a>', esc(j.kind), esc(j.vm), state_badge(j.state), esc(j.trigger),
             esc(j.started), esc("" if j.duration_s is None else f"{j.duration_s:.1f} s"), esc(nbytes(j.bytes)),
             esc((j.error or "")[:160])]
            for j in svc.jobs.list(vm=vm or None, state=state, kind=kind, limit=200)]
    return filt + table(["job", "kind", "VM", "state", "trigger", "started", "took", "bytes", "error"], rows, "jobs")


def render_one(svc: Service, viewer: Viewer, job_id: int) -> tuple[str, bool]:
    """(HTML, still running)."""
    j = svc.jobs.get(job_id)
    live = ""
    if j.state == "running":
        b, r, eta = progress(svc, j)
        live = (f'<p role="status" aria-live="polite">Running: <b id="job-bytes">{esc(b)}</b> at {esc(r)}, '
                f"ETA {esc(eta)} (this page refreshes every 2 s).</p>")
    rows = [[esc(k), esc(v)] for k, v in (("kind", j.kind), ("VM", j.vm), ("trigger", j.trigger),
                                          ("attempt", j.attempt), ("started", j.started), ("ended", j.ended),
                                          ("duration", j.duration_s), ("bytes", nbytes(j.bytes)), ("point", j.point))]
    rows.insert(0, ["state", f'<span id="job-state">{state_badge(j.state)}</span>'])
    err = f'<h2>Error</h2><p class="bad">{esc(j.error)}</p>' if j.error else ""
    back = f'<p><a href="/ui/vms/{esc(j.vm)}">VM {esc(j.vm)}</a></p>' if j.vm else ""
    return (live + table(["", ""], rows, f"job {j.id}") + err
            + f"<h2>Detail</h2><pre>{esc(json.dumps(j.detail, indent=2, default=str))}</pre>" + back,
            j.state == "running")


def render_alerts(svc: Service, viewer: Viewer, show_acked: bool) -> str:
    rows = []
    for a in alerts(svc):
        if a.acked and not show_acked:
            continue
        ack = ('<span class="note">acknowledged</span>' if a.acked else
               form("/ui/alerts/ack", viewer, f'<input type="hidden" name="key" value="{esc(a.key)}">'
                    f'<button type="submit" aria-label="acknowledge {esc(a.what)}">Acknowledge</button>'))
        rows.append([esc(a.when), esc(a.what), esc(a.text), ack])
    toggle = ('<p><a href="/ui/alerts">hide acknowledged</a></p>' if show_acked else
              '<p><a href="/ui/alerts?all=1">show acknowledged too</a></p>')
    return toggle + table(["when", "alert", "detail", ""], rows, "alerts (7 days)")
