"""A real nbdkit serving export 'd' on a unix socket for the reader's tests, and an ExportReader of it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cutpoint.reader.export import ExportReader
from tests.helpers import listening


@contextmanager
def served(sock: Path, *plugin: str) -> Iterator[ExportReader]:
    """``nbdkit PLUGIN ARGS...`` on ``sock``; yields a reader of it; both stopped afterwards, the server first."""
    proc = subprocess.Popen(["nbdkit", "--foreground", "--exit-with-parent", "-U", str(sock), "-e", "d", *plugin],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not listening(sock):
            assert proc.poll() is None and time.monotonic() < deadline, "nbdkit did not start"
            time.sleep(0.05)
        r = ExportReader(sock, "d")
        try:
            yield r
        finally:
            proc.kill()             # first: a reader stuck waiting for a reply then wakes to a closed connection
            proc.wait()
            r.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
