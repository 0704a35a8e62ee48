"""One unlocked vault, one ``Vault`` object per thread.

An encrypted vault is unlocked once (scrypt is deliberately slow) when the service starts; every thread then gets its
own ``Vault`` over the same root, config and sealer, because a ``Vault`` holds a SQLite connection that must not be
shared between threads. Each carries the base's finding of this host's memory (swapped, rolled back), so that
scheduled writes are refused just as the CLI's are.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..vault.vault import Vault


class VaultSource:
    def __init__(self, base: Vault) -> None:
        self.base = base
        self.root: Path = base.root
        self._local = threading.local()

    def get(self) -> Vault:
        """This thread's vault (created on first use, kept for the thread's life)."""
        v = getattr(self._local, "vault", None)
        if v is None:
            v = self.fresh()
            self._local.vault = v
        return v

    def fresh(self) -> Vault:
        """A new vault object the caller closes (for short-lived worker threads)."""
        v = Vault(self.base.root, self.base.config, self.base.sealer)
        v.finding = self.base.finding        # what this host's memory found at open: writes stay refused here too
        return v

    @property
    def catalog_path(self) -> Path:
        return self.base.catalog.path
