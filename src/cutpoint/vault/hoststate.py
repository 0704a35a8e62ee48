"""What this host remembers about the vaults it uses, kept outside them (``paths.state_home()``, a 0700 directory
owned by the user cutpoint runs as, root in production):

- ``known-vaults.json``: per vault path, the vault id, the key fingerprint, whether it is encrypted, the newest
  point this host committed (or saw at first use) per VM, and the fingerprint of its guard once seen (§21);
- ``keys/<fingerprint>.json``: the authentication keys of the unencrypted vaults this host created or imported.

At every open the vault is compared with the record (docs/format.md §8): another id at the same path
is *swapped*; a key gone or changed, or encrypted turned unencrypted, is *downgraded*; a recorded point missing
from the catalog is *rolled back*; a guard gone or changed is *unguarded*. A first open records the vault as it is (trust on first use). Writes into a
vault with any finding are refused, reads warn, except a downgrade, which is refused for reads too (nothing read
could be authenticated); ``cutpoint vault trust`` records the vault as it is now, deliberately.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import AuthError, IntegrityError, VaultError
from ..paths import state_home
from . import location
from .crypto import Keys, auth_key_copies, auth_key_doc, auth_key_from
from .fsutil import write_atomic

KNOWN = "known-vaults.json"


class VaultChangedError(IntegrityError):
    """The vault at a path is not the one this host remembers there (swapped, downgraded or rolled back)."""


@dataclass
class Finding:
    kind: str                   # 'swapped' | 'downgraded' | 'rolled back' | 'unguarded'
    detail: str
    missing: list[str] = field(default_factory=list)

    def message(self, root: Path) -> str:
        return (f"vault {root} was {self.kind}: {self.detail}; if that was deliberate, accept the vault as it is "
                f"now with 'cutpoint vault trust --vault {root}'")


@dataclass
class Seen:
    """The vault as it is now, to compare with the record."""
    id: str
    fingerprint: str | None
    encrypted: bool
    newest: dict[str, str]      # vm -> newest point in the catalog
    guard: str | None = None    # the config's guard fingerprint (docs/format.md §21)


def state_dir() -> Path:
    """The host state directory, created 0700; refused when another user owns it or others can write it."""
    d = state_home()
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = d.stat()
    except OSError as exc:
        raise VaultError(f"cannot create the host state directory {d}: {exc.strerror or exc}; set "
                         "CUTPOINT_STATE to a directory of your own") from exc
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise VaultError(f"host state directory {d} is not this user's alone (owner uid {st.st_uid}, mode "
                         f"{stat.S_IMODE(st.st_mode):o}); 'chown' it and 'chmod 700' it")
    return d


@contextmanager
def _locked() -> Iterator[dict[str, Any]]:
    """The known-vaults document under an exclusive lock; written back (atomically) when the block ends."""
    d = state_dir()
    fd = os.open(d / (KNOWN + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        doc = _load(d)
        before = json.dumps(doc, sort_keys=True)
        yield doc
        if json.dumps(doc, sort_keys=True) != before:
            write_atomic(d / KNOWN, json.dumps(doc, indent=1, sort_keys=True).encode())
    finally:
        os.close(fd)


def _load(d: Path) -> dict[str, Any]:
    try:
        doc = json.loads((d / KNOWN).read_text())
    except FileNotFoundError:
        return {"format": "cutpoint-known-vaults", "version": 1, "vaults": {}}
    except (OSError, ValueError) as exc:
        raise VaultError(f"host state {d / KNOWN} is unreadable ({exc}); move it aside to start afresh (this "
                         "host then forgets which vaults it used)") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("vaults"), dict):
        raise VaultError(f"host state {d / KNOWN} is damaged; move it aside to start afresh")
    return doc


def _key(root: Path) -> str:
    return str(root.absolute())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _record(seen: Seen) -> dict[str, Any]:
    rec = {"id": seen.id, "key_fingerprint": seen.fingerprint, "encrypted": seen.encrypted,
           "points": dict(seen.newest), "recorded": _now()}
    if seen.guard is not None:
        rec["guard"] = seen.guard
    return rec


def check(root: Path, seen: Seen, points_of: Any) -> Finding | None:
    """Compare the vault with the record (recording it on first use). ``points_of(vm)`` lists a VM's point ids."""
    with _locked() as doc:
        rec = doc["vaults"].get(_key(root))
        if rec is None:
            doc["vaults"][_key(root)] = _record(seen)
            return _lost_key(seen)
    if rec.get("id") != seen.id:
        return Finding("swapped", f"it is another vault (id {seen.id}) than the one this host used there "
                                  f"(id {rec.get('id')})")
    fp = rec.get("key_fingerprint")
    if (fp and seen.fingerprint != fp) or (rec.get("encrypted") and not seen.encrypted):
        now = ("encrypted" if seen.encrypted else "not encrypted") + (
            f", key {seen.fingerprint}" if seen.fingerprint else ", without an authentication key")
        was = ("encrypted" if rec.get("encrypted") else "authenticated") + f" with key {fp}"
        return Finding("downgraded", f"this host knew it {was}, now it is {now}")
    lost = _lost_key(seen)
    if lost:
        return lost
    guard = rec.get("guard")
    if guard and seen.guard != guard:
        return Finding("unguarded", f"this host knew it guarded by key {guard}, now it is "
                                    + (f"guarded by key {seen.guard}" if seen.guard else "not guarded")
                                    + " (a config re-sealed without its guard, or an older copy of it)")
    if seen.guard and not guard:
        guarded(root, seen.guard)            # a guard added (here or elsewhere): remembered from now on
    missing = []
    for vm, pid in sorted(dict(rec.get("points") or {}).items()):
        if pid not in set(points_of(vm)):
            missing.append(f"point {pid} of VM {vm!r} (newest now: {seen.newest.get(vm) or 'none'})")
    if missing:
        return Finding("rolled back", "points this host committed are gone: " + "; ".join(missing[:3]), missing)
    return None


