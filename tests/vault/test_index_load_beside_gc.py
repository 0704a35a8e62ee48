"""Loading the index lists ``index/`` and reads each object; gc (and rebuild-index) write a new object and then
delete the old ones. An object deleted between the listing and its read was skipped, and the new one was not in the
listing: the index came back without blobs the vault holds, and readers that do not reload (``has``, a copy's
source, a replace's plan) called them missing. The load now lists again. A damaged index object, which stops every
load, names the fix."""

from __future__ import annotations

import os

import pytest

from cutpoint.errors import IntegrityError
from cutpoint.vault import packindex, packrebuild
from tests.vault.util import open_vault


def test_an_index_swapped_by_gc_during_the_load_loses_no_blob() -> None:
    a = open_vault()
    cid, _ = a.chunks.put(os.urandom(64 << 10))
    a.chunks.flush()
    a.close()
    r = open_vault()
    backend = r.backend
    listing, swapped = backend.list, []

    def swapped_after_the_listing(prefix: str = ""):  # type: ignore[no-untyped-def]
        items = list(listing(prefix))
        if prefix == packindex.INDEX_PREFIX and not swapped:
            swapped.append(prefix)
            packrebuild.rebuild_index(backend, r.sealer)        # the same swap as gc's, right after the listing
        return iter(items)

    backend.list = swapped_after_the_listing          # type: ignore[method-assign]
    assert r.chunks.has(cid)
    assert swapped
    r.close()


def test_a_damaged_index_object_names_rebuild_index() -> None:
    a = open_vault()
    a.chunks.put(os.urandom(64 << 10))
    a.chunks.flush()
    [name] = [o.name for o in a.backend.list(packindex.INDEX_PREFIX)]
    a.close()
    (a.root / name).write_bytes(b"")                  # torn by a power loss
    r = open_vault()
    with pytest.raises(IntegrityError, match="run 'cutpoint vault rebuild-index'"):
        r.chunks.index()
    r.close()
