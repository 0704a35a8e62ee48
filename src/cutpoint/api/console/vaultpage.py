"""The vault page: format, encryption and key fingerprint (from the public ``Vault``), its guard and the requests
waiting for its approval (read only: deciding needs the guard key), verify and gc history."""

from __future__ import annotations

from ...service.daemon import Service
from ...vault import approvals, audit, guard
from .html import Viewer, esc, form, nbytes, state_badge, table


def render(svc: Service, viewer: Viewer, message: str = "") -> str:
    vault = svc.vaults.get()
    cfg = vault.config
    enc = cfg.get("encryption") if isinstance(cfg.get("encryption"), dict) else None
    fp = getattr(vault.sealer, "fingerprint", None)
    rows = [["path", f"<code>{esc(vault.where)}</code>"],
            ["format", esc(f"{cfg.get('format', '?')} v{cfg.get('version', '?')}")],
            ["chunk size", esc(nbytes(cfg.get("chunk_size")))],
            ["encryption", esc(f"{enc.get('cipher')}" if enc else "none (not encrypted)")],
            ["key fingerprint" if enc else "authentication key fingerprint",
             f"<code>{esc(fp or (enc or {}).get('key_fingerprint') or 'none')}</code>"]]
    g = guard.of(cfg)
    rows.append(["guard (multi-user authorization)",
                 f"<code>{esc(g.fingerprint)}</code>" if g else "none: reducing protection needs no second principal"])
    found = approvals.listing(vault.backend, str(cfg.get("id")), g, audit.now())
    reqs = [[f"<code>{esc(r.id)}</code>", state_badge(r.state),
             esc(r.request.operation.describe() if r.request else r.problem),
             esc(r.request.requested_by if r.request else ""),
             esc(audit.iso(r.request.created) if r.request else ""),
             esc(audit.iso(r.request.expires) if r.request else "")] for r in reversed(found)]
    pending = sum(1 for r in found if r.state == "pending")
    approval = (f"<h2>Approval requests ({pending} pending)</h2>"
                + '<p class="note">The guard decides with <code>cutpoint approve REQUEST --guard-key FILE</code> '
                  "(or <code>cutpoint deny</code>); no API token or console session can.</p>"
                + table(["request", "state", "what", "requested by", "created", "expires"], reqs,
                        "approval requests")) if g or found else ""
    hist = []
    for kind in ("verify", "gc"):
        for j in svc.jobs.list(kind=kind, limit=20):
            hist.append([f'<a href="/ui/jobs/{j.id}">#{j.id}</a>', esc(kind), esc(j.vm), state_badge(j.state),
                         esc(j.started), esc(nbytes(j.bytes)), esc((j.error or "")[:160])])
    hist.sort(key=lambda r: r[4], reverse=True)
    actions = ""
    if viewer.operator:
        actions = ("<h2>Actions</h2>"
                   + form("/ui/vault/verify", viewer, '<button type="submit" id="verify-now">Verify now</button>')
                   + " " + form("/ui/vault/gc", viewer, '<button type="submit" id="gc-now">GC now</button>'))
    msg = f'<p role="status" class="ok">{esc(message)}</p>' if message else ""
    return (msg + table(["", ""], rows, "vault") + approval + actions + "<h2>Verify and gc history</h2>"
            + table(["job", "kind", "VM", "state", "started", "bytes", "error"], hist, "verify and gc jobs"))
