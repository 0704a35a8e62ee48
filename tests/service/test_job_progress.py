"""A job's progress comes from several threads at once (a backup reads its disks in parallel): the bytes it reports
never go backwards."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from cutpoint.jobs.store import JobStore
from cutpoint.service.runner import JobContext


class SlowFirstWrite(JobStore):
    """The fault seam: the first progress write is slow, so a later report from another disk can overtake it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.written: list[int] = []

    def progress(self, job_id: int, nbytes: int) -> None:
        first = not self.written
        self.written.append(nbytes)
        if first:
            time.sleep(0.5)
        super().progress(job_id, nbytes)


def test_a_slow_progress_write_is_not_overtaken_by_another_disks_report(tmp_path: Path) -> None:
    store = SlowFirstWrite(tmp_path / "jobs.db")
    job_id = store.start("backup", "v", "manual", datetime.now(timezone.utc))
    ctx = JobContext(job_id, cast(Any, None), store, threading.Event())
    early = threading.Thread(target=ctx.progress, args=("da", 10 << 20, 100 << 20))
    early.start()
    while not store.written:
        time.sleep(0.01)
    ctx.progress("db", 100 << 20, 100 << 20)     # db done while da's first report is still being written
    early.join()
    assert store.get(job_id).bytes == 110 << 20, store.written
