"""A QMP greeting torn by a bare socket error (CI saw ``recv`` fail with EINVAL on the first connection after another
client let the monitor go): the session connects again instead of calling a live QEMU's socket "not a monitor".
Refused connections are not retried: a dead socket file says so at once."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from cutpoint.drivers.qmp.qmp import QmpSession
from cutpoint.errors import HypervisorError
from tests.helpers import blockdev_args, make_image


def _tear_first(monkeypatch: pytest.MonkeyPatch, times: int, err: OSError) -> list[int]:
    """Fault seam: the first ``times`` handshakes fail as a torn greeting does, later ones reach QEMU."""
    real = QmpSession._handshake
    calls: list[int] = []

    def handshake(self: QmpSession, deadline: float) -> None:
        calls.append(1)
        if len(calls) <= times:
            raise err
        real(self, deadline)

    monkeypatch.setattr(QmpSession, "_handshake", handshake)
    return calls


def test_torn_greeting_connects_again(bare_qemu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "16M"), "da"))
    calls = _tear_first(monkeypatch, 1, OSError(errno.EINVAL, "Invalid argument"))
    with QmpSession(vm.qmp) as s:
        assert s.cmd("query-status")["status"] == "prelaunch"
    assert len(calls) == 2


def test_greeting_torn_every_time_is_one_error(bare_qemu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "16M"), "da"))
    calls = _tear_first(monkeypatch, 99, OSError(errno.EINVAL, "Invalid argument"))
    with pytest.raises(HypervisorError):
        QmpSession(vm.qmp).open()
    assert len(calls) == 3


def test_refused_connection_is_not_retried(bare_qemu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "16M"), "da"))
    calls = _tear_first(monkeypatch, 99, ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))
    with pytest.raises(HypervisorError, match="refuses connections"):
        QmpSession(vm.qmp).open()
    assert len(calls) == 1
