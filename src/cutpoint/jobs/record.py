"""Record a CLI operation as a job, so ``cutpoint jobs`` and the API see hand-run work next to the service's.

    with recorded(vault, "backup", vm) as job:
        res = backup(...)
        job.done(nbytes=res.read_bytes, point=res.point)

Success, failure (the error's message) and Ctrl-C (``interrupted``) are recorded; the exception still propagates.
A process killed outright leaves its job ``running`` until the next reader reaps it (its pid is gone).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import CutpointError
from ..vault.vault import Vault
from .store import JobStore

log = logging.getLogger(__name__)


@dataclass
class JobHandle:
    store: JobStore
    id: int
    nbytes: int = 0
    point: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def done(self, *, nbytes: int = 0, point: str | None = None, detail: dict[str, Any] | None = None) -> None:
        self.nbytes, self.point, self.detail = nbytes, point, detail or {}


def now() -> datetime:
    return datetime.now(timezone.utc)


@contextmanager
def recorded(vault: Vault, kind: str, vm: str | None, *, trigger: str = "manual",
             detail: dict[str, Any] | None = None) -> Iterator[JobHandle]:
    store = JobStore(vault.catalog.path)
    job = JobHandle(store, store.start(kind, vm, trigger, now(), detail=detail))
    try:
        yield job
    except KeyboardInterrupt:
        _settle(store, job.id, "interrupted", error="interrupted (Ctrl-C or SIGTERM)")
        raise
    except CutpointError as exc:
        _settle(store, job.id, "failed", error=" ".join(str(exc).split()))
        raise
    except BaseException as exc:
        _settle(store, job.id, "failed", error=f"internal error: {type(exc).__name__}: {exc}")
        raise
    else:
        _settle(store, job.id, "succeeded", nbytes=job.nbytes, point=job.point, detail=job.detail)
    finally:
        store.close()


def _settle(store: JobStore, job_id: int, state: str, **kw: Any) -> None:
    """Record the outcome; a record that cannot be written (the disk that just filled up) is logged, never allowed
    to replace the operation's own error or to fail an operation that succeeded."""
    try:
        store.finish(job_id, state, now(), **kw)
    except (CutpointError, OSError) as exc:
        log.warning("could not record job %d as %s: %s", job_id, state, exc)
