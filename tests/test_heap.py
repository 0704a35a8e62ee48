"""heap.kept(): inside, freed memory is reused instead of faulted in afresh; after the last user, the trim threshold
is back and the free heap is returned (a long-lived service does not keep a backup's peak)."""

from __future__ import annotations

import os
import resource

import pytest

from cutpoint import heap

MiB = 1 << 20


def _faults(src: bytes, rounds: int = 16) -> int:
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        copy = bytes(memoryview(src))          # a fresh 1 MiB block, filled: every page touched
        del copy
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(heap._LIBC is None, reason="not glibc, or malloc tuned through the environment")
def test_freed_memory_is_reused_inside_and_handed_back_after() -> None:
    src = os.urandom(MiB - 4096)
    with heap.kept():
        pass                                   # from here on the thresholds are the fixed defaults outside
    pages = MiB // os.sysconf("SC_PAGE_SIZE")
    outside = _faults(src)
    with heap.kept():
        _faults(src, 1)                        # the first block is new memory either way
        inside = _faults(src)
        with heap.kept():                      # nested: still kept when the inner block ends
            pass
        inner = _faults(src)
        blocks = [bytes(memoryview(src)) for _ in range(7)]
        del blocks                             # 7 MiB freed, kept in the process
        held = _rss()
    after = _rss()
    assert outside >= 16 * pages // 2, outside          # outside: each block faulted in afresh (half at least)
    assert inside < pages and inner < pages, (inside, inner)
    assert held - after >= 4 * MiB, (held, after)
