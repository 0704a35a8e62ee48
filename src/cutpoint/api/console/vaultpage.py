"""The vault page: format, encryption and key fingerprint (from the public ``Vault``), verify and gc history."""

from __future__ import annotations

from ...service.daemon import Service
from .html import Viewer, esc, form, nbytes, state_badge, table


def render(svc: Service, viewer: Viewer, message: str = "") -> str:
    vault = svc.vaults.get()
    cfg = vault.config
    enc = cfg.get("encryption") if isinstance(cfg.get("encryption"), dict) else None
    fp = getattr(vault.sealer, "fingerprint", None)
    rows = [["path", f"<code>{esc(vault.root)}</code>"],
            ["format", esc(f"{cfg.get('format', '?')} v{cfg.get('version', '?')}")],
            ["chunk size", esc(nbytes(cfg.get("chunk_size")))],
            ["encryption", esc(f"{enc.get('cipher')}" if enc else "none (not encrypted)")],
            ["key fingerprint" if enc else "authentication key fingerprint",
             f"<code>{esc(fp or (enc or {}).get('key_fingerprint') or 'none')}</code>"]]
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
    return (msg + table(["", ""], rows, "vault") + actions + "<h2>Verify and gc history</h2>"
            + table(["job", "kind", "VM", "state", "started", "bytes", "error"], hist, "verify and gc jobs"))
