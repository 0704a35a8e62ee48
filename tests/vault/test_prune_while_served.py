"""A point being served (a mount, a file view, an instant-restored VM) is pinned: prune keeps it with the reason and
prunes the rest of the VM's points instead of being refused for the whole vault; gc leaves what it serves; once the
server stops, the next prune removes it."""

from __future__ import annotations

import json
from pathlib import Path

import nbd

from cutpoint.restore.nbdserve import PointServer, nbdkit_argv, stop_server
from cutpoint.vault.prune import SERVED
from tests.helpers import cutpoint
from tests.vault.util import backup, change, gc, points, snapshot, two_disk_vm, vault_dir


def test_prune_while_served(bare_qemu, tmp_path: Path) -> None:
    vm, images = two_disk_vm(bare_qemu, tmp_path)
    p1 = backup()["point"]
    at_p1 = snapshot(images)
    change(vm, 0x21)
    p2 = backup()["point"]
    change(vm, 0x31)
    p3 = backup()["point"]

    sock = tmp_path / "nbd.sock"
    server = PointServer(sock, tmp_path / "nbd.pid", tmp_path / "nbd.log")
    pid = server.start(nbdkit_argv(vault_dir(), "v", p1))
    try:
        r = cutpoint("prune", "v", "--keep-last", "1", "--json")
        assert r.code == 0, r.err
        res = json.loads(r.out)
        kept = {k["point"]: k["reasons"] for k in res["keep"]}
        assert set(kept) == {p1, p3} and [x["point"] for x in res["remove"]] == [p2]
        assert kept[p1] == [SERVED] and kept[p3] == ["last 1"]
        assert points() == [p1, p3]
        gc()
        h = nbd.NBD()
        h.connect_uri(f"nbd+unix:///da?socket={sock}")
        try:                                             # everything p1 serves is still there, byte for byte
            size = h.get_size()
            assert size == len(at_p1["da"])
            assert b"".join(h.pread(min(4 << 20, size - o), o) for o in range(0, size, 4 << 20)) == at_p1["da"]
        finally:
            h.shutdown()
    finally:
        stop_server(pid)
    res = json.loads(cutpoint("prune", "v", "--keep-last", "1", "--json", check=True).out)
    assert [x["point"] for x in res["remove"]] == [p1] and points() == [p3]
    assert not list((vault_dir() / "locks").glob("pin-*"))
