"""What the attack tests share: a vault of format v2 made the way cutpoint made them before format v3; a backed-up
bare VM; and a manifest re-sealed with the vault's own sealer (for an unencrypted v2 vault anyone who can write it
can do that, the checksum is not a secret; for v3 it needs the vault's or this host's authentication key, so the
restore tests that use it test what a forged but validly sealed configuration can do)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cutpoint.vault.fsutil import write_atomic
from tests.helpers import blockdev_args, cutpoint, make_image
from tests.vault.util import open_vault

FIXTURES = Path(__file__).resolve().parent.parent / "vault" / "fixtures"


def make_v2_vault(root: Path, chunk_size: int = 4 << 20, *, forget: bool = True) -> None:
    """An empty unencrypted vault of format v2, exactly as ``Vault.create`` of v2 wrote it (config.json last), in
    place of the test's default vault (which this host then forgets, as if it had never been)."""
    shutil.rmtree(root, ignore_errors=True)
    if forget:
        shutil.rmtree(os.environ["CUTPOINT_STATE"], ignore_errors=True)
    root.mkdir(parents=True)
    for sub in ("chunks", "points", "locks"):
        (root / sub).mkdir()
    (root / "config.json").write_text(json.dumps({
        "format": "cutpoint-vault", "version": 2, "id": uuid.uuid4().hex, "chunk_size": chunk_size,
        "chunk_id": "sha256", "compression": "zstd", "encryption": None, "created": "2026-01-01T00:00:00+00:00"},
        indent=1))


def copy_fixture(name: str, to: Path) -> Path:
    """A copy of a committed v2 vault (tests/vault/fixtures, built with the code of v2), with its empty dirs."""
    shutil.copytree(FIXTURES / name, to)
    (to / "locks").mkdir(exist_ok=True)
    return to


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
