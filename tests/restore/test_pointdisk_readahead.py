"""Random access to a point over object storage: once reads go sequentially, the next chunks are fetched in the
background in runs, so a guest booting or a file being copied waits for a round trip per run, not per chunk."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cutpoint.restore.pointdisk import PointDisk
from cutpoint.vault.vault import Vault
from tests.helpers import commit_synthetic_point

KiB = 1 << 10


def _point(n: int) -> tuple[Vault, object, list[bytes]]:
    v = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    datas = [os.urandom(64 * KiB) for _ in range(n)]
    commit_synthetic_point(v, "20240101T000000Z-aaaa", "web", "2024-01-01T00:00:00.000Z", {"d": list(datas)})
    rec = v.catalog.points("web")[0]
    return v, v.manifest(rec).disks[0], datas


def _read_sequentially(pd: PointDisk, size: int, step: int) -> bytes:
    out = bytearray()
    for off in range(0, size, step):
        buf = memoryview(bytearray(min(step, size - off)))
        pd.pread_into(buf, off)
        out += buf
        time.sleep(0.002)               # a guest between reads: the read-ahead gets its turn
    return bytes(out)


def test_sequential_reads_are_served_by_read_ahead() -> None:
    v, disk, datas = _point(96)
    calls = {"get": 0}
    real_get = v.chunks.get

    def counting_get(cid: str, expect: int | None = None) -> bytes:    # instrumentation of the real store
        calls["get"] += 1
        return real_get(cid, expect)

    v.chunks.get = counting_get  # type: ignore[method-assign]
    pd = PointDisk(v.chunks, disk, v.chunk_size, readahead=1 << 20)
    assert _read_sequentially(pd, disk.size, 16 * KiB) == b"".join(datas)
    assert calls["get"] <= 8, calls                       # the rest came from runs fetched ahead
    pd.close()
    calls["get"] = 0
    plain = PointDisk(v.chunks, disk, v.chunk_size)
    assert _read_sequentially(plain, disk.size, 16 * KiB) == b"".join(datas)
    assert calls["get"] == 96                             # without read-ahead: one fetch per chunk
    v.close()


def test_random_reads_fetch_nothing_ahead() -> None:
    v, disk, datas = _point(64)
    pd = PointDisk(v.chunks, disk, v.chunk_size, readahead=1 << 20)
    for i in (40, 3, 57, 11, 29):
        buf = memoryview(bytearray(4 * KiB))
        pd.pread_into(buf, i * 64 * KiB + 100)
        assert bytes(buf) == datas[i][100:100 + 4 * KiB]
    time.sleep(0.05)
    assert pd.fetched == 5
    pd.close()
    v.close()
