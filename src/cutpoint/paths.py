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
    """Host state that must not travel with a vault (API tokens): ``$CUTPOINT_STATE`` or ``/var/lib/cutpoint``;
    kept root-owned and 0700 (``api/auth.py``)."""
    env = os.environ.get("CUTPOINT_STATE")
    return Path(env) if env else Path("/var/lib/cutpoint")
