"""The guest agent (qemu-ga) as the app-consistent procedure sees it: ping, freeze, thaw, freeze status, and running
a program in the guest (pre/post scripts). A driver hands one out (``DriverSession.agent()``); the transports are
the drivers' (``drivers/qmp/agent.py``: a unix socket to qemu-ga; ``drivers/libvirt/agent.py``: libvirt's relay).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

from ..errors import HypervisorError


class AgentError(HypervisorError):
    """The guest agent is missing, did not answer, or answered with an error."""


class AgentTimeout(AgentError):
    """The guest agent did not answer in time (the request may still run in the guest)."""


@dataclass
class ExecResult:
    exitcode: int | None          # None: killed by a signal
    signal: int | None
    out: str
    err: str


class GuestAgent:
    """What the app-consistent procedure needs from a guest agent. Every call has a hard timeout.

    The commands are the same whatever carries them; a transport (a unix socket to qemu-ga, or libvirt's agent
    relay) implements ``_call`` only."""

    def _call(self, command: str, args: dict[str, Any] | None = None, *, timeout: float) -> Any:
        """Send one qemu-ga command and return its ``return`` value; AgentError/AgentTimeout otherwise."""
        raise NotImplementedError(f"{type(self).__name__} has no transport for {command}")

    def ping(self, timeout: float) -> None:
        """Raise AgentError unless the agent answers within ``timeout`` seconds."""
        self._call("guest-ping", timeout=timeout)

    def freeze(self, timeout: float) -> int:
        """Freeze the guest's filesystems; return how many were frozen."""
        return int(self._call("guest-fsfreeze-freeze", timeout=timeout))

    def thaw(self, timeout: float) -> int:
        """Thaw the guest's filesystems; return how many were thawed (0 when none was frozen)."""
        return int(self._call("guest-fsfreeze-thaw", timeout=timeout))

    def status(self, timeout: float) -> str:
        """``"thawed"`` or ``"frozen"``."""
        return str(self._call("guest-fsfreeze-status", timeout=timeout))

    def exec(self, path: str, args: list[str], timeout: float) -> ExecResult:
        """Run ``path`` in the guest and wait for it; AgentTimeout if it is still running after ``timeout``."""
        deadline = time.monotonic() + timeout
        pid = self._call("guest-exec", {"path": path, "arg": args, "capture-output": True}, timeout=timeout)["pid"]
        while True:
            st = self._call("guest-exec-status", {"pid": pid}, timeout=max(1.0, deadline - time.monotonic()))
            if st.get("exited"):
                return ExecResult(st.get("exitcode"), st.get("signal"), _b64(st.get("out-data")),
                                  _b64(st.get("err-data")))
            if time.monotonic() > deadline:
                raise AgentTimeout(f"{path} (guest pid {pid}) was still running after {timeout:g} s")
            time.sleep(0.05)

    def close(self) -> None:
        """Let go of the channel (a socket agent serves one client at a time)."""


def _b64(data: str | None) -> str:
    return base64.b64decode(data).decode(errors="replace") if data else ""
