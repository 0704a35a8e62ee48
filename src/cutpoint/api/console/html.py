"""HTML building blocks of the console: escaping, the page frame, forms and numbers.

Every value that reaches a page goes through ``esc`` (guest file names, VM metadata and job errors are hostile);
the frame is plain HTML with one small stylesheet and no script, so every page reads without JavaScript and nothing
is fetched from a CDN.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from ...units import human

CSS = """
:root{--fg:#111;--bg:#fff;--mut:#444;--ok:#0a5d1f;--bad:#a1110f;--warn:#7a4a00;--line:#bbb;--acc:#0b4f9c}
body{font:15px/1.45 system-ui,sans-serif;color:var(--fg);background:var(--bg);margin:0}
header{background:#1d2733;color:#fff;padding:.4rem 1rem;display:flex;gap:1rem;align-items:center;flex-wrap:wrap}
header a{color:#fff}header strong{margin-right:1rem}
main{padding:1rem;max-width:78rem}
a{color:var(--acc)}a:focus,button:focus,input:focus,select:focus{outline:3px solid #f5a623;outline-offset:1px}
table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid var(--line);padding:.25rem .5rem;
text-align:left;vertical-align:top}th{background:#eef1f5}
.ok{color:var(--ok);font-weight:600}.bad{color:var(--bad);font-weight:600}.warn{color:var(--warn);font-weight:600}
.badge{display:inline-block;border:1px solid currentColor;border-radius:.6rem;padding:0 .4rem;font-size:.85em}
.err{color:var(--bad);font-weight:600;margin-left:.5rem}.note{color:var(--mut)}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid var(--line);padding:.5rem 1rem;min-width:10rem}
.card b{font-size:1.6em;display:block}
form.inline{display:inline}label{margin-right:.3rem}fieldset{margin:.5rem 0}
button{padding:.3rem .8rem;font:inherit;cursor:pointer}
.field{margin:.3rem 0}.field label{display:inline-block;min-width:11rem}input[type=text],input[type=password]{min-width:24rem}
"""


def esc(value: object) -> str:
    """Text for HTML content or a quoted attribute; ``None`` shows as an empty string."""
    return "" if value is None else html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Viewer:
    """Who looks at a page: their role and, for a browser session, the CSRF token its forms carry."""
    role: str
    csrf: str | None

    @property
    def operator(self) -> bool:
        return self.role == "operator" and self.csrf is not None


NAV = (("/", "Dashboard"), ("/ui/policies", "Policies"), ("/ui/jobs", "Jobs"), ("/ui/alerts", "Alerts"),
       ("/ui/vault", "Vault"))


def page(title: str, body: str, viewer: Viewer | None, *, refresh: int | None = None) -> str:
    nav = ""
    if viewer is not None:
        links = " ".join(f'<a href="{esc(h)}">{esc(t)}</a>' for h, t in NAV)
        out = (form("/logout", viewer, '<button type="submit">Log out</button>', force=True)
               if viewer.csrf else "")
        nav = f'<nav aria-label="main">{links}</nav><span class="note" style="color:#ddd">{esc(viewer.role)}</span>{out}'
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">{meta}'
            f"<title>{esc(title)} · cutpoint</title><style>{CSS}</style></head><body>"
            f"<header><strong>cutpoint</strong>{nav}</header><main><h1>{esc(title)}</h1>{body}</main></body></html>")


def form(action: str, viewer: Viewer, inner: str, *, force: bool = False, cls: str = "inline") -> str:
    """A POST form carrying the session's CSRF token; empty for a viewer that may not change anything."""
    if not (viewer.operator or (force and viewer.csrf)):
        return ""
    return (f'<form class="{esc(cls)}" method="post" action="{esc(action)}">'
            f'<input type="hidden" name="csrf" value="{esc(viewer.csrf)}">{inner}</form>')


def table(headers: list[str], rows: list[list[str]], caption: str = "") -> str:
    """``rows`` hold HTML already escaped by the caller (cells may contain links and badges)."""
    if not rows:
        return f'<p class="note">{esc(caption or "nothing")}: none.</p>'
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    if not any(headers):                        # a key/value table: the first cell of each row is its header
        body = "".join(f'<tr><th scope="row">{r[0]}</th>' + "".join(f"<td>{c}</td>" for c in r[1:]) + "</tr>"
                       for r in rows)
        return f"<table>{cap}<tbody>{body}</tbody></table>"
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def field(name: str, label: str, value: object, errors: dict[str, str], *, kind: str = "text",
          options: tuple[str, ...] = (), hint: str = "", labels: dict[str, str] | None = None) -> str:
    """A labelled input with its error (if any) beside it, tied by aria-describedby."""
    fid = "f-" + name.replace(".", "-")
    err = errors.get(name)
    described = f' aria-invalid="true" aria-describedby="{fid}-err"' if err else ""
    if options:
        opts = "".join(f'<option value="{esc(o)}"{" selected" if str(value or "") == o else ""}>{esc((labels or {}).get(o) or o or "(none)")}'
                       "</option>" for o in options)
        ctl = f'<select id="{fid}" name="{esc(name)}"{described}>{opts}</select>'
    else:
        ctl = f'<input id="{fid}" name="{esc(name)}" type="{esc(kind)}" value="{esc(value)}"{described}>'
    msg = f'<span class="err" id="{fid}-err" role="alert">{esc(err)}</span>' if err else ""
    tip = f' <span class="note">{esc(hint)}</span>' if hint and not err else ""
    return f'<div class="field"><label for="{fid}">{esc(label)}</label>{ctl}{msg}{tip}</div>'


def state_badge(state: str) -> str:
    cls = {"succeeded": "ok", "failed": "bad", "interrupted": "warn", "running": "warn"}.get(state, "note")
    return f'<span class="badge {cls}">{esc(state)}</span>'


def nbytes(n: float | int | None) -> str:
    return "" if n is None else human(float(n))
