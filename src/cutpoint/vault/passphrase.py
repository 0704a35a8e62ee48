"""Where the passphrase of an encrypted vault comes from, in order:

1. ``--passphrase-file FILE`` (the command line),
2. ``$CUTPOINT_PASSPHRASE_FILE`` (a file: systemd credentials, a secrets mount; the way for scheduled backups),
3. ``$CUTPOINT_PASSPHRASE`` (the passphrase itself; visible to the same user in /proc, so prefer a file),
4. a prompt on the terminal (never echoed), when stdin is a terminal.

Otherwise the command stops with one line saying how to give it. A file's content is the passphrase with at most one
trailing newline removed, so ``echo secret > FILE`` works. The source is only consulted when a vault turns out to be
encrypted: an unencrypted vault never asks.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import UsageError

Source = Callable[[str, bool], bytes]       # (what needs it, ask twice) -> passphrase


def from_file(path: Path) -> bytes:
    try:
        data = path.expanduser().read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read passphrase file {path}: {exc.strerror or exc}") from exc
    data = data[:-1] if data.endswith(b"\n") else data
    data = data[:-1] if data.endswith(b"\r") else data
    if not data:
        raise UsageError(f"passphrase file {path} is empty")
    return data


def source(file: Path | None = None) -> Source:
    """A passphrase source honouring the order above; ``file`` is ``--passphrase-file``."""

    def get(what: str, confirm: bool) -> bytes:
        if file is not None:
            return from_file(file)
        env_file = os.environ.get("CUTPOINT_PASSPHRASE_FILE")
        if env_file:
            return from_file(Path(env_file))
        env = os.environ.get("CUTPOINT_PASSPHRASE")
        if env:
            return env.encode()
        if sys.stdin.isatty():
            return _prompt(what, confirm)
        raise UsageError(f"{what} needs a passphrase: pass --passphrase-file FILE or set CUTPOINT_PASSPHRASE_FILE "
                         "(or CUTPOINT_PASSPHRASE)")

    return get


def _prompt(what: str, confirm: bool) -> bytes:
    try:
        first = getpass.getpass(f"passphrase for {what}: ")
        if not first:
            raise UsageError("empty passphrase")
        if confirm and getpass.getpass("repeat the passphrase: ") != first:
            raise UsageError("the two passphrases differ; nothing was written")
    except EOFError:
        raise UsageError(f"{what} needs a passphrase and none was typed") from None
    return first.encode()
