"""A --vault that is missing or empty (a NAS not mounted: the empty mount point) is never made into a new vault by
a command that only means to use one: every command stops with one line naming 'vault init', and nothing is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import cutpoint
from tests.vault.util import one_line_error, tree


COMMANDS = [["backup", "web"], ["vm", "add", "web", "--qmp", "/run/web.qmp"], ["points"], ["vm", "list"],
            ["verify"], ["gc"], ["report"], ["policy", "list"], ["jobs"]]


@pytest.mark.parametrize("state", ["missing", "empty"])
@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_no_vault_is_created_implicitly(tmp_path: Path, state: str, cmd: list[str]) -> None:
    mnt = tmp_path / "mnt" / "nas"
    if state == "empty":
        mnt.mkdir(parents=True)
    r = cutpoint(*cmd, "--vault", str(mnt))
    assert r.code in (3, 5), (r.code, r.err)
    one_line_error(r, r.code, "vault init", str(mnt))
    if state == "missing":
        assert not mnt.exists() and not mnt.parent.exists()
    else:
        assert list(mnt.iterdir()) == [] and tree(mnt) == {}


def test_default_vault_missing_names_vault_init(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUTPOINT_VAULT", str(tmp_path / "nothing-here"))
    one_line_error(cutpoint("backup", "web"), 3, "vault init")
    assert not (tmp_path / "nothing-here").exists()
