"""The usage report (``cutpoint report``, the API's ``/report/usage``) keeps its document exactly: other tools read
it. The vault is built in-process from real chunks, manifests and catalog rows (no QEMU), with every case a row can
be in: own consistency setting, a policy's, the default, a removed VM whose points remain, a point whose manifest is
damaged, a chunk shared by two VMs, and a VM without points.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from cutpoint.catalog.db import VmRecord
from cutpoint.policy.model import Policy
from cutpoint.policy.store import PolicyStore, assign
from cutpoint.vault.vault import Vault
from tests.helpers import commit_synthetic_point, cutpoint

CS = 1 << 16


def shape(doc: Any) -> Any:
    """A JSON document's full key structure: keys in order at every level, and the type of every leaf."""
    if isinstance(doc, dict):
        return [(k, shape(v)) for k, v in doc.items()]
    if isinstance(doc, list):
        return [shape(v) for v in doc]
    return type(doc).__name__


def _point(vault: Vault, vm: str, n: int, blocks: list[bytes | None], consistency: str = "crash") -> str:
    assert vault.chunk_size == CS
    return commit_synthetic_point(vault, f"2024-06-0{n}T00-00-00-{vm}", vm, f"2024-06-0{n}T00:00:00.000Z",
                                  {"vda": blocks}, consistency=consistency).id


def build_vault() -> tuple[Vault, dict[str, int]]:
    """Returns the vault and the stored size of each chunk by a short label."""
    vault = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    shared, own_a, own_b, own_gone = (bytes([i]) * CS for i in (1, 2, 3, 4))
    for name, settings in (("app-vm", {"consistency": "app"}), ("pol-vm", {"consistency": "crash"}),
                           ("plain", {}), ("gone", {}), ("idle", {})):
        vault.catalog.add_vm(VmRecord(name, "qmp", f"/nonexistent/{name}.sock", "2024-06-01T00:00:00+00:00",
                                      settings))
    store = PolicyStore(vault.catalog.path)
    store.put(Policy.from_dict({"name": "nightly", "schedule": {"frequency": "daily", "time": "02:00"},
                                "consistency": "app"}))
    assign(vault.catalog, store, "pol-vm", "nightly")
    store.close()
    _point(vault, "app-vm", 1, [shared, own_a, None], consistency="app")
    _point(vault, "app-vm", 2, [shared, own_a, own_a])
    _point(vault, "pol-vm", 1, [shared, own_b])
    broken = _point(vault, "plain", 1, [own_b])
    _point(vault, "gone", 1, [own_gone])
    vault.catalog.remove_vm("gone")
    manifest = vault.root / vault.catalog.point("plain", broken).manifest
    manifest.write_bytes(manifest.read_bytes()[:-3])          # truncated: the report names it, the rest goes on
    sizes = {k: _stored(vault, vault.chunks.chunk_id(b))
             for k, b in (("shared", shared), ("a", own_a), ("b", own_b), ("gone", own_gone))}
    return vault, sizes


def _stored(vault: Vault, cid: str) -> int:
    """The bytes a chunk takes in the vault, from the storage itself: its file (v3), its blob in a pack (v4)."""
    if not vault.packed:
        return (vault.root / "chunks" / cid[:2] / cid).stat().st_size
    loc = vault.chunks.location(cid)                              # type: ignore[union-attr]
    assert loc is not None, cid
    return loc.length


def expected(sizes: dict[str, int], problem: str) -> dict[str, Any]:
    s = sizes
    return {"vms": [
        {"vm": "app-vm", "protected": True, "consistency": "app", "weight": 1.0, "points": 2,
         "last_point_consistency": "crash", "logical_bytes": 6 * CS, "stored_bytes": s["shared"] + s["a"],
         "unique_bytes": s["a"]},
        {"vm": "gone", "protected": False, "consistency": "crash", "weight": 0.0, "points": 1,
         "last_point_consistency": "crash", "logical_bytes": CS, "stored_bytes": s["gone"],
         "unique_bytes": s["gone"]},
        {"vm": "idle", "protected": True, "consistency": "crash", "weight": 0.5, "points": 0,
         "last_point_consistency": None, "logical_bytes": 0, "stored_bytes": 0, "unique_bytes": 0},
        {"vm": "plain", "protected": True, "consistency": "crash", "weight": 0.5, "points": 1,
         "last_point_consistency": None, "logical_bytes": 0, "stored_bytes": 0, "unique_bytes": 0},
        {"vm": "pol-vm", "protected": True, "consistency": "app", "weight": 1.0, "points": 1,
         "last_point_consistency": "crash", "logical_bytes": 2 * CS, "stored_bytes": s["shared"] + s["b"],
         "unique_bytes": s["b"]},
    ], "total_weight": 3.0, "vault_stored_bytes": s["shared"] + s["a"] + s["b"] + s["gone"], "problems": [problem]}


SHAPE = [
    ("vms", [[("vm", "str"), ("protected", "bool"), ("consistency", "str"), ("weight", "float"), ("points", "int"),
              ("last_point_consistency", t), ("logical_bytes", "int"), ("stored_bytes", "int"),
              ("unique_bytes", "int")] for t in ("str", "str", "NoneType", "NoneType", "str")]),
    ("total_weight", "float"), ("vault_stored_bytes", "int"), ("problems", ["str"]),
]


@pytest.mark.parametrize("fmt", [3, 4], ids=["v3", "v4"])
def test_cli_report_document_is_unchanged(fmt: int) -> None:
    if fmt == 3:                                 # the report reads both formats' chunk stores
        root = Path(os.environ["CUTPOINT_VAULT"])
        shutil.rmtree(root)
        shutil.rmtree(os.environ["CUTPOINT_STATE"], ignore_errors=True)
        Vault.create(root, chunk_size=CS, version=3)
    vault, sizes = build_vault()
    assert vault.packed == (fmt == 4)
    vault.close()
    out = cutpoint("report", "--json", check=True).out
    doc = json.loads(out)
    assert shape(doc) == SHAPE
    problem = doc["problems"][0]
    assert problem.startswith("point 2024-06-01T00-00-00-plain of VM plain: manifest of point ") and \
        "damaged" in problem, problem
    assert doc == expected(sizes, problem)
    assert out == json.dumps(doc, indent=1) + "\n"          # the layout too: one-space indent, key order as above
    text = cutpoint("report", check=True).out.splitlines()
    assert text[0].split() == ["vm", "consistency", "weight", "points", "last", "point", "logical", "stored",
                               "unique"]
    assert text[3].split()[:6] == ["gone", "(removed)", "crash", "0.0", "1", "crash"]
    assert text[4].split()[:5] == ["idle", "crash", "0.5", "0", "-"]
    assert text[-2].startswith("protected instances: 3.0 (crash-consistent 0.5, app-consistent 1.0); vault chunks: ")
    assert text[-1] == f"warning: {problem}"
