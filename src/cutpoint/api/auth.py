"""API tokens: one random bearer token per vault and role, kept in the host's state directory, never in the vault.

A vault is copied, synced off-site and carried on disks; a credential inside it would travel with it. So tokens live
in ``state_home()/api-tokens/<vault id>.<role>`` (directory 0700, files 0600, ``$CUTPOINT_STATE`` or
``/var/lib/cutpoint``): per vault, so one host can serve several vaults with separate credentials, and keyed by the
vault's id so a moved vault keeps its token on the same host. Roles: ``operator`` (everything) and ``read-only``
(GET only; see ``app.py``). A token found at the old place, ``VAULT/api-token``, is moved out on first use when it
is ours (a regular file owned by this user, not readable by others); one planted there by someone else is deleted
and never adopted.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

from ..errors import VaultError
from ..paths import state_home, work_home
from ..vault.config import read_config

ROLES = ("operator", "read-only")
OPERATOR, READ_ONLY = ROLES
LEGACY_FILE = "api-token"
_ID = re.compile(r"^[0-9a-f]{8,64}$")
_MAX = 4096


def token_dir() -> Path:
    """The directory of API tokens, created 0700 (and closed again if someone opened it)."""
    base = state_home()
    d = base / "api-tokens"
    for p in (base, d):
        try:
            p.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = p.lstat()
        except OSError as exc:
            raise VaultError(f"cannot create the state directory {p}: {exc.strerror or exc}; set "
                             "CUTPOINT_STATE to a directory this user owns") from exc
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise VaultError(f"state directory {p} is not a directory owned by this user; remove it or set "
                             "CUTPOINT_STATE to another")
        passage = st.st_mode & 0o011 if p == base and _holds_work_root(base) else 0
        if st.st_mode & 0o077 & ~passage:
            os.chmod(p, 0o700 | passage)
    return d


def _holds_work_root(base: Path) -> bool:
    """The default work root, /var/lib/cutpoint/work, lies in the state directory, and libvirt's QEMU (another
    user) must pass through to its scratch (``workdir.share_with`` adds search permission): keep that, nothing more."""
    return Path(os.path.realpath(work_home())).is_relative_to(os.path.realpath(base))


def vault_id(vault_root: Path) -> str:
    vid = read_config(vault_root).get("id")
    if not isinstance(vid, str) or not _ID.match(vid):
        raise VaultError(f"vault {vault_root} has no usable id in config.json ({vid!r}); cannot key its API token")
    return vid


def token_path(vault_root: Path, role: str = OPERATOR) -> Path:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    return token_dir() / f"{vault_id(vault_root)}.{role}"


def load_or_create(vault_root: Path, *, role: str = OPERATOR, rotate: bool = False) -> str:
    """The ``role`` token of the vault at ``vault_root``, created on first use (``rotate``: replaced)."""
    path = token_path(vault_root, role)
    migrate(vault_root, path if role == OPERATOR else token_path(vault_root, OPERATOR))
    if rotate:
        path.unlink(missing_ok=True)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    return _create(path, secrets.token_urlsafe(32))


def tokens(vault_root: Path) -> dict[str, str]:
    """Every role's token (each created on first use): what the server accepts."""
    return {role: load_or_create(vault_root, role=role) for role in ROLES}


def migrate(vault_root: Path, operator_path: Path) -> None:
    """Move ``VAULT/api-token`` (before tokens left the vault) out to the state directory, then delete it."""
    old = vault_root / LEGACY_FILE
    try:
        fd = os.open(old, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    except OSError:
        fd = -1                                  # a symlink or worse: never read, just removed
    legacy = None
    if fd >= 0:
        try:
            st = os.fstat(fd)
            ours = stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077
            if ours and st.st_size <= _MAX:
                legacy = os.read(fd, _MAX).decode(errors="replace").strip()
        finally:
            os.close(fd)
    if legacy and len(legacy) >= 16 and legacy.isprintable() and " " not in legacy and not operator_path.exists():
        _create(operator_path, legacy)
    try:
        old.unlink()
    except OSError as exc:
        raise VaultError(f"cannot remove the old API token {old}: {exc.strerror or exc}; remove it by hand") from exc


def _create(path: Path, token: str) -> str:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
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
    st = path.lstat()
    if not stat.S_ISREG(st.st_mode):
        raise VaultError(f"API token {path} is not a regular file; remove it and run 'cutpoint serve --rotate-token'")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        os.chmod(path, 0o600)              # someone loosened it: a token readable by others is no secret
    token = path.read_text().strip()
    if len(token) < 16:
        raise VaultError(f"API token file {path} is damaged; replace it with 'cutpoint serve --rotate-token'")
    return token


def role_of(header: str | None, accepted: dict[str, str]) -> str | None:
    """The role whose token ``header`` (``Bearer <token>``) carries, or None (each compared in constant time)."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    got = value.strip().encode()
    found = None
    for role, token in accepted.items():
        if secrets.compare_digest(got, token.encode()):
            found = role
    return found


def check(header: str | None, token: str) -> bool:
    """True if ``header`` is ``Bearer <token>`` (compared in constant time)."""
    return role_of(header, {OPERATOR: token}) is not None