def _lost_key(seen: Seen) -> Finding | None:
    """A vault that claims no key while this host holds an authentication key for its id was stripped of it."""
    if seen.fingerprint is not None:
        return None
    for fp in held_keys(seen.id):
        return Finding("downgraded", f"this host holds its authentication key {fp}, but it now claims to be an "
                                     "unauthenticated (format v2) vault")
    return None


def trust(root: Path, seen: Seen) -> None:
    """Record the vault as it is now (``cutpoint vault trust``); an authentication key it no longer uses is retired."""
    with _locked() as doc:
        doc["vaults"][_key(root)] = _record(seen)
    if seen.fingerprint is None:
        for fp in held_keys(seen.id):
            p = state_dir() / "keys" / f"{fp}.json"
            p.rename(p.with_name(f"{fp}.json.retired"))


def guarded(root: Path, fingerprint: str) -> None:
    """The vault at ``root`` is guarded by ``fingerprint`` (set or replaced with approval, or first seen)."""
    with _locked() as doc:
        rec = doc["vaults"].get(_key(root))
        if rec is not None:
            rec["guard"] = fingerprint


def committed(root: Path, vm: str, point: str) -> None:
    """A point this host has just committed: from now on its absence means the vault was rolled back."""
    with _locked() as doc:
        rec = doc["vaults"].get(_key(root))
        if rec is not None:
            # The newest by commit order (the VM lock orders a VM's commits), not by id: two points of one second
            # sort by their random suffix, and keeping the "larger" one would hide the loss of the newer.
            rec.setdefault("points", {})[vm] = point


def forgotten(root: Path, vm: str, gone: list[str], newest: str | None) -> None:
    """Points this host pruned: their absence is no rollback."""
    with _locked() as doc:
        rec = doc["vaults"].get(_key(root))
        pts = rec.setdefault("points", {}) if rec is not None else {}
        if pts.get(vm) in gone:
            if newest:
                pts[vm] = newest
            else:
                pts.pop(vm)


# -- authentication keys of unencrypted vaults ---------------------------------------------------------------------

def save_auth_key(keys: Keys, vault_id: str) -> Path:
    """Keep ``keys`` for vault ``vault_id``. This host already holding the same key for another vault (a copy made
    with 'vault init --copy-of', or its source) adds the id to the key's list of copies instead of replacing it."""
    d = state_dir() / "keys"
    d.mkdir(mode=0o700, exist_ok=True)
    path = d / f"{keys.fingerprint}.json"
    primary, copies = vault_id, []
    try:
        doc = json.loads(path.read_text())
        old, vid = auth_key_from(doc, str(path))
        if old == keys:
            primary, copies = vid, auth_key_copies(doc, str(path))
            if vault_id != vid and vault_id not in copies:
                copies.append(vault_id)
    except (OSError, ValueError, VaultError):
        pass                                             # none (or unusable): written afresh
    write_atomic(path, json.dumps(auth_key_doc(keys, primary, copies), indent=1).encode())     # mkstemp: 0600
    return path


def auth_key_path(fingerprint: str) -> Path:
    return state_dir() / "keys" / f"{fingerprint}.json"


def load_auth_key(fingerprint: str, vault_id: str, root: Path, key_file: Path | None = None) -> Keys:
    """The authentication key ``fingerprint`` of an unencrypted vault: from ``key_file`` or this host's state."""
    path = key_file or auth_key_path(fingerprint)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise AuthError(f"vault {location.describe(root)} is authenticated with key {fingerprint}, which this host "
                        "does not hold "
                        f"({path}); import the key exported on the host that created the vault with 'cutpoint "
                        "vault key import FILE' (or pass --key-file FILE)") from None
    except (OSError, ValueError) as exc:
        raise VaultError(f"authentication key file {path} is unreadable ({exc})") from exc
    keys, vid = auth_key_from(doc, str(path))
    if keys.fingerprint == fingerprint and vid != vault_id and vault_id not in auth_key_copies(doc, str(path)):
        raise IntegrityError(f"{root / 'config.json'} was altered: its vault id {vault_id!r} is not the one its "
                             f"key {fingerprint} belongs to; restore config.json from a copy")
    if keys.fingerprint != fingerprint:
        raise AuthError(f"key file {path} belongs to another vault (key {keys.fingerprint}); vault "
                        f"{location.describe(root)} needs "
                        f"key {fingerprint}")
    return keys


def held_keys(vault_id: str) -> list[str]:
    """Fingerprints of the authentication keys this host holds for vault ``vault_id``."""
    d = state_home() / "keys"
    out = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            doc = json.loads(p.read_text())
            _, vid = auth_key_from(doc, str(p))
            copies = auth_key_copies(doc, str(p))
        except (OSError, ValueError, VaultError):
            continue
        if vid == vault_id or vault_id in copies:
            out.append(p.stem)
    return out
