"""Shared fixtures: isolated vault/work/lab directories, a bare paused QEMU, and a CLI runner.

A *bare* QEMU is started with ``-S`` (no guest code runs), with disks prepared by ``qemu-io``: it answers QMP, has
real block nodes and serves real NBD, which is all most backup and cleanup tests need, in a fraction of a boot.
Tests that need a guest writing under load use the lab (``cutpoint.lab.vm``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cutpoint.restore import sandbox
from tests.helpers import listening

# the real S3 server (SeaweedFS) and its buckets, for every test package that needs one (started on first use)
pytest_plugins = ["tests.vault.s3fixtures"]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_cache() -> Iterator[Path]:
    """The user's guest-image cache, shared by all tests and runs: the initramfs is built once per input change."""
    from cutpoint.paths import cache_home

    d = Path(os.environ.get("CUTPOINT_TEST_CACHE") or cache_home())
    d.mkdir(parents=True, exist_ok=True)
    yield d


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "no_vault: the test's CUTPOINT_VAULT does not exist yet (tests of init)")
    config.addinivalue_line("markers", "both_formats: run the test on a format v4 vault and on a v3 one (made as the "
                            "previous release made them), ids v4/v3")
    if os.environ.get("CUTPOINT_FILES_SANDBOX") is None and sandbox.unavailable():
        os.environ["CUTPOINT_FILES_SANDBOX"] = "off"    # a chrooted host: file tests run the tools unconfined


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_formats") is not None:
        metafunc.fixturenames.append("vault_format")
        metafunc.parametrize("vault_format", [4, 3], ids=["v4", "v3"])


def pytest_report_header(config: pytest.Config) -> str | None:
    why = sandbox.unavailable()
    return (f"filesystem-tool sandbox unavailable here ({why}): file tests run the tools unconfined "
            "(CUTPOINT_FILES_SANDBOX=off); the sandbox's own test is skipped") if why else None


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_cache: Path,
             request: pytest.FixtureRequest) -> Iterator[Path]:
    """Every test gets its own vault (created unencrypted, as 'cutpoint vault init --no-encrypt' does; no command
    creates one implicitly), host state, lab and work directories (short paths: unix sockets max 107 bytes)."""
    short = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
    monkeypatch.setenv("CUTPOINT_VAULT", str(tmp_path / "vault"))
    monkeypatch.setenv("CUTPOINT_STATE", str(tmp_path / "host-state"))
    monkeypatch.setenv("CUTPOINT_WORK", str(short / "work"))
    monkeypatch.setenv("CUTPOINT_LAB", str(short / "lab"))
    monkeypatch.setenv("CUTPOINT_CACHE", str(shared_cache))
    monkeypatch.setenv("CUTPOINT_RESTORE_ROOT", str(short / "restore"))   # cutpoint serve's, never /var/lib here
    monkeypatch.setenv("CUTPOINT_VMS", str(short / "vms"))      # restored VMs: never ~/.local/share/cutpoint/vms
    if request.node.get_closest_marker("no_vault") is None:
        from cutpoint.vault.vault import Vault
        callspec = getattr(request.node, "callspec", None)
        Vault.create(tmp_path / "vault", version=callspec.params.get("vault_format", 4) if callspec else 4)
    yield short
    _stop_lab_vms(short / "lab")
    shutil.rmtree(short, ignore_errors=True)


def _stop_lab_vms(lab: Path) -> None:
    for pidfile in lab.glob("*/qemu.pid"):
        try:
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
        except (ValueError, ProcessLookupError, OSError):
            pass


@dataclass
class BareVM:
    qmp: Path
    proc: subprocess.Popen[bytes]
    dir: Path

    def quit(self) -> None:
        """Clean shutdown over QMP (persistent bitmaps are written to qcow2 images)."""
        from cutpoint.errors import HypervisorError
        from cutpoint.drivers.qmp.qmp import QmpSession

        try:
            with QmpSession(self.qmp) as s:
                s.cmd("quit")
        except HypervisorError:
            pass  # QEMU closes the monitor as it exits
        self.proc.wait(10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def bare_qemu(isolated: Path) -> Iterator[Callable[..., BareVM]]:
    """Factory: ``bare_qemu(args)`` starts a paused QEMU with extra ``args`` and waits for its QMP socket."""
    vms: list[BareVM] = []

    def start(args: list[str], name: str = "bare") -> BareVM:
        d = isolated / name
        d.mkdir(exist_ok=True)
        qmp = d / "qmp.sock"
        qmp.unlink(missing_ok=True)       # left by a killed predecessor
        proc = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-m", "64", "-display", "none", "-S",
             "-nodefaults", "-qmp", f"unix:{qmp},server=on,wait=off", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=d)
        vm = BareVM(qmp, proc, d)
        vms.append(vm)
        deadline = time.monotonic() + 20
        while not listening(qmp):       # the file appears at bind(), before listen(): a connect then is refused
            if proc.poll() is not None:
                raise RuntimeError(f"qemu exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            if time.monotonic() > deadline:
                raise RuntimeError("qemu did not create its QMP socket")
            time.sleep(0.02)
        return vm

    yield start
    for vm in vms:
        vm.kill()
