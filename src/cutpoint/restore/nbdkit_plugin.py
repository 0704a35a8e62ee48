# nbdkit Python plugin: serve the disks of one restore point read-only, chunk by chunk, from a cutpoint vault.
#
#   nbdkit [-s | --unix SOCK] -r python nbdkit_plugin.py vault=ROOT vm=NAME point=ID [disk=NAME] [stats=FILE]
#          [key_file=FILE] [passphrase_file=FILE]
#
# passphrase_file= is a private file cutpoint wrote for this server alone: read once, then removed (the passphrase
# never travels in the environment, see cutpoint.restore.nbdserve.export_passphrase).
# Export names are "d0", "d1", ... (disk index on the point, URI-safe whatever the disk's name) or the disk's name;
# the default export is disk= (else d0). Nothing is written, ever: the plugin has no pwrite. stats=FILE gets one line
# per chunk fetched from the vault, which is how tests and `cutpoint files` show that only the needed chunks are read.
# The point is pinned (locks/pin-<point>.lock, shared) for the server's life: prune keeps it, so its chunks stay
# referenced and gc leaves them; other points of the vault can be pruned meanwhile.
# Run by nbdkit's embedded interpreter: it finds `cutpoint` through PYTHONPATH, set by cutpoint.restore.nbdserve.
from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path
from typing import Any

import nbdkit  # type: ignore[import-not-found]

API_VERSION = 2
READAHEAD = 8 << 20             # S3 vaults: fetched ahead of sequential reads (pointdisk.PointDisk)

_params: dict[str, str] = {}
_state: dict[str, Any] = {}


def config(key: str, value: str) -> None:
    if key not in ("vault", "vm", "point", "disk", "stats", "key_file", "passphrase_file"):
        raise ValueError(f"unknown parameter {key!r}")
    _params[key] = value


def config_complete() -> None:
    for k in ("vault", "vm", "point"):
        if k not in _params:
            raise ValueError(f"missing parameter {k}=")


def thread_model() -> int:
    return nbdkit.THREAD_MODEL_PARALLEL


def get_ready() -> None:
    from cutpoint.restore.pointdisk import PointDisk
    from cutpoint.vault.vault import Vault

    root = Path(_params["vault"])
    key_file = Path(_params["key_file"]) if _params.get("key_file") else None
    secret = _take_secret(_params.get("passphrase_file"))
    try:
        from cutpoint.vault import passphrase as pp
        source = (lambda what, confirm: secret) if secret is not None else pp.source()
        vault = Vault.open(root, create=False, passphrase=source, key_file=key_file)  # type: ignore[call-arg]
    except (ImportError, TypeError):
        vault = Vault.open(root, create=False)
    with vault.points_lock(shared=True):       # no prune deciding now; the pin then keeps the point for our life
        rec = vault.catalog.point(_params["vm"], _params["point"])
        _state["pin"] = vault.pin(rec.id)
        _state["pin"].__enter__()
    manifest = vault.manifest(rec)
    stats = _params.get("stats")

    def fetched(i: int) -> None:
        if stats:
            with builtins.open(stats, "a") as f:
                f.write(f"{i}\n")
    ahead = READAHEAD if vault.remote is not None else 0      # S3: each fetch is a round trip
    disks = [PointDisk(vault.chunks, d, manifest.chunk_size, on_fetch=fetched, readahead=ahead)
             for d in manifest.disks]
    names: dict[str, int] = {}
    for i, d in enumerate(manifest.disks):
        names[f"d{i}"] = i
        names.setdefault(d.name, i)
    want = _params.get("disk")
    if want is not None and want not in names:
        raise ValueError(f"point {manifest.point} has no disk {want!r}")
    _state.update(vault=vault, disks=disks, names=names, default=names[want] if want else 0)


def _take_secret(path: str | None) -> bytes | None:
    """Read the handed-over passphrase and remove its file at once (cutpoint removes its directory too)."""
    if not path:
        return None
    try:
        with builtins.open(path, "rb") as f:
            return f.read()
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def list_exports(readonly: bool, is_tls: bool) -> list[tuple[str, str]]:
    return [(f"d{i}", d.disk.name) for i, d in enumerate(_state["disks"])]


def default_export(readonly: bool, is_tls: bool) -> str:
    return f"d{_state['default']}"


def open(readonly: bool) -> Any:  # noqa: A001 - nbdkit's name
    name = nbdkit.export_name() or f"d{_state['default']}"
    if name not in _state["names"]:
        nbdkit.set_error(errno.ENOENT)
        raise ValueError(f"no export {name!r}")
    return _state["disks"][_state["names"][name]]


def get_size(h: Any) -> int:
    return int(h.size)


def can_write(h: Any) -> bool:
    return False


def can_multi_conn(h: Any) -> bool:
    return True


def can_extents(h: Any) -> bool:
    return True


def can_cache(h: Any) -> int:
    return nbdkit.CACHE_NONE


def is_rotational(h: Any) -> bool:
    return False


def pread(h: Any, buf: Any, offset: int, flags: int) -> None:
    try:
        h.pread_into(memoryview(buf), offset)
    except Exception as exc:  # any failure is an I/O error for the client, never wrong data
        nbdkit.set_error(errno.EIO)
        raise RuntimeError(f"cutpoint: {exc}") from exc


def extents(h: Any, count: int, offset: int, flags: int) -> list[tuple[int, int, int]]:
    zero = nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO
    return [(o, n, zero if z else 0) for o, n, z in h.extents(offset, count)]


def cleanup() -> None:
    lock = _state.pop("lock", None)
    if lock is not None:
        lock.__exit__(None, None, None)
    if os.environ.get("CUTPOINT_PLUGIN_DEBUG"):
        nbdkit.debug("cutpoint plugin done")
