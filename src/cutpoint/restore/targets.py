"""Where a restore puts the point: the five targets the orchestrator dispatches to, and the restore root.

A target is a plain request; ``orchestrator.restore`` takes the locks, resolves the point and carries it out.
``within`` (images only) confines the target to a directory: the API's restore root, so that a token cannot have
images written into any directory the service can reach.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CutpointError, UsageError

DEFAULT_RESTORE_ROOT = Path("/var/lib/cutpoint/restore")
FORMATS = ("raw", "qcow2")               # image formats of Images and NewVm


def default_restore_root() -> Path:
    """Where API restores may write unless ``cutpoint serve --restore-root`` says otherwise:
    ``$CUTPOINT_RESTORE_ROOT`` (the tests set it) or ``/var/lib/cutpoint/restore``."""
    return Path(os.environ.get("CUTPOINT_RESTORE_ROOT") or DEFAULT_RESTORE_ROOT)


@dataclass(frozen=True)
class Images:
    """One image file per disk in ``to`` (``restore --to DIR``, the API's restore)."""

    to: Path
    format: str = "raw"
    within: Path | None = None


@dataclass(frozen=True)
class NewVm:
    """A second VM beside the original (``--new-vm NAME``), in ``to`` or ``$CUTPOINT_VMS/NAME``."""

    name: str
    to: Path | None = None
    format: str = "qcow2"
    start: bool = False


@dataclass(frozen=True)
class Replace:
    """Back onto the original VM's own disk files, which must not be in use (``--replace``)."""


@dataclass(frozen=True)
class Instant:
    """A new VM running at once from the point over NBD (``--instant NAME``)."""

    name: str
    to: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class Files:
    """A file or directory of a guest filesystem copied into ``to`` (``files get``)."""

    path: str
    to: Path
    disk: str | None = None
    part: int | None = None
    key_file: Path | None = None
    max_bytes: int | None = None                       # refuse a copy that would write more (``--max-bytes``)
    warn: Callable[[str], None] | None = None          # where skipped names and other warnings go


Target = Images | NewVm | Replace | Instant | Files


def confine(to: Path, root: Path) -> Path:
    """``to`` as a real path inside ``root``, or a ``UsageError`` naming the root.

    The path is resolved (``..`` and every symlink, including ones in parents that exist) before it is compared,
    so neither can reach outside. What does not exist yet is created later below the resolved path."""
    if not to.is_absolute():
        raise UsageError(f"restore target {str(to)!r} must be an absolute directory on the server, under the "
                         f"restore root {root}")
    try:
        real_root = Path(os.path.realpath(root))
        real = Path(os.path.realpath(to))
    except (ValueError, OSError) as exc:           # a NUL byte, a symlink loop
        raise UsageError(f"restore target {str(to)!r} is not a usable path ({exc}); choose a directory under the "
                         f"restore root {root}") from exc
    missing = real
    while not missing.exists() and missing != missing.parent:     # what restore will create must not exist at all
        if os.path.lexists(missing):                              # a symlink that resolves nowhere (a loop)
            raise UsageError(f"restore target {to}: {missing} is a symlink that does not resolve; choose a "
                             f"directory under the restore root {root}")
        missing = missing.parent
    if real != real_root and real_root not in real.parents:
        via = "" if real == Path(os.path.normpath(to)) else f" (it resolves to {real})"
        raise UsageError(f"restore target {to} is outside the restore root {root}{via}; restore under {root} "
                         "(set with 'cutpoint serve --restore-root DIR')")
    if real.exists() and not real.is_dir():
        raise UsageError(f"restore target {to} exists and is not a directory")
    return real


def make_root(root: Path) -> Path:
    """Create the restore root (mode 0700: only the service's user enters it) if missing; return it absolute."""
    root = root.expanduser().absolute()
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CutpointError(f"cannot create the restore root {root}: {exc.strerror or exc}; choose another "
                            "--restore-root") from exc
    if not root.is_dir():
        raise UsageError(f"the restore root {root} is not a directory; choose another --restore-root")
    return root
