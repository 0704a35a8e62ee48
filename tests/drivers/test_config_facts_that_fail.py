"""A fact of the VM configuration QEMU refuses, or answers without, is left out of the captured config and named in
its warnings (the backup goes on; a restore then says what it had to guess)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cutpoint.drivers.qmp.config import capture
from cutpoint.drivers.qmp.qmp import QmpSession
from cutpoint.errors import QmpCommandError
from tests.helpers import blockdev_args, make_image


def test_a_refused_or_malformed_fact_becomes_a_warning(bare_qemu, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "16M"), "da"))
    real = QmpSession.cmd

    def cmd(self: QmpSession, name: str, /, _timeout: float | None = None, **args: Any) -> Any:
        if name == "query-memory-size-summary":          # fault seam: QEMU refuses one fact ...
            raise QmpCommandError(name, "CommandNotFound", "The command query-memory-size-summary has not been found")
        if name == "query-target":                       # ... and answers another without the field
            return {}
        return real(self, name, _timeout, **args)
    monkeypatch.setattr(QmpSession, "cmd", cmd)
    with QmpSession(vm.qmp) as s:
        cfg = capture(s, use_proc=False)
    facts = cfg["qmp"]
    assert "memory" not in facts and "arch" not in facts
    assert facts["cpus"] == 1 and [d["name"] for d in facts["disks"]] == ["da"]     # the others are kept
    memory = [w for w in cfg["warnings"] if "no memory" in w]
    arch = [w for w in cfg["warnings"] if "no arch" in w]
    assert len(memory) == 1 and "CommandNotFound" in memory[0], cfg["warnings"]
    assert len(arch) == 1 and "query-target" in arch[0], cfg["warnings"]
