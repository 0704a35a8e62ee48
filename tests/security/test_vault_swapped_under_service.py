"""The service opens its vault once and gives every worker thread a fresh ``Vault`` over it: a vault this host's
memory disagrees with (here: swapped) must refuse writes through those per-thread vaults too, not only through the
one the service opened (scheduled backups, prune and gc run on the per-thread ones)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cutpoint.service.vaults import VaultSource
from cutpoint.vault import hoststate
from cutpoint.vault.vault import Vault
from tests.vault.util import open_vault, vault_dir


def test_swapped_vault_refuses_writes_from_service_threads(tmp_path: Path) -> None:
    open_vault().close()                                  # this host has used the vault at this path
    shutil.rmtree(vault_dir())
    Vault.create(tmp_path / "other")
    shutil.move(str(tmp_path / "other"), vault_dir())     # another vault under the same path
    base = open_vault()
    assert base.finding is not None and base.finding.kind == "swapped"
    src = VaultSource(base)
    for v in (src.get(), src.fresh()):
        with pytest.raises(hoststate.VaultChangedError):
            v.require_trusted("scheduled backup of VM 'v'")
        v.close()
    base.close()
