"""The one rule for names that become path components: VM names, policy names, point ids in the work directory.

A name is 1..64 characters of letters, digits, '.', '_' and '-', starting with a letter or digit. So it is never
empty, '.', '..', never holds a '/' or a NUL, never starts with '-' (an option to a tool) and fits in a unix socket
path. Every way a name comes in is checked with it (``vm add``, ``restore --new-vm/--instant``, policies, the
catalog when a row is used to build a path), so a hostile or mistyped name can never walk out of its directory.
"""

from __future__ import annotations

import re

from .errors import UsageError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RULE = "letters, digits, '.', '_' and '-', at most 64, starting with a letter or digit"


def is_valid(name: object) -> bool:
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def check_vm_name(name: object, *, what: str = "VM name") -> str:
    """``name`` if it is a valid VM name, else a UsageError naming it and the rule."""
    if not is_valid(name):
        raise UsageError(f"{what} {name!r} is not valid: use {RULE}")
    assert isinstance(name, str)
    return name
