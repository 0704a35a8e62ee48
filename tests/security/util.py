"""What the restore attack tests share: a backed-up bare VM, and a manifest re-sealed exactly as an attacker who can
write an unencrypted vault would do it (the checksum is not a secret)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cutpoint.vault.fsutil import write_atomic
from tests.helpers import blockdev_args, cutpoint, make_image
from tests.vault.util import open_vault


def backed_up_vm(bare_qemu, tmp_path: Path, extra: list[str] | None = None) -> tuple[Any, str]:
    """A paused VM ``v`` with one qcow2 disk, registered and backed up once; (vm, point)."""
    a = make_image(tmp_path / "a.qcow2", "16M", writes=["write -P 0xab 0 1M"])
    vm = bare_qemu(blockdev_args(a, "da") + (extra or []))
    cutpoint("vm", "add", "v", "--qmp", str(vm.qmp), check=True)
    point = json.loads(cutpoint("backup", "v", "--json", check=True).out)["point"]
    return vm, point


def forge_vm_config(point: str, mutate: Callable[[dict[str, Any]], None], vm: str = "v") -> None:
    """Rewrite the saved VM configuration of ``point`` and re-seal its manifest with the vault's own sealer."""
    v = open_vault()
    try:
        rec = v.catalog.point(vm, point)
        m = v.manifest(rec)
        assert m.vm_config is not None
        mutate(m.vm_config)
        write_atomic(v.root / rec.manifest, m.seal(v.sealer))
        assert v.manifest(rec).vm_config == m.vm_config          # it opens as a genuine manifest would
    finally:
        v.close()
