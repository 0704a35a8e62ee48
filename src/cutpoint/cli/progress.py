"""A plain progress line on stderr for long operations (silent with --json or when stderr is not a terminal)."""

from __future__ import annotations

import sys
import time

from ..units import human


class ProgressLine:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, name: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.2 and done < total):
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-6)
        sys.stderr.write(f"\r{name}: {100 * done / max(total, 1):5.1f}%  {human(done)} of {human(total)}  "
                         f"{human(rate)}/s   ")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
