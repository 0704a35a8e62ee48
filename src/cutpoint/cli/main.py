"""The ``cutpoint`` command: one argparse tree, one file per command group, one error handler.

Every ``CutpointError`` becomes one line on stderr naming the problem and the exit code of its class. An ``OSError``
or SQLite error that escaped (a directory not writable, a disk full, a database locked) is the environment's, not a
bug: one line too, naming the file. Anything else is a bug and keeps its traceback. SIGTERM is turned into an
interruption, so a terminated backup still runs its cleanup (thaw, overlays, exports, bitmaps) before exiting.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sqlite3
import sys
from typing import Any

from .. import __version__, signals
from ..errors import CutpointError
from .common import resolve_vault

# The command groups, one module each. Only the group of the command given is imported (all of them for the whole
# parser: help, usage errors): importing every group cost 20 ms per command, the demo, service and drill machinery
# included, which a backup never runs (tests/cli/test_lazy_imports.py).
GROUPS = ("vm", "backup", "points", "restore", "vault", "verify", "prune", "gc", "lab", "demo", "policy", "jobs",
          "serve", "files", "mount", "instant", "report", "drill", "delete", "approvals", "copy")
# The group that registers each command. Building every command's parser costs ~13 ms (argparse looks up a
# translation and the terminal width for each of ~430 arguments), so main builds only the one it was given;
# tests/cli/test_lazy_imports.py checks that this names every command.
COMMANDS = {**{g: g for g in GROUPS}, "umount": "mount", "undelete": "delete", "approve": "approvals",
            "deny": "approvals"}


def _group(name: str) -> Any:
    return importlib.import_module(f"{__package__}.{name}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser. With ``command`` (a key of COMMANDS) only its group's commands are registered: that
    parses the command and prints its help and errors exactly as the whole parser does."""
    p = argparse.ArgumentParser(prog="cutpoint", description="Agentless, multi-disk, crash-consistent backup "
                                "of running QEMU/KVM VMs.")
    p.add_argument("--version", action="version", version=f"cutpoint {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in (COMMANDS[command],) if command in COMMANDS else GROUPS:
        _group(group).register(sub)
    return p


def command_of(argv: list[str]) -> str | None:
    """The command word, when nothing but ``-v`` comes before it; else None, and main builds the whole parser
    (``-h`` or ``--`` there, or no command: its help and errors list every command)."""
    for a in argv:
        if a not in ("-v", "--verbose"):
            return None if a.startswith("-") else a
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(command_of(argv)).parse_args(argv)
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
