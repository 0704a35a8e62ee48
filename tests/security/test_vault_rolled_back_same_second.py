"""Two points committed within one second: their ids share the time and differ by a random suffix, so the newer may
sort lower. Rolling the vault back to before the newer one must still be caught (it was missed whenever the newer
point's suffix sorted below the older's)."""

from __future__ import annotations

import os
from pathlib import Path

from cutpoint.vault import config as cfgmod
from cutpoint.vault import hoststate
from cutpoint.vault.vault import Vault


def test_rollback_of_a_same_second_point_is_found() -> None:
    root = Path(os.environ["CUTPOINT_VAULT"])
    v = Vault.open(root)
    seen = hoststate.Seen(v.config["id"], cfgmod.fingerprint(v.config), v.encrypted, {})
    v.close()
    older, newer = "20261204T211729Z-e9dd", "20261204T211729Z-a01a"     # committed in this order
    hoststate.committed(root, "v", older)
    hoststate.committed(root, "v", newer)
    finding = hoststate.check(root, seen, lambda vm: [older])              # the vault as it was before `newer`
    assert finding is not None and finding.kind == "rolled back" and newer in finding.message(root), finding
