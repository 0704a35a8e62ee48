"""Alerts on failed jobs: always a log line, and a JSON POST to a webhook URL when one is configured.

The POST happens on a short-lived thread with a timeout so a slow or dead receiver never delays the scheduler; its
failure is logged, never raised, because an alert that cannot be delivered must not turn into a failed backup.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from typing import Any

from ..errors import UsageError
from .store import Job

log = logging.getLogger(__name__)
TIMEOUT = 10.0


class Alerter:
    def __init__(self, webhook: str | None = None) -> None:
        if webhook and not webhook.startswith(("http://", "https://")):
            raise UsageError(f"webhook {webhook!r} is not an http:// or https:// URL")
        self.webhook = webhook
        self.threads: list[threading.Thread] = []

    def job_failed(self, job: Job, *, final: bool = True) -> None:
        """Report a failed job; ``final`` is False when a retry is already scheduled."""
        what = f"{job.kind} job {job.id}" + (f" of VM {job.vm}" if job.vm else "")
        log.error("%s %s (attempt %d): %s%s", what, job.state, job.attempt, job.error,
                  "" if final else "; will retry")
        self.send({"event": "job.failed", "final": final, "job": job.to_json()})

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
        req = urllib.request.Request(url, data=json.dumps(payload, default=str).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "cutpoint"})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                resp.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("alert webhook %s failed: %s", url, exc)
