"""Helpers of the attack tests: a vault of format v2 made the way cutpoint made them before format v3."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

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
