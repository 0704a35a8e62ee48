"""Console sessions: the login form trades a token for a random session id in an HttpOnly, SameSite=Strict cookie.

The session remembers only the role and a per-session CSRF token, which every console form posts back; a POST whose
CSRF token is missing or wrong is refused (403) even with a valid cookie, so a forged cross-site form cannot act as
the user. Sessions live in memory: a restart logs everyone out, and tokens are never stored in the browser.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import Request

from .. import auth
from .html import Viewer

COOKIE = "cutpoint_session"
TTL = 12 * 3600.0
MAX_FORM = 64 * 1024


@dataclass
class Session:
    role: str
    csrf: str
    expires: float


class Sessions:
    def __init__(self, accepted: dict[str, str], ttl: float = TTL) -> None:
        self.accepted = accepted
        self.ttl = ttl
        self._lock = threading.Lock()
        self._by_id: dict[str, Session] = {}

    def login(self, token: str) -> tuple[str, Session] | None:
        role = auth.role_of(f"Bearer {token.strip()}", self.accepted) if token.strip() else None
        if role is None:
            return None
        sid = secrets.token_urlsafe(32)
        s = Session(role, secrets.token_urlsafe(24), time.monotonic() + self.ttl)
        with self._lock:
            now = time.monotonic()
            for k in [k for k, v in self._by_id.items() if v.expires < now]:
                del self._by_id[k]
            self._by_id[sid] = s
        return sid, s

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            s = self._by_id.get(sid)
            if s is not None and s.expires < time.monotonic():
                del self._by_id[sid]
                return None
            return s

    def logout(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)

    def viewer(self, request: Request) -> Viewer | None:
        """A bearer header (scripts: read pages, no forms) or the session cookie (browsers), else None."""
        header = request.headers.get("authorization")
        if header:
            role = auth.role_of(header, self.accepted)
            return Viewer(role, None) if role else None
        s = self.get(request.cookies.get(COOKIE))
        return Viewer(s.role, s.csrf) if s else None


class FormError(Exception):
    """The posted form is unusable as a whole (too large, not a form)."""


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body as a flat dict (last value wins); bounded, so a huge post cannot exhaust memory."""
    raw = b""
    async for part in request.stream():
        raw += part
        if len(raw) > MAX_FORM:
            raise FormError("form too large")
    try:
        parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError("not a form") from exc
    return {k: v[-1] for k, v in parsed.items()}


def csrf_ok(viewer: Viewer | None, form: dict[str, str]) -> bool:
    """True only for a browser session whose form carries its own CSRF token (compared in constant time)."""
    if viewer is None or viewer.csrf is None:
        return False
    return secrets.compare_digest(form.get("csrf", "").encode(), viewer.csrf.encode())
