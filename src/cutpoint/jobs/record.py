"""Record a CLI operation as a job, so ``cutpoint jobs`` and the API see hand-run work next to the service's.

    with recorded(vault, "backup", vm) as job:
        res = backup(...)
        job.done(nbytes=..., point=res["point"])

Success, failure (the error's message) and Ctrl-C (``interrupted``) are recorded; the exception still propagates.
A process killed outright leaves its job ``running`` until the next reader reaps it (its pid is gone).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import CutpointError
from ..vault.vault import Vault
from .store import JobStore


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
        store.finish(job.id, "interrupted", now(), error="interrupted (Ctrl-C or SIGTERM)")
        raise
    except CutpointError as exc:
        store.finish(job.id, "failed", now(), error=" ".join(str(exc).split()))
        raise
    except BaseException as exc:
        store.finish(job.id, "failed", now(), error=f"internal error: {type(exc).__name__}: {exc}")
        raise
    else:
        store.finish(job.id, "succeeded", now(), nbytes=job.nbytes, point=job.point, detail=job.detail)
    finally:
        store.close()
