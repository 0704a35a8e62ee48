"""Pipelined reads (read_into, a full run) and plain reads (pread, the dirty ranges of a partly dirty chunk) of one
connection from several worker threads at once, against a real nbdkit: none may consume the replies another is
waiting for (it then waited for ever: the hang this test found), and every byte is the export's."""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

from tests.reader.nbdkit import served

MiB = 1 << 20


def _pattern(offset: int, length: int) -> bytes:
    """nbdkit's pattern plugin: each 8-byte word holds its own offset, big-endian."""
    return b"".join(struct.pack(">Q", o) for o in range(offset, offset + length, 8))


def test_pipelined_and_plain_reads_of_one_connection_at_once(tmp_path: Path) -> None:
    with served(tmp_path / "nbd.sock", "pattern", "64M") as r:
        stop = time.monotonic() + 3
        done = {"runs": 0, "preads": 0}
        bad: list[str] = []

        def runs(off: int) -> None:
            buf = bytearray(4 * MiB)
            while time.monotonic() < stop:
                r.read_into(buf, off, 4 * MiB)
                if buf[-8:] != _pattern(off + 4 * MiB - 8, 8) or buf[:8] != _pattern(off, 8):
                    bad.append(f"run at {off}")
                done["runs"] += 1

        def preads() -> None:
            while time.monotonic() < stop:
                if r.pread(40 * MiB, 64 << 10) != _pattern(40 * MiB, 64 << 10):
                    bad.append("pread")
                done["preads"] += 1

        threads = [threading.Thread(target=runs, args=(0,), daemon=True),
                   threading.Thread(target=runs, args=(16 * MiB,), daemon=True),
                   threading.Thread(target=preads, daemon=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), f"reads hung after {done}"
        assert not bad and done["runs"] > 0 and done["preads"] > 0, (bad, done)
