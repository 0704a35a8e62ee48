"""A copy of the vault (an off-site sync, a stolen backup disk) must not carry the API credential: the token lives
in the host's state directory (root-owned, 0700), keyed by the vault's id; an old in-vault token is moved out on
first use after the upgrade, and one planted in the vault by someone else is never adopted."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.helpers import cutpoint


def _vault() -> Path:
    return Path(os.environ["CUTPOINT_VAULT"])


def _state() -> Path:
    return Path(os.environ["CUTPOINT_STATE"])


def _everything(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_the_token_is_not_in_the_vault(tmp_path: Path) -> None:
    token = cutpoint("serve", "--show-token", check=True).out.strip()
    assert len(token) >= 32
    assert not (_vault() / "api-token").exists()
    copy = tmp_path / "copy"
    shutil.copytree(_vault(), copy)
    assert token.encode() not in _everything(copy)             # the copy carries no credential
    vault_id = json.loads((_vault() / "config.json").read_text())["id"]
    files = [p for p in _state().rglob("*") if p.is_file()]
    assert [p.name for p in files] == [f"{vault_id}.operator"] and files[0].read_text().strip() == token
    assert _state().stat().st_mode & 0o777 == 0o700 and files[0].parent.stat().st_mode & 0o777 == 0o700
    assert files[0].stat().st_mode & 0o777 == 0o600
    assert cutpoint("serve", "--show-token", check=True).out.strip() == token
    rotated = cutpoint("serve", "--rotate-token", check=True).out.strip()
    assert rotated != token and files[0].read_text().strip() == rotated


def test_an_old_in_vault_token_is_moved_out_on_first_start() -> None:
    cutpoint("vault", "init", check=True)
    old = _vault() / "api-token"
    legacy = "legacy-token-" + "x" * 32
    fd = os.open(old, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, (legacy + "\n").encode())
    os.close(fd)
    assert cutpoint("serve", "--show-token", check=True).out.strip() == legacy   # clients keep working
    assert not old.exists()
    assert legacy.encode() not in _everything(_vault())


def test_a_token_planted_in_the_vault_by_another_user_is_not_adopted() -> None:
    cutpoint("vault", "init", check=True)
    planted = _vault() / "api-token"
    planted.write_text("attacker-chosen-token-" + "y" * 20 + "\n")
    os.chown(planted, 65534, 65534)                            # nobody's file, not ours
    token = cutpoint("serve", "--show-token", check=True).out.strip()
    assert not token.startswith("attacker") and len(token) >= 32
    assert not planted.exists()


def test_a_state_directory_open_to_others_is_closed(tmp_path: Path) -> None:
    _state().mkdir(mode=0o755)
    os.chmod(_state(), 0o777)
    cutpoint("serve", "--show-token", check=True)
    assert _state().stat().st_mode & 0o777 == 0o700
