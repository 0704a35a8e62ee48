"""SIGTERM as an interruption that cleanup cannot be cut short by.

The CLI turns SIGTERM into ``Terminated`` (a ``KeyboardInterrupt``) in the main thread, so every ``finally`` runs:
a terminated backup thaws the guest and removes its overlays, exports and jobs. A signal that arrives *during* such
cleanup must not abort it half-way (a guest left frozen, a bitmap not merged back), so cleanup runs inside
``critical()``: a SIGTERM there is held and raised once the section is done.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)
_held = 0
_pending = False


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that every ``finally`` (cleanup, thaw) runs."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _held:
        _pending = True
        return
    raise Terminated()


def install() -> None:
    if threading.current_thread() is threading.main_thread():     # signal.signal works there only
        signal.signal(signal.SIGTERM, _on_sigterm)


@contextmanager
def critical(*, deliver: bool = True) -> Iterator[None]:
    """Hold SIGTERM for the duration (main thread only; elsewhere signals never arrive anyway). A SIGTERM held here
    is raised at the end, unless ``deliver`` is false: the work it would interrupt is already done (a backup whose
    point is committed), so it is only logged."""
    global _held, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending:
            _pending = False
            if deliver:
                raise Terminated()
            log.warning("SIGTERM came after the work was done and committed; finishing normally")
