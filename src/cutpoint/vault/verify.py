"""Verify: prove that points restore, without restoring them.

*Structure* (always): the catalog passes SQLite's quick check; every selected row is sound and matches its manifest;
every manifest opens (authenticated when encrypted, checksummed when not) and has one entry per chunk of each disk;
every referenced chunk file exists. *Data* (``--read-data``): every distinct referenced chunk is read once,
authenticated, decompressed and checked against its id and against the length each reference expects.

Each damaged chunk is reported with every point and disk it affects, and moved aside (``<id>.bad``) so the next
backup that meets its content stores it afresh rather than deduplicating against the damaged copy (points that
referenced it become restorable again once it is rewritten; re-verify them). Every checked point's verdict is
recorded in the catalog; a backup never builds an incremental on a point whose last verdict is ``failed``.
"""

from __future__ import annotations

from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .. import heap
from ..catalog.db import PointRecord, VerifyRecord
from ..errors import CutpointError, IntegrityError, NotFoundError, UsageError
from .packstore import PackStore
from .vault import Vault

READERS = 2                   # threads decoding a v4 vault's chunks: the two cores
STRETCH_GAP = 1 << 20         # a hole up to this long inside a pack is read through rather than split
STRETCH_SPAN = 4 << 20        # at most this much per storage read: within what ``heap.kept`` reuses, and memory
#                               stays near 2 x READERS x 4 MiB


@dataclass
class Ref:
    point: str
    vm: str
    disk: str
    index: int
    length: int


@dataclass
class PointVerdict:
    point: str
    vm: str
    state: str = "ok"
    problems: list[str] = field(default_factory=list)


@dataclass
class DamagedChunk:
    id: str
    problem: str
    moved_aside: bool
    affects: list[dict[str, Any]]


@dataclass
class VerifyReport:
    level: str
    catalog_problems: list[str]
    points: list[PointVerdict]
    damaged_chunks: list[DamagedChunk]
    chunks_checked: int = 0
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.catalog_problems and all(p.state == "ok" for p in self.points)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


def select(vault: Vault, target: str | None) -> list[PointRecord]:
    """All points, a VM's points, or one point (id or unique prefix)."""
    pts = vault.catalog.points()
    if target is None:
        return pts
    if target in {v.name for v in vault.catalog.vms()} | {p.vm for p in pts}:
        return [p for p in pts if p.vm == target]
    match = [p for p in pts if p.id == target] or [p for p in pts if p.id.startswith(target)]
    if not match:
        raise NotFoundError(f"no VM or restore point named {target!r}; list them with 'cutpoint points'")
    if len(match) > 1:
        raise UsageError(f"point {target!r} is ambiguous: {', '.join(p.id for p in match[:5])}")
    return match


def verify(vault: Vault, target: str | None = None, *, read_data: bool = False) -> VerifyReport:
    with vault.points_lock(shared=True):
        recs = select(vault, target)
        report = VerifyReport("data" if read_data else "structure", vault.catalog.quick_check(), [], [])
        verdicts = {r.id: PointVerdict(r.id, r.vm) for r in recs}
        refs: dict[str, list[Ref]] = defaultdict(list)
        for rec in recs:
            _check_point(vault, rec, verdicts[rec.id], refs)
        bad = _check_chunks(vault, refs, read_data, report)
        for cid, (problem, moved) in sorted(bad.items()):
            by_disk: dict[tuple[str, str, str], list[int]] = defaultdict(list)
            for r in refs[cid]:
                by_disk[(r.point, r.vm, r.disk)].append(r.index)
            report.damaged_chunks.append(DamagedChunk(cid, problem, moved, [
                {"point": p, "vm": vm, "disk": d, "chunks": idx} for (p, vm, d), idx in by_disk.items()]))
            for (p, _, d), idx in by_disk.items():
                verdicts[p].problems.append(f"disk {d}: chunk {cid[:16]} ({', '.join(map(str, idx[:8]))}"
                                            f"{', ...' if len(idx) > 8 else ''}) {problem}")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for v in verdicts.values():
            v.state = "failed" if v.problems else "ok"
            vault.catalog.set_verified(VerifyRecord(v.point, v.state, report.level, now, v.problems[:20]))
        report.points = list(verdicts.values())
    return report


