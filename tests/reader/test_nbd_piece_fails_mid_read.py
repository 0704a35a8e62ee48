"""A piece of a pipelined read fails while the next is still in flight (a real nbdkit whose reads fail at offset 0
and are slow elsewhere): read_into raises, and nothing lands in the caller's buffer after it returned, even when the
same connection reads again; the buffer is the worker's, reused for the next run."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutpoint.errors import HypervisorError
from cutpoint.reader.export import PIECE
from tests.reader.nbdkit import served

SCRIPT = """#!/bin/sh
case "$1" in
  get_size) echo 8M ;;
  can_multi_conn) exit 0 ;;
  pread)
    if [ "$4" -eq 0 ]; then echo "EIO injected" >&2; exit 1; fi
    sleep 0.5; head -c "$3" /dev/zero | tr '\\000' 'a' ;;
  thread_model) echo parallel ;;
  open) ;;
  *) exit 2 ;;
esac
"""


def test_a_failed_piece_leaves_no_late_write_into_the_buffer(tmp_path: Path) -> None:
    script = tmp_path / "disk.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    with served(tmp_path / "nbd.sock", "sh", str(script)) as r:
        buf = bytearray(b"\xee" * (2 * PIECE))
        with pytest.raises(HypervisorError, match="did the VM exit"):
            r.read_into(buf, 0, 2 * PIECE)          # piece 0 fails at once, piece 1 is still in flight
        at_return = bytes(buf)
        other = bytearray(PIECE)
        r.read_into(other, 4 * PIECE, PIECE)         # the connection's next read runs its replies
        assert other == b"a" * PIECE
        assert bytes(buf) == at_return               # nothing written into it after read_into returned
