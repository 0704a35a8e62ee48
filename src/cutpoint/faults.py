"""Test-only fault injection: ``CUTPOINT_FAULT`` makes the process kill (or stop) itself at a named stage.

The fault tests need a real ``cutpoint`` process to die at an exact point of its write order (half-way through a
chunk file, after the chunks but before the manifest, inside the catalog transaction, ...); a signal from outside
cannot hit such a window reliably. So the code calls ``hit("stage")`` at those points, and a test sets::

    CUTPOINT_FAULT=STAGE[@N][=kill|stop][,...]

``@N`` fires on the N-th hit of the stage (default the first), ``kill`` (default) sends the process SIGKILL, ``stop``
SIGSTOP (the test resumes it with SIGCONT, to hold a backup in flight). Unset, ``hit`` costs one dictionary lookup.
Never set it in production: it exists to prove the crash guarantees in docs/format.md.

Stages: ``chunk-write`` (a chunk file half written, not yet renamed), ``object-write`` (an object of a local format
v4 vault, a pack or an index object, written under its temporary name, not yet renamed), ``after-chunks`` (chunks
durable, no manifest), ``after-manifest`` (manifest durable, no catalog row), ``catalog-commit`` (inside the catalog
transaction, before COMMIT), ``prune-commit`` (inside prune's transaction), ``after-prune-commit`` (rows gone,
manifests not yet deleted), ``gc-sweep`` (after a chunk was deleted by gc), ``cleanup`` (a backup about to release
its cut), ``restore-progress`` (each progress step of a restore, its locks held: ``restore/orchestrator.py``); soft
delete (``vault/softdelete.py``): ``delete-recorded`` (deletion records durable, rows still there; then
``prune-commit`` and ``after-prune-commit`` as for prune, which shares the order), ``undelete-moved`` (manifest back
in ``points/``, no row yet), ``after-undelete-commit`` (row back, record not yet removed); copies
(``vault/copy.py``): ``pack-written`` (each pack written, also a backup's), ``copy-read`` (each ranged read of a
source pack, its locations already chosen), ``copy-manifest`` (every blob durable and indexed in the target, a
manifest about to be written).
"""

from __future__ import annotations

import os
import signal
import threading
import time

ENV = "CUTPOINT_FAULT"
_counts: dict[str, int] = {}
_lock = threading.Lock()


def hit(stage: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        target, _, action = item.strip().partition("=")
        name, _, nth = target.partition("@")
        if name != stage:
            continue
        with _lock:
            n = _counts[stage] = _counts.get(stage, 0) + 1
        if n != int(nth or 1):
            continue
        os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)
        if action == "stop":
            # The stop is process-wide and asynchronous: without a wait in the kernel this thread runs on for a
            # moment, past the stage (into a catalog write, whose lock the stopped process would then hold).
            time.sleep(0.2)
