"""The few QMP exchanges the lab itself needs (node names after start, quit on down), over a plain socket.

The real QMP driver lives in ``cutpoint.hypervisor``; the lab stays independent of it so that lab VMs can be set up
and torn down even while that driver is what is under test.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from ..errors import HypervisorError


class QmpLite:
    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
            self.file = self.sock.makefile("rwb")
            self._read()  # greeting; a monitor held by another client sends none and times out here
            self.execute("qmp_capabilities")
        except (OSError, ValueError, HypervisorError) as e:
            self.sock.close()
            raise HypervisorError(f"cannot talk QMP on {path}: {e or type(e).__name__}") from e

    def _read(self) -> dict[str, Any]:
        while True:
            line = self.file.readline()
            if not line:
                raise HypervisorError("QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, command: str, **arguments: Any) -> Any:
        req: dict[str, Any] = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        self.file.write(json.dumps(req).encode() + b"\n")
        self.file.flush()
        reply = self._read()
        if "error" in reply:
            raise HypervisorError(f"QMP {command}: {reply['error'].get('desc')}")
        return reply.get("return")

    def close(self) -> None:
        try:
            self.file.close()
        finally:
            self.sock.close()

    def __enter__(self) -> "QmpLite":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
