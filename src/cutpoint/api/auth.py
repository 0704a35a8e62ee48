"""The API token: one random bearer token per vault, in ``VAULT/api-token`` (mode 0600).

Stored in the vault because the vault is what the token guards, and whoever can read the vault's files can read its
data anyway; 0600 keeps other local users (the API listens on loopback, reachable by every local user) out. The
token is created on first use and printed by ``cutpoint serve --show-token``; ``--rotate-token`` replaces it.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from ..errors import VaultError

TOKEN_FILE = "api-token"


def token_path(vault_root: Path) -> Path:
    return vault_root / TOKEN_FILE


def load_or_create(vault_root: Path, *, rotate: bool = False) -> str:
    path = token_path(vault_root)
    if rotate:
        path.unlink(missing_ok=True)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".tmp-{TOKEN_FILE}-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)                 # fails if another process created one meanwhile: use theirs
    except FileExistsError:
        return _read(path)
    except OSError as exc:
        raise VaultError(f"cannot create the API token {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return token


def _read(path: Path) -> str:
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        os.chmod(path, 0o600)              # someone loosened it: a token readable by others is no secret
    token = path.read_text().strip()
    if len(token) < 16:
        raise VaultError(f"API token file {path} is damaged; replace it with 'cutpoint serve --rotate-token'")
    return token


def check(header: str | None, token: str) -> bool:
    """True if ``header`` is ``Bearer <token>`` (compared in constant time)."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(value.strip().encode(), token.encode())
