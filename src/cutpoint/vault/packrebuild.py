"""Rebuilding a format v4 vault's index from its packs alone.

Every pack ends in a sealed table of its blobs (``packfile``), so lost or damaged index objects cost a listing and
two small reads per pack, never the data. ``cutpoint vault rebuild-index`` runs it.
"""

from __future__ import annotations

from ..errors import IntegrityError, NotFoundError
from . import packindex
from .backend import Backend, ObjectInfo
from .crypto import Sealer
from .packfile import END, Entry, pack_id_of, parse_trailer, trailer_length


def read_trailer(backend: Backend, sealer: Sealer, pid: bytes, info: ObjectInfo) -> list[Entry]:
    """A pack's entries from its own sealed trailer (two small reads); ``IntegrityError`` if it does not open."""
    tlen = trailer_length(backend.get(info.name, max(0, info.size - END.size), END.size))
    if tlen is None or tlen + END.size > info.size:
        raise IntegrityError(f"pack {pid.hex()} is damaged: no trailer (truncated, or not a pack)")
    tail = backend.get(info.name, info.size - END.size - tlen, tlen + END.size)
    return parse_trailer(sealer, pid, tail, info.size)


def rebuild_index(backend: Backend, sealer: Sealer) -> tuple[int, list[str]]:
    """One index object for every pack, read from the packs' own trailers; the old index objects are deleted once
    it is durable. Returns (packs indexed, problems: packs whose trailer does not open, left out and named). For a
    vault whose index objects are lost or damaged; safe to rerun after a kill. The caller holds the gc lock (gc
    deletes packs); backups may run: index objects written after the listing are kept."""
    old = [i.name for i in backend.list(packindex.INDEX_PREFIX)]   # first: later ones are not ours
    found: list[tuple[bytes, list[Entry]]] = []
    problems: list[str] = []
    for info in backend.list("data/"):
        pid = pack_id_of(info.name)
        if pid is None:
            continue
        try:
            found.append((pid, read_trailer(backend, sealer, pid, info)))
        except (IntegrityError, NotFoundError) as exc:
            problems.append(str(exc))
    name = packindex.new_index_name()
    backend.put(name, packindex.encode_index(sealer, name, found))
    backend.sync()
    for o in old:
        backend.delete(o)
    backend.sync()
    return len(found), problems
