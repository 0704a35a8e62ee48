"""A progress bar on stderr for long operations: one bar per disk with bytes, rate and time left (rich).

Silent with --json or when stderr is not a terminal, so scripts and logs never see control sequences. The call
signature stays ``(name, done, total)``, the callback backup and restore already take. The bars stay up until the
operation ends (``with``, or ``close``), and at exit at the latest (an error mid-run must not leave the cursor
hidden): a backup reads its disks at once, so one disk can finish before another's first report, and closing when
"every disk seen so far" was done would close the bar and open a second one mid-run.
"""

from __future__ import annotations

import atexit
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # rich costs ~0.15 s to import: only a bar on a terminal pays for it
    from rich.console import Console
    from rich.progress import Progress, TaskID


class ProgressLine:
    def __init__(self, enabled: bool, *, console: Console | None = None) -> None:
        self.enabled = enabled and (console is not None or sys.stderr.isatty())
        self.console = console
        self._bar: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self._bar is None:
                from rich.console import Console
                from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                           TransferSpeedColumn)
                self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                     DownloadColumn(binary_units=True), TransferSpeedColumn(),
                                     TimeRemainingColumn(), console=self.console or Console(stderr=True))
                self._bar.start()
                atexit.register(self.close)
            task = self._tasks.get(name)
            if task is None:
                task = self._tasks[name] = self._bar.add_task(name, total=max(total, 1))
            self._bar.update(task, completed=done, total=max(total, 1))

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._tasks.clear()
