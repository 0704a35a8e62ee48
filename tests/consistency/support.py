"""Helpers for the consistency tests: the CLI in-process, shell in a lab guest through its agent, ext4 superblocks."""

from __future__ import annotations

import contextlib
import io
import subprocess
import time
from pathlib import Path

from tests.helpers import Run

from cutpoint.cut.agent import AgentError, ExecResult
from cutpoint.drivers.qmp.agent import SocketAgent
from cutpoint.lab.vm import LabVM


def guest_sh(vm: LabVM, script: str, timeout: float = 10) -> ExecResult:
    assert vm.agent_socket is not None
    a = SocketAgent(vm.agent_socket)
    try:
        return a.exec("/bin/sh", ["-c", script], timeout)
    finally:
        a.close()


def freeze_status(vm: LabVM, within: float = 15) -> str:
    """The guest's freeze status, retrying while the agent is busy or stopped (up to ``within`` seconds)."""
    assert vm.agent_socket is not None
    deadline = time.monotonic() + within
    while True:
        a = SocketAgent(vm.agent_socket)
        try:
            return a.status(2)
        except AgentError:
            if time.monotonic() > deadline:
                raise
        finally:
            a.close()


def keeps_writing(vm: LabVM, seconds: float = 3.0) -> bool:
    """Did the guest's workload report progress past where it was ``seconds`` ago?"""
    before = vm.last_seq() or 0
    deadline = time.monotonic() + seconds + 10
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if (vm.last_seq() or 0) > before:
            return True
    return False


def superblock(img: Path) -> str:
    return subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True, check=True).stdout


def features(img: Path) -> list[str]:
    line = next(ln for ln in superblock(img).splitlines() if ln.startswith("Filesystem features:"))
    return line.split(":", 1)[1].split()


def cli(*args: str, check: bool = False) -> Run:
    """The real CLI entry point, run in this process: the same argument parsing, error lines and exit codes as
    ``tests.helpers.cutpoint`` without a Python start per call (the isolated environment is already set)."""
    from cutpoint.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    r = Run(code, out.getvalue(), err.getvalue())
    if check and r.code != 0:
        raise AssertionError(f"cutpoint {' '.join(args)} failed ({r.code}): {r.err}")
    return r
