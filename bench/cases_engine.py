"""The storage engine in-process, on the dataset's own bytes, without QEMU: what the machine allows (keyed BLAKE3 plus
zstd on both cores, from memory), cutpoint's v4 engine reading the same raw files, incrementals of 1% in 64 KiB
writes and in 1 MiB runs, restore and ``verify --read-data`` of the result, and the index of a simulated 1 TiB disk.

The reader is a plain file with the NBD reader's interface (block status from SEEK_DATA/SEEK_HOLE, dirty extents
given): the same engine code as a backup, minus the network hop. Changed data is random, so compression cannot hide
what an incremental stores.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import blake3
import zstandard

import harness
from harness import MiB

CHUNK = 64 << 10


class FileReader:
    """``ExportReader``'s interface over a raw file; ``dirty`` stands in for the dirty bitmap."""

    def __init__(self, path: Path, dirty: list[tuple[int, int]] | None = None) -> None:
        from cutpoint.reader.export import Extent
        self.Extent = Extent
        self.fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self.fd).st_size
        self.dirty = dirty

    def size(self) -> int:
        return self._size

    def zero_extents(self) -> list[Any]:
        out, pos = [], 0
        while pos < self._size:
            try:
                data = os.lseek(self.fd, pos, os.SEEK_DATA)
            except OSError:
                data = self._size
            if data > pos:
                out.append(self.Extent(pos, data - pos, 2))
            if data >= self._size:
                break
            pos = os.lseek(self.fd, data, os.SEEK_HOLE)
        return out

    def dirty_extents(self) -> list[Any]:
        return [self.Extent(o, n, 1) for o, n in self.dirty or []]

    def pread(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def read_into(self, buf: memoryview, offset: int, length: int) -> None:
        done = 0
        while done < length:
            n = os.preadv(self.fd, [buf[done:length]], offset + done)
            if n <= 0:
                raise EOFError(f"short read at {offset + done}")
            done += n

    def close(self) -> None:
        os.close(self.fd)


def _nonzero_chunks(paths: list[Path]) -> list[bytes]:
    out = []
    zero = bytes(CHUNK)
    for p in paths:
        with open(p, "rb") as f:
            while True:
                b = f.read(CHUNK)
                if not b:
                    break
                if b != zero[:len(b)]:
                    out.append(b)
    return out


def limit(chunks: list[bytes]) -> dict[str, float]:
    """Keyed BLAKE3 and zstd level 1 of every non-zero chunk, split over two threads (both release the GIL)."""
    key = os.urandom(32)

    def work(part: list[bytes]) -> None:
        c = zstandard.ZstdCompressor(level=1)
        for b in part:
            blake3.blake3(b, key=key).digest()
            c.compress(b)
    t0 = time.perf_counter()
    th = [threading.Thread(target=work, args=(chunks[i::2],)) for i in range(2)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    secs = time.perf_counter() - t0
    nbytes = sum(len(b) for b in chunks)
    return {"seconds": secs, "bytes": nbytes, "mib_s": nbytes / MiB / secs}


def _vault(root: Path) -> Any:
    from cutpoint.catalog.db import VmRecord
    from cutpoint.vault.vault import Vault
    os.environ["CUTPOINT_STATE"] = str(root / "state")
    Vault.create(root / "vault", encrypt=False)
    v = Vault.open(root / "vault")
    v.catalog.add_vm(VmRecord("bench", "qmp", "/nonexistent", datetime.now(timezone.utc).isoformat(), {}))
    return v


def _backup(v: Any, disks: dict[str, Path], prev: Any, dirty: dict[str, list[tuple[int, int]]] | None,
            n: int) -> tuple[float, Any, dict[str, int]]:
    from cutpoint.backup.chunker import WORKERS
    from cutpoint.backup.treechunker import read_disk_tree
    from cutpoint.vault.manifest import FORMAT_DELTA, DiskManifest, Manifest
    t0 = time.perf_counter()
    tot = {"read": 0, "stored": 0, "index": 0}
    lock = threading.Lock()

    def one(name: str, path: Path, pool: ThreadPoolExecutor) -> DiskManifest:
        r = FileReader(path, dirty.get(name) if dirty else None)
        p = next(d.chunks for d in prev.disks if d.name == name) if prev else None
        res = read_disk_tree(r, name, r.size(), v.chunk_size, v.chunks, v.fanout, prev=p, pool=pool)
        r.close()
        with lock:
            tot["read"] += res.read_bytes
            tot["stored"] += res.stored_bytes
            tot["index"] += res.index_bytes
        return DiskManifest(name=name, size=r.size(), chunks=res.tree, read_bytes=res.read_bytes,
                            stored_bytes=res.stored_bytes, tree=res.tree.root.hex() if res.tree.root else None,
                            tree_height=res.tree.height, index_bytes=res.index_bytes)

    # as a backup runs it (backup/run.py): every disk at once, through one pool of workers
    with ThreadPoolExecutor(max_workers=WORKERS) as pool, ThreadPoolExecutor(len(disks)) as per_disk:
        out = [f.result() for f in [per_disk.submit(one, name, path, pool) for name, path in disks.items()]]
    m = Manifest(point=f"20260101T0000{n:02d}Z-beef", vm="bench", created=datetime.now(timezone.utc).isoformat(),
                 chunk_size=v.chunk_size, disks=out, format=FORMAT_DELTA, fanout=v.fanout,
                 mode="incremental" if prev else "full")
    v.commit_point(m, {})
    secs = time.perf_counter() - t0
    rec = v.catalog.point("bench", m.point)
    return secs, v.manifest(rec), tot


def _scatter(paths: dict[str, Path], fraction: float, run: int, seed: int) -> tuple[dict[str, list[tuple[int, int]]],
                                                                                    int]:
    """Overwrite ``fraction`` of each file with random bytes in ``run``-byte writes at random aligned places."""
    rnd = random.Random(seed)
    dirty: dict[str, list[tuple[int, int]]] = {}
    total = 0
    for name, p in paths.items():
        size = p.stat().st_size
        n = max(1, int(size * fraction) // run)
        offs = sorted(rnd.sample(range(size // run), n))
        with open(p, "r+b") as f:
            for o in offs:
                f.seek(o * run)
                f.write(os.urandom(run))
        dirty[name] = [(o * run, run) for o in offs]
        total += n * run
    return dirty, total


def run_case(ds: dict[str, Path], work: Path) -> dict[str, object]:
    """In a child process: the case holds the whole dataset in memory for the limit, and a parent that grew by
    that much would pass its peak RSS on to every later child it forks (the RSS case measured 1.6 GiB so)."""
    import json
    import sys
    p = subprocess.run([sys.executable, __file__, json.dumps({k: str(v) for k, v in ds.items()}), str(work)],
                       capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"engine case failed ({p.returncode}): {p.stderr[-1500:]}")
    out: dict[str, object] = json.loads(p.stdout)
    return out


ROUNDS = 3


def _run_case(ds: dict[str, Path], work: Path) -> dict[str, object]:
    """The limit and the full backup are measured in turn, ROUNDS times (each full into a fresh vault), and compared
    by the median of the rounds' ratios: the machine's speed moves by a third between one second and the next here
    (docs/performance.md), and one of each, taken seconds apart, measured that more than the engine."""
    from cutpoint.restore.images import restore_point
    from cutpoint.vault.verify import verify
    res: dict[str, object] = {}
    chunks = _nonzero_chunks(list(ds.values()))
    nonzero = sum(len(b) for b in chunks)
    root = Path(tempfile.mkdtemp(dir=work, prefix="engine-"))
    try:
        disks = {}
        for name, src in ds.items():
            disks[name] = root / f"{name}.raw"
            subprocess.run(["cp", "--sparse=always", str(src), str(disks[name])], check=True)
        rounds: list[dict[str, Any]] = []
        for k in range(ROUNDS):
            lim = limit(chunks)
            if k:
                v.close()
                shutil.rmtree(root / f"full-{k - 1}")
            v = _vault(root / f"full-{k}")
            os.sync()
            secs, full, tot = _backup(v, disks, None, None, 0)
            rounds.append({"limit": lim, "seconds": secs, "tot": tot, "full": full,
                           "ratio": (nonzero / MiB / secs) / lim["mib_s"]})
        mid = sorted(rounds, key=lambda r: r["ratio"])[ROUNDS // 2]
        secs, full, tot = mid["seconds"], rounds[-1]["full"], mid["tot"]
        res["limit"] = mid["limit"]
        res["full"] = {"seconds": secs, "nonzero_bytes": nonzero, "mib_s": nonzero / MiB / secs, **tot,
                       "ratio_to_limit": mid["ratio"],
                       "rounds": [{"limit_mib_s": r["limit"]["mib_s"], "engine_mib_s": nonzero / MiB / r["seconds"],
                                   "ratio": r["ratio"]} for r in rounds]}
        prev = full
        for label, run, n in (("1pct_64k", 64 << 10, 1), ("1pct_1m", MiB, 2)):
            dirty, changed = _scatter(disks, 0.01, run, seed=n)
            s, prev, t = _backup(v, disks, prev, dirty, n)
            res[f"incremental_{label}"] = {"seconds": s, "changed_bytes": changed, **t,
                                           "time_vs_full": s / secs,
                                           "stored_vs_changed": (t["stored"] + t["index"]) / changed}
        out = root / "restored"
        t0 = time.perf_counter()
        restore_point(v, prev, out)
        rsecs = time.perf_counter() - t0
        logical = sum(p.stat().st_size for p in disks.values())
        t0 = time.perf_counter()
        for p in disks.values():
            harness.convert_durably(p, root / "convert.raw")
            (root / "convert.raw").unlink()
        csecs = time.perf_counter() - t0
        res["restore"] = {"seconds": rsecs, "mib_s": logical / MiB / rsecs, "convert_seconds": csecs,
                          "ratio_to_convert": csecs / rsecs}
        t0 = time.perf_counter()
        rep = verify(v, read_data=True)
        vsecs = time.perf_counter() - t0
        res["verify_read_data"] = {"seconds": vsecs, "ok": rep.ok, "bytes_read": rep.bytes_read,
                                   "ratio_to_full_backup": secs / vsecs}
        v.close()
        res["index_1tib"] = index_1tib(root)
        res["index_dense"] = index_dense(root)
        del chunks     # only now: 1.6 GiB freed just before the incrementals doubled the 64 KiB one's time here
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return res


def index_1tib(root: Path) -> dict[str, object]:
    """A sparse 1 TiB disk laid out like a fresh filesystem: 4 MiB at the start and 64 KiB of metadata every
    2 GiB (36 MiB in all); then 1% of that data rewritten in one place (a file and its journal)."""
    d = root / "tib"
    d.mkdir()
    disk = d / "big.raw"
    with open(disk, "wb") as f:
        f.truncate(1 << 40)
        f.write(os.urandom(4 * MiB))
        for g in range(1, 512):
            f.seek(g * (2 << 30))
            f.write(os.urandom(64 << 10))
    v = _vault(d)
    s_full, full, t_full = _backup(v, {"d": disk}, None, None, 0)
    data = 4 * MiB + 511 * (64 << 10)
    change = max(64 << 10, data // 100 // (64 << 10) * (64 << 10))
    with open(disk, "r+b") as f:
        f.seek(1 * MiB)
        f.write(os.urandom(change))
    s_inc, _, t_inc = _backup(v, {"d": disk}, full, {"d": [(1 * MiB, change)]}, 1)
    v.close()
    flat = (1 << 40) // CHUNK * 32
    return {"disk_bytes": 1 << 40, "data_bytes": data, "changed_bytes": change,
            "full_index_bytes": t_full["index"], "incremental_index_bytes": t_inc["index"],
            "ratio": t_inc["index"] / t_full["index"], "flat_index_bytes": flat,
            "full_seconds": s_full, "incremental_seconds": s_inc}


def index_dense(root: Path, gib: int = 64) -> dict[str, object]:
    """A disk with data in every chunk (the worst case of an index: nothing is a null id), then 1% of its chunks
    changed at random places, as a database's scattered writes do: the index bytes the full and the incremental
    write. Chunk ids are random (the index does not read the data), so 64 GiB costs seconds, not a disk; a
    1 TiB disk scales it by 16. Without delta nodes every leaf would be touched and written again (about 100%)."""
    from cutpoint.vault import tree
    d = root / "dense"
    d.mkdir()
    v = _vault(d)
    n = (gib << 30) // CHUNK
    fan = v.fanout
    raw = os.urandom(32 * n)
    ids: list[bytes | None] = [raw[32 * i:32 * i + 32] for i in range(n)]

    def store(ids: list[bytes | None], prev: Any) -> tuple[Any, int]:
        leaves, written = [], 0
        for j in range(0, n, fan):
            lid, w = tree.store_leaf(v.chunks, ids[j:j + fan], prev.base_for(0, j // fan) if prev else None)
            leaves.append(lid)
            written += w
        root_id, height, w = tree.build(v.chunks, leaves, n, fan, prev)
        return tree.ChunkTree(v.chunks, root_id, height, n, fan, deltas=True), written + w

    full, full_bytes = store(ids, None)
    rnd = random.Random(7)
    changed = rnd.sample(range(n), n // 100)
    new = os.urandom(32 * len(changed))
    for k, i in enumerate(changed):
        ids[i] = new[32 * k:32 * k + 32]
    touched = len({i // fan for i in changed})
    _, inc_bytes = store(ids, full)
    v.close()
    return {"disk_bytes": gib << 30, "chunks": n, "changed_chunks": len(changed), "leaves_touched": touched,
            "leaves": -(-n // fan), "full_index_bytes": full_bytes, "incremental_index_bytes": inc_bytes,
            "ratio": inc_bytes / full_bytes}


if __name__ == "__main__":
    import json
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    result = _run_case({k: Path(v) for k, v in json.loads(sys.argv[1]).items()}, Path(sys.argv[2]))
    print(json.dumps(result))
