"""The ``cutpoint`` command: one argparse tree, one file per command group, one error handler.

Every ``CutpointError`` becomes one line on stderr naming the problem and the exit code of its class. An ``OSError``
or SQLite error that escaped (a directory not writable, a disk full, a database locked) is the environment's, not a
bug: one line too, naming the file. Anything else is a bug and keeps its traceback. SIGTERM is turned into an
interruption, so a terminated backup still runs its cleanup (thaw, overlays, exports, bitmaps) before exiting.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys

from .. import __version__, signals
from ..errors import CutpointError
from . import backup, demo, gc, lab, points, prune, restore, vault, verify, vm
from . import jobs, policy, serve
from . import files, instant, mount
from . import report
from .common import resolve_vault
from . import drill
from . import delete
from . import approvals
from . import copy


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cutpoint", description="Agentless, multi-disk, crash-consistent backup "
                                "of running QEMU/KVM VMs.")
    p.add_argument("--version", action="version", version=f"cutpoint {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in (vm, backup, points, restore, vault, verify, prune, gc, lab, demo, policy, jobs, serve,
                  files, mount, instant, report, drill, delete, approvals, copy):
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signals.install()                  # SIGTERM interrupts like Ctrl-C; 'serve' installs its own for a graceful stop
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="cutpoint: %(levelname)s: %(message)s")
    try:
        resolve_vault(args)
        return int(args.func(args) or 0)
    except CutpointError as exc:
        print("cutpoint: error: " + " ".join(str(exc).split()), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        term = isinstance(exc, signals.Terminated)
        print("cutpoint: terminated" if term else "cutpoint: interrupted", file=sys.stderr)
        return 143 if term else 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"cutpoint: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 5
    except sqlite3.Error as exc:
        print(f"cutpoint: error: catalog database: {exc}", file=sys.stderr)
        return 5


if __name__ == "__main__":
    sys.exit(main())