def _check_point(vault: Vault, rec: PointRecord, v: PointVerdict, refs: dict[str, list[Ref]]) -> None:
    try:
        m = vault.manifest(rec)
    except IntegrityError as exc:
        v.problems.append(str(exc))
        return
    row = (rec.created, rec.consistency, rec.mode, rec.read_bytes, rec.stored_bytes)
    man = (m.created, m.consistency, m.mode, sum(d.read_bytes for d in m.disks), sum(d.stored_bytes for d in m.disks))
    if row != man:
        v.problems.append(f"catalog row of point {rec.id} is damaged: it says {row}, its manifest {man}")
    if rec.damaged:
        v.problems.append(f"catalog row of point {rec.id} is damaged: {rec.damaged}")
    for d in m.disks:
        n = -(-d.size // m.chunk_size)
        try:
            if len(d.chunks) != n:
                v.problems.append(f"manifest of point {rec.id} is damaged: disk {d.name} lists {len(d.chunks)} "
                                  f"chunks for {n}")
                continue
            for i, cid in enumerate(d.chunks):
                if cid is not None:
                    refs[cid].append(Ref(rec.id, rec.vm, d.name, i, min(m.chunk_size, d.size - i * m.chunk_size)))
        except (IntegrityError, NotFoundError) as exc:      # format v4: a node of the disk's index tree
            v.problems.append(f"disk {d.name}: its index is damaged or incomplete: {exc}")


def _check_chunks(vault: Vault, refs: dict[str, list[Ref]], read_data: bool,
                  report: VerifyReport) -> dict[str, tuple[str, bool]]:
    """id -> (problem, moved aside) for every referenced chunk that is missing or damaged."""
    bad: dict[str, tuple[str, bool]] = {}
    suspects: list[str] = []                # structure only: chunks not "ok" by the index first read
    if isinstance(vault.chunks, PackStore):
        vault.chunks.lost_ids()             # one listing of the packs: a copy in a lost pack is not "ok"
    order = _read_order(vault, refs)
    if read_data and isinstance(vault.chunks, PackStore):
        order = _check_in_stretches(vault.chunks, order, refs, report, bad)
    for cid in order:
        report.chunks_checked += 1
        try:
            state = vault.chunks.state(cid)
        except IntegrityError as exc:
            bad[cid] = (str(exc), False)
            continue
        if not read_data:
            if state != "ok":
                suspects.append(cid)
            continue
        try:
            data = vault.chunks.get(cid)
        except NotFoundError:
            bad[cid] = ("is missing", False)
            continue
        except IntegrityError as exc:
            problem = str(exc).removeprefix(f"chunk {cid} ")
            bad[cid] = (problem, vault.chunks.mark_bad(cid))
            continue
        except CutpointError as exc:
            bad[cid] = (str(exc), False)
            continue
        _count(cid, len(data), refs, report, bad)
    if suspects and isinstance(vault.chunks, PackStore):
        # gc may have repacked them since the index was read (it runs beside verify): judged by a fresh index and
        # listing before a verdict, as a read does (``get`` reloads once), not by the copy the old index named
        vault.chunks.reload()
        vault.chunks.lost_ids()
    for cid in suspects:
        state = vault.chunks.state(cid)
        if state != "ok":
            bad[cid] = ("is damaged (moved aside by an earlier verify)" if state == "bad" else "is missing", False)
    return bad


def _count(cid: str, length: int, refs: dict[str, list[Ref]], report: VerifyReport,
           bad: dict[str, tuple[str, bool]]) -> None:
    report.bytes_read += length
    wrong = {r.length for r in refs[cid]} - {length}
    if wrong:
        bad[cid] = (f"has {length} bytes where {sorted(wrong)[0]} are expected", False)


def _check_in_stretches(store: PackStore, order: list[str], refs: dict[str, list[Ref]], report: VerifyReport,
                        bad: dict[str, tuple[str, bool]]) -> list[str]:
    """The data check of a v4 vault, fast: the chunks of each stretch of a pack read with one storage read and
    decoded (decompressed, hashed) on READERS threads, which release the GIL, as a backup's workers do, with freed
    memory kept for the next stretch (``heap.kept``: fresh memory is slow here); one thread, chunk by chunk, had
    verify no faster than the backup it checks. A stretch with anything wrong in it (a damaged or missing chunk, a
    malformed id, a pack gone) is not judged here: its chunks are returned, to be checked one by one on this
    thread, which names each problem and moves damaged copies aside."""
    ok: list[str] = []
    for cid in order:
        try:
            if store.state(cid) == "ok":
                ok.append(cid)
        except IntegrityError:
            pass
    checked = set(ok)
    again = [c for c in order if c not in checked]
    groups = store.plan_reads(ok, gap=STRETCH_GAP, span=STRETCH_SPAN)

    def one(group: list[int]) -> list[tuple[str, int]] | None:
        cids = [ok[k] for k in group]
        try:
            return [(cids[k], len(data)) for k, data in store.read_group(cids, [None] * len(cids))]
        except CutpointError:
            return None
    pending: deque[tuple[list[int], Future[list[tuple[str, int]] | None]]] = deque()
    with heap.kept(), ThreadPoolExecutor(READERS) as pool:
        for group in groups:
            pending.append((group, pool.submit(one, group)))
            while len(pending) > 2 * READERS or (pending and pending[0][1].done()):
                _take(pending.popleft(), ok, refs, report, bad, again)
        while pending:
            _take(pending.popleft(), ok, refs, report, bad, again)
    return again


def _take(item: tuple[list[int], Future[list[tuple[str, int]] | None]], ok: list[str], refs: dict[str, list[Ref]],
          report: VerifyReport, bad: dict[str, tuple[str, bool]], again: list[str]) -> None:
    group, fut = item
    got = fut.result()
    if got is None:
        again.extend(ok[k] for k in group)
        return
    for cid, length in got:
        report.chunks_checked += 1
        _count(cid, length, refs, report, bad)


def _read_order(vault: Vault, refs: dict[str, list[Ref]]) -> list[str]:
    """Chunk ids in the order they lie on the storage (format v4: by pack and offset), so that reading all of
    them streams through each pack once instead of seeking at random."""
    store = vault.chunks
    if not isinstance(store, PackStore):
        return sorted(refs)
    where = store.index().where

    def key(cid: str) -> tuple[bytes, int]:
        try:
            loc = where.get(bytes.fromhex(cid))
        except ValueError:
            loc = None
        return (loc.pid, loc.offset) if loc else (b"", 0)
    return sorted(refs, key=key)
