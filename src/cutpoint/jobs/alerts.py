"""Alerts on failed jobs: always a log line, and a JSON POST to a webhook URL when one is configured.

The POST happens on a short-lived thread with a timeout so a slow or dead receiver never delays the scheduler; its
failure is logged, never raised, because an alert that cannot be delivered must not turn into a failed backup.

A webhook URL is often itself a credential (Slack/Teams hooks carry it in the path, others in the query or the
userinfo), so it is never logged, echoed in an error or stored: only :func:`redact` (scheme and host) is. Userinfo
(``https://user:pass@host/...``) is sent as HTTP basic authentication, not as part of the host.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..errors import UsageError
from .store import Job

log = logging.getLogger(__name__)
TIMEOUT = 10.0


class Alerter:
    def __init__(self, webhook: str | None = None) -> None:
        if webhook:
            check_url(webhook)
        self.webhook = webhook
        self.threads: list[threading.Thread] = []

    def job_failed(self, job: Job, *, final: bool = True) -> None:
        """Report a failed job; ``final`` is False when a retry is already scheduled."""
        what = f"{job.kind} job {job.id}" + (f" of VM {job.vm}" if job.vm else "")
        log.error("%s %s (attempt %d): %s%s", what, job.state, job.attempt, job.error,
                  "" if final else "; will retry")
        self.send({"event": "job.failed", "final": final, "job": job.to_json()})

    def drill_failed(self, vm: str, point: str, reasons: list[str]) -> None:
        """A restore drill failed: the point may not be a way back (its verdict is kept in the catalog)."""
        log.error("restore drill of point %s of VM %s failed: %s", point, vm, "; ".join(reasons))
        self.send({"event": "drill.failed", "vm": vm, "point": point, "reasons": reasons})

    def send(self, payload: dict[str, Any]) -> None:
        if not self.webhook:
            return
        t = threading.Thread(target=self._post, args=(self.webhook, payload), name="cutpoint-webhook", daemon=True)
        self.threads = [x for x in self.threads if x.is_alive()] + [t]
        t.start()

    def flush(self, timeout: float = TIMEOUT) -> None:
        """Wait for pending webhook POSTs (at shutdown, so the last alert is not lost)."""
        for t in self.threads:
            t.join(timeout)

    @staticmethod
    def _post(url: str, payload: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "cutpoint"}
        try:
            target, auth = _split_userinfo(url)
            if auth is not None:
                headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
            req = urllib.request.Request(target, data=json.dumps(payload, default=str).encode(), method="POST",
                                         headers=headers)
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                resp.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("alert webhook %s failed: %s", redact(url), _reason(exc, url))


def check_url(url: str) -> None:
    """Refuse anything but an http(s) URL with a host, naming it redacted."""
    try:
        ok = url.startswith(("http://", "https://")) and bool(urllib.parse.urlsplit(url).hostname)
    except ValueError:
        ok = False
    if not ok:
        raise UsageError(f"webhook {redact(url)} is not an http:// or https:// URL with a host")


def redact(url: str) -> str:
    """``scheme://host[:port]/…``: what may be logged of a webhook URL (never its userinfo, path or query)."""
    try:
        p = urllib.parse.urlsplit(url)
        host = p.hostname or "?"
        port = f":{p.port}" if p.port is not None else ""
    except ValueError:
        return "(an unparsable URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{p.scheme or '?'}://{host}{port}/…"


def _split_userinfo(url: str) -> tuple[str, str | None]:
    """The URL without ``user:pass@``, and ``user:pass`` (unquoted) for basic authentication, if given."""
    p = urllib.parse.urlsplit(url)
    if "@" not in p.netloc:
        return url, None
    userinfo, _, hostport = p.netloc.rpartition("@")
    return urllib.parse.urlunsplit(p._replace(netloc=hostport)), urllib.parse.unquote(userinfo)


def _reason(exc: BaseException, url: str) -> str:
    """The failure, without any piece of the URL (an error message may quote it, e.g. a ValueError's)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    text = str(exc.reason) if isinstance(exc, urllib.error.URLError) else str(exc)
    try:
        p = urllib.parse.urlsplit(url)
        parts = [url, p.netloc, p.path, p.query, p.fragment, p.username or "", p.password or ""]
    except ValueError:
        parts = [url]
    for part in sorted((x for x in parts if len(x) > 1), key=len, reverse=True):
        text = text.replace(part, "…")
        text = text.replace(urllib.parse.unquote(part), "…")
    return f"{type(exc).__name__}: {text}"
