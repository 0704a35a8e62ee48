"""The VM page: points timeline with badges, a server-side SVG plot, Back up now, policy and restore forms."""

from __future__ import annotations

from ...catalog.db import PointRecord
from ...service.daemon import Service
from ...vault import protection
from ...vault.locks import in_use
from ...vault.protection import Protection
from ...vault.prune import parse_created
from .html import Viewer, esc, field, form, nbytes, state_badge, table

CONSISTENCY_CHOICES = ("", "crash", "app")


def badges(svc: Service, p: PointRecord, prot: Protection) -> str:
    vault = svc.vaults.get()
    out = []
    v = vault.catalog.verified(p.id)
    if v is None:
        out.append('<span class="badge note">unverified</span>')
    else:
        cls = "ok" if v.state == "ok" else "bad"
        out.append(f'<span class="badge {cls}" title="{esc(v.checked)}">verify: {esc(v.state)} ({esc(v.level)})</span>')
    d = vault.catalog.drill(p.id)
    if d is not None:
        rto = d.result.get("rto_s")
        title = d.checked + (f", RTO {rto} s" if isinstance(rto, (int, float)) else "")
        reasons = d.result.get("reasons")
        why = "; ".join(str(r) for r in reasons[:3]) if isinstance(reasons, list) and d.verdict != "passed" else ""
        out.append(f'<span class="badge {"ok" if d.verdict == "passed" else "bad"}" title="{esc(title)}">'
                   f'drill: {esc(d.verdict)}</span>' + (f' <span class="note">{esc(why)}</span>' if why else ""))
    try:
        created = parse_created(p.created)
    except (TypeError, ValueError):
        created = None                          # a damaged row: its own badge says so
    if created is not None and prot.is_immutable(created, protection.now()):
        out.append(f'<span class="badge ok" title="no prune or delete before then (vault: {prot.immutable_days} '
                   f'days)">immutable until {prot.immutable_until(created):%Y-%m-%d %H:%M}Z</span>')
    if in_use(vault.pin_path(p.id)):            # what prune checks: a mount, file view or instant restore holds it
        out.append('<span class="badge warn" title="served right now: prune keeps it">pinned</span>')
    if p.damaged:
        out.append(f'<span class="badge bad">damaged: {esc(p.damaged)}</span>')
    return " ".join(out)


def plot(points: list[PointRecord]) -> str:
    """Inline SVG: pause_ms (line) and bytes read / stored (bars) per point, newest right; no script needed."""
    if not points:
        return ""
    pts = points[-40:]
    w, h, pad = 720, 180, 30
    step = (w - 2 * pad) / max(len(pts), 1)
    top_b = max(max(p.read_bytes, p.stored_bytes) for p in pts) or 1
    top_p = max(p.pause_ms for p in pts) or 1.0
    parts = [f'<svg role="img" aria-labelledby="plot-t" width="{w}" height="{h + 20}" viewBox="0 0 {w} {h + 20}" '
             'xmlns="http://www.w3.org/2000/svg"><title id="plot-t">pause_ms and bytes read/stored per point</title>',
             f'<line x1="{pad}" y1="{h}" x2="{w - pad}" y2="{h}" stroke="#444"/>']
    line = []
    for i, p in enumerate(pts):
        x = pad + i * step
        bw = min(max(step / 2 - 2, 1), 24)
        for j, (val, color) in enumerate(((p.read_bytes, "#0b4f9c"), (p.stored_bytes, "#2e8b57"))):
            bh = (h - pad) * val / top_b
            parts.append(f'<rect x="{x + j * bw:.1f}" y="{h - bh:.1f}" width="{bw:.1f}" height="{bh:.1f}" '
                         f'fill="{color}"><title>{esc(p.id)}: {"read" if j == 0 else "stored"} '
                         f'{esc(nbytes(val))}</title></rect>')
        y = h - (h - pad) * p.pause_ms / top_p
        line.append(f"{x + bw:.1f},{y:.1f}")
        parts.append(f'<circle cx="{x + bw:.1f}" cy="{y:.1f}" r="4" fill="#a1110f"><title>{esc(p.id)}: pause '
                     f'{p.pause_ms:.1f} ms</title></circle>')
    parts.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="#a1110f" stroke-width="2"/>')
    parts.append(f'<text x="{pad}" y="{h + 16}" font-size="12">bars: read (blue), stored (green), max '
                 f'{esc(nbytes(top_b))}; line: pause_ms (red), max {top_p:.1f} ms</text></svg>')
    return "".join(parts)


def render(svc: Service, viewer: Viewer, name: str, errors: dict[str, str] | None = None,
           message: str = "") -> str:
    errors = errors or {}
    vault = svc.vaults.get()
    vm = vault.catalog.vm(name)
    pts = vault.catalog.points(name)
    prot = protection.current(vault, fetch=False)      # as configured now ('vault protect' may have changed it)
    rows = []
    for p in reversed(pts):
        s = p.summary or {}
        cons = esc(p.consistency)
        if s.get("fallback_reason"):
            cons += f' <span class="warn">(fell back: {esc(s.get("fallback_reason"))})</span>'
        rows.append([f'<code>{esc(p.id)}</code>', esc(p.created), cons, esc(p.mode), f"{p.pause_ms:.1f}",
                     esc(nbytes(p.read_bytes)), esc(nbytes(p.stored_bytes)), badges(svc, p, prot),
                     f'<a href="/ui/vms/{esc(name)}/points/{esc(p.id)}">restore / files</a>'])
    policy = vm.settings.get("policy") or ""
    busy = svc.runner.busy(name)
    msg = f'<p role="status" class="ok">{esc(message)}</p>' if message else ""
    backup = form(f"/ui/vms/{name}/backup", viewer,
                  field("consistency", "consistency", "", errors, options=CONSISTENCY_CHOICES,
                        labels={"": "as configured", "crash": "crash-consistent",
                                "app": "application-consistent (guest agent)"},
                        hint="as configured: the policy's type, else the VM's own")
                  + field("full", "read every disk in full", "no", errors, options=("no", "yes"))
                  + '<button type="submit" id="backup-now">Back up now</button>', cls="block")
    assign = form(f"/ui/vms/{name}/policy", viewer,
                  field("policy", "policy", policy, errors, options=("",) + tuple(p.name for p in svc.policies.all()))
                  + '<button type="submit">Assign</button>', cls="block")
    running = (f'<p>A job is running for this VM: <a href="/ui/jobs/{busy}">#{busy}</a>.</p>' if busy else "")
    last = svc.jobs.list(vm=name, limit=5)
    jobs = table(["job", "kind", "state", "started"], [[f'<a href="/ui/jobs/{j.id}">#{j.id}</a>', esc(j.kind),
                                                         state_badge(j.state), esc(j.started)] for j in last],
                 "recent jobs")
    return (f"{msg}<p>{esc(vm.kind)} at <code>{esc(vm.address)}</code>, added {esc(vm.added)}; policy "
            f"<b>{esc(policy or 'none')}</b>.</p>{running}"
            + (f"<h2>Back up now</h2>{backup}<h2>Policy</h2>{assign}" if viewer.operator else "")
            + f"<h2>Points</h2>{plot(pts)}"
            + table(["point", "created", "consistency", "mode", "pause_ms", "read", "stored", "badges", ""], rows,
                    "points")
            + f"<h2>Recent jobs</h2>{jobs}")
