"""``cutpoint report``: per protected VM, the billing weight of its consistency type and the vault bytes it uses.

A protected instance counts 0.5 when its backups are crash-consistent and 1.0 when they are application-consistent
(the weight follows the configured type, the one scheduled backups ask for: the VM's policy's, else the VM's own,
else crash; that is what the user asks to be protected as). Bytes:

* ``logical``: the sum of the disk sizes of all its points (what restoring every point would write);
* ``stored``: the on-disk size of the distinct chunks its points reference (compressed, as stored);
* ``unique``: the part of ``stored`` no other VM references, i.e. what removing the VM and its points would free.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

from ..errors import CutpointError
from ..policy.store import PolicyStore
from ..units import human
from ..vault.vault import Vault
from .common import add_vault_arg, open_vault, print_json, table

WEIGHTS = {"crash": 0.5, "app": 1.0}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="per VM: protected-instance weight (consistency type) and vault bytes")
    p.add_argument("--json", action="store_true")
    add_vault_arg(p)
    p.set_defaults(func=cmd_report)


def report(vault: Vault) -> dict[str, Any]:
    refs: dict[str, set[str]] = {}
    logical: dict[str, int] = defaultdict(int)
    problems: list[str] = []
    last: dict[str, str] = {}
    for rec in vault.catalog.points():
        refs.setdefault(rec.vm, set())
        try:
            m = vault.manifest(rec)
        except CutpointError as exc:
            problems.append(f"point {rec.id} of VM {rec.vm}: {exc}")
            continue
        refs[rec.vm] |= m.referenced()
        logical[rec.vm] += sum(d.size for d in m.disks)
        last[rec.vm] = m.consistency
    owners: dict[str, int] = defaultdict(int)
    for ids in refs.values():
        for cid in ids:
            owners[cid] += 1
    size: dict[str, int] = {}
    for ids in refs.values():
        for cid in ids:
            if cid not in size:
                try:
                    size[cid] = vault.chunks.path(cid).stat().st_size
                except OSError:
                    size[cid] = 0
    vms = []
    names = sorted({v.name for v in vault.catalog.vms()} | set(refs))
    settings = {v.name: v.settings for v in vault.catalog.vms()}
    store = PolicyStore(vault.catalog.path)
    try:
        by_policy = {p.name: p.consistency for p in store.all()}
    finally:
        store.close()
    for name in names:
        own = settings.get(name) or {}
        ctype = by_policy.get(str(own.get("policy") or "")) or own.get("consistency") or "crash"
        ids = refs.get(name, set())
        vms.append({
            "vm": name, "protected": name in settings, "consistency": ctype,
            "weight": WEIGHTS.get(ctype, 0.5) if name in settings else 0.0,
            "points": len([r for r in vault.catalog.points(name)]), "last_point_consistency": last.get(name),
            "logical_bytes": logical.get(name, 0), "stored_bytes": sum(size[c] for c in ids),
            "unique_bytes": sum(size[c] for c in ids if owners[c] == 1),
        })
    return {"vms": vms, "total_weight": sum(v["weight"] for v in vms),
            "vault_stored_bytes": sum(size.values()), "problems": problems}


def cmd_report(args: argparse.Namespace) -> int:
    res = report(open_vault(args, create=False))
    if args.json:
        print_json(res)
        return 0
    print(table(["vm", "consistency", "weight", "points", "last point", "logical", "stored", "unique"],
                [[v["vm"] + ("" if v["protected"] else " (removed)"), v["consistency"], f"{v['weight']:.1f}",
                  v["points"], v["last_point_consistency"] or "-", human(v["logical_bytes"]),
                  human(v["stored_bytes"]), human(v["unique_bytes"])] for v in res["vms"]]))
    print(f"protected instances: {res['total_weight']:.1f} (crash-consistent 0.5, app-consistent 1.0); "
          f"vault chunks: {human(res['vault_stored_bytes'])}")
    for p in res["problems"]:
        print(f"warning: {p}")
    return 0
