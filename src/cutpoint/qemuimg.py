"""Every ``qemu-img`` cutpoint runs: create, convert, resize, info, and whether a QEMU holds an image's lock.

One module so the options that matter are written once: ``-q`` and captured output (qemu-img's own words end up in
one-line errors), ``--output=json`` parsed in one place, the caller's environment and umask passed through (restore
passes an environment without the vault's secrets and a private umask). Depends only on ``errors``, so drivers,
restore and the lab all use it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import CutpointError


class QemuImgError(CutpointError):
    """qemu-img refused or failed; the message says what cutpoint was doing and quotes qemu-img."""


def _run(args: list[str], what: str, env: Mapping[str, str] | None, umask: int | None) -> str:
    try:
        r = subprocess.run(["qemu-img", *args], capture_output=True, text=True,
                           env=dict(env) if env is not None else None, umask=-1 if umask is None else umask)
    except OSError as exc:
        raise QemuImgError(f"{what}: cannot run qemu-img ({exc.strerror or exc}); install qemu-utils") from exc
    if r.returncode != 0:
        raise QemuImgError(f"{what}: {r.stderr.strip() or f'qemu-img exited with status {r.returncode}'}")
    return r.stdout


def create(path: Path, fmt: str, size: int, *, backing: str | None = None, backing_fmt: str | None = None,
           what: str = "", env: Mapping[str, str] | None = None, umask: int | None = None) -> None:
    """A new image of ``size`` bytes; with ``backing`` an overlay of it (``-u``: the backing need not exist yet)."""
    args = ["create", "-q", "-f", fmt]
    if backing is not None:
        args += ["-u", "-b", backing, "-F", backing_fmt or "raw"]
    _run([*args, str(path), str(size)], what or f"cannot create {path}", env, umask)


def convert(src: Path, dst: Path, src_fmt: str | None, dst_fmt: str, *, what: str = "",
            env: Mapping[str, str] | None = None, umask: int | None = None) -> None:
    """``src`` (its format probed when ``src_fmt`` is None, backing chain included) written to ``dst``."""
    _run(["convert", "-q", *(["-f", src_fmt] if src_fmt else []), "-O", dst_fmt, str(src), str(dst)],
         what or f"qemu-img convert of {src} to {dst} failed", env, umask)


def resize(path: Path, fmt: str, size: int, *, shrink: bool = False, what: str = "",
           env: Mapping[str, str] | None = None) -> None:
    _run(["resize", "-q", "-f", fmt, *(["--shrink"] if shrink else []), str(path), str(size)],
         what or f"cannot resize {path} to {size} bytes", env, None)


def info(path: Path, fmt: str | None = None, *, force_share: bool = False,
         env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``qemu-img info --output=json``; ``fmt`` None lets qemu-img probe the format. Without ``force_share``
    qemu-img takes the image's lock, which a running QEMU holds (see ``locked``)."""
    out = _run(["info", "--output=json", *(["-f", fmt] if fmt else []), *(["-U"] if force_share else []),
                str(path)], f"cannot read {path}", env, None)
    try:
        value = json.loads(out)
    except ValueError as exc:
        raise QemuImgError(f"cannot read {path}: qemu-img info gave no JSON") from exc
    if not isinstance(value, dict):
        raise QemuImgError(f"cannot read {path}: qemu-img info gave no JSON object")
    return value


def virtual_size(path: Path, fmt: str, *, env: Mapping[str, str] | None = None) -> int:
    try:
        return int(info(path, fmt, env=env)["virtual-size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise QemuImgError(f"cannot read {path}: qemu-img info names no virtual size") from exc


def probe_format(path: Path, *, env: Mapping[str, str] | None = None) -> str:
    """The format QEMU sees in the image now (probed, not told)."""
    return str(info(path, env=env).get("format"))


def locked(path: Path, *, env: Mapping[str, str] | None = None) -> bool:
    """Does a running QEMU hold ``path``'s image lock? Told by structure, not by qemu-img's wording: ``info``
    that takes the lock fails while ``info -U`` (share, no lock) of the same file succeeds. An image qemu-img
    cannot read at all is not reported locked."""
    try:
        info(path, env=env)
        return False
    except QemuImgError:
        pass
    try:
        info(path, force_share=True, env=env)
    except QemuImgError:
        return False
    return True
