"""Where cutpoint keeps its state by default, overridable by environment for tests and multi-user hosts."""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cutpoint"


def default_vault() -> Path:
    """The embedded default vault: ``$CUTPOINT_VAULT`` or ``~/.local/share/cutpoint/vault``."""
    env = os.environ.get("CUTPOINT_VAULT")
    return Path(env) if env else data_home() / "vault"


def lab_home() -> Path:
    """Lab VMs live here: ``$CUTPOINT_LAB`` or ``~/.local/share/cutpoint/lab``."""
    env = os.environ.get("CUTPOINT_LAB")
    return Path(env) if env else data_home() / "lab"


def cache_home() -> Path:
    """Built guest images are cached here: ``$CUTPOINT_CACHE`` or ``~/.cache/cutpoint``."""
    env = os.environ.get("CUTPOINT_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cutpoint"


def work_home() -> Path:
    """Scratch space for fleecing overlays: ``$CUTPOINT_WORK`` or ``/var/lib/cutpoint/work``. Never in a
    world-writable tree by default; ``workdir.py`` checks and creates it (private, ours)."""
    env = os.environ.get("CUTPOINT_WORK")
    return Path(env) if env else Path("/var/lib/cutpoint/work")


def vms_home() -> Path:
    """VMs restored with ``restore --new-vm/--instant`` live here by default: ``$CUTPOINT_VMS`` or
    ``~/.local/share/cutpoint/vms``."""
    env = os.environ.get("CUTPOINT_VMS")
    return Path(env) if env else data_home() / "vms"


def state_home() -> Path:
    """What this host keeps outside every vault (docs/format.md §8: known vaults, authentication keys; API tokens):
    ``$CUTPOINT_STATE``, else ``/var/lib/cutpoint`` for root, else ``$XDG_STATE_HOME/cutpoint``; root-owned and
    0700. Outside the vault, so that whoever can write a vault cannot rewrite what the host remembers about it, and a
    copy of a vault carries no credential."""
    env = os.environ.get("CUTPOINT_STATE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/cutpoint")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cutpoint"
