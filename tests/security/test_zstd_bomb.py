"""A hostile chunk whose zstd frame decompresses far past the vault's chunk size (a decompression bomb) is refused as
damaged, with memory bounded by the chunk size, not by what the frame claims."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.vault.util import vault_dir

BOMB = 768 << 20          # what the frame decompresses to: 192 times a v3 vault's 4 MiB chunk size


@pytest.mark.both_formats
def test_zstd_bomb_is_an_integrity_error_with_bounded_memory() -> None:
    code = textwrap.dedent(f"""
        import resource, sys, zstandard
        from pathlib import Path
        from cutpoint.errors import IntegrityError
        from cutpoint.vault.chunks import CODEC_ZSTD, MAGIC
        from cutpoint.vault.vault import Vault
        v = Vault.open(Path({str(vault_dir())!r}))
        cid = "ab" * 32
        for with_size in (True, False):
            c = zstandard.ZstdCompressor(level=1, write_content_size=with_size)
            obj = c.compressobj(size={BOMB} if with_size else -1)
            zero = bytes(16 << 20)
            frame = b"".join(obj.compress(zero) for _ in range({BOMB} // len(zero))) + obj.flush()
            if not v.packed:                      # v3: a chunk file
                blob = v.sealer.seal(MAGIC, bytes([CODEC_ZSTD]) + frame, cid.encode())
                p = v.chunks.path(cid)
                p.parent.mkdir(exist_ok=True)
                p.write_bytes(blob)
            else:                                 # v4: a blob in a pack, listed by an index object
                from cutpoint.vault import blob as blobs, packindex
                from cutpoint.vault.packfile import PackBuffer, pack_name
                bid = bytes.fromhex(cid)
                sealed = b"".join(v.sealer.seal_blob_parts(blobs.MAGIC, b"\x01", frame, bytes([blobs.DATA]) + bid))
                buf = PackBuffer(1 << 20)
                buf.add(blobs.DATA, bid, sealed, v.chunk_size)
                v.chunks.backend.put(pack_name(buf.pid), buf.finish(v.sealer))
                name = packindex.new_index_name()
                v.chunks.backend.put(name, packindex.encode_index(v.sealer, name, [(buf.pid, list(buf.entries))]))
                v.chunks.reload()
            del frame, zero, obj
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                v.chunks.get(cid)
            except IntegrityError as exc:
                print("refused:", exc)
            else:
                print("accepted")
            grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
            print("grew_kib", grew)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 4, p.stdout
    for res, grew in ((lines[0], lines[1]), (lines[2], lines[3])):
        assert res.startswith("refused:") and "damaged" in res, res
        assert int(grew.split()[1]) < 64 << 10, (res, grew)     # well under the bomb's 768 MiB
