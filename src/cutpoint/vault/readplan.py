"""Planning the reads of many blobs: which lie close enough in one pack to be read with one storage request.

On object storage a request costs as much as reading hundreds of KiB (docs/performance.md), so blobs of one pack
are read in stretches, through small holes, up to a bounded length.
"""

from __future__ import annotations

from .blob import DATA
from .packindex import Location


def plan_reads(where: dict[bytes, Location], bids: list[bytes], *, gap: int = 0, span: int = 0) -> list[list[int]]:
    """Positions of ``bids`` in groups that ``PackStore.read_group`` reads with one storage read each: blobs of
    one pack in pack order, a group ending where the next blob lies more than ``gap`` bytes after the last one or
    (with ``span``) would make the read longer than ``span`` bytes, so a small hole is read through rather than
    split into a second request. A repeated id joins its first position's group (its blob is read once); a chunk the index
    does not list as data is a group of its own (``read_group`` finds it or says why not). Groups are ordered
    by their first position."""
    by_id: dict[bytes, list[int]] = {}
    for k, b in enumerate(bids):
        by_id.setdefault(b, []).append(k)
    groups: list[list[int]] = []
    located: list[tuple[bytes, int, int, list[int]]] = []      # (pack, offset, end, positions)
    for b, ks in by_id.items():
        loc = where.get(b)
        if loc is None or loc.kind != DATA:
            groups.append(ks)
        else:
            located.append((loc.pid, loc.offset, loc.offset + loc.length, ks))
    located.sort(key=lambda t: (t[0], t[1]))
    stretch: list[int] = []
    pid, start, end = b"", 0, 0
    for p, o, e, ks in located:
        if stretch and (p != pid or o > end + gap or (span and max(e, end) - start > span)):
            groups.append(stretch)
            stretch = []
        if not stretch:
            pid, start, end = p, o, e
        end = max(end, e)
        stretch += ks
    if stretch:
        groups.append(stretch)
    for g in groups:
        g.sort()
    groups.sort(key=lambda g: g[0])
    return groups
