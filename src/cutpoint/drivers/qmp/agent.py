"""The QEMU guest agent (qemu-ga) over its own socket, for VMs reached by QMP.

``SocketAgent`` speaks qemu-ga's protocol directly over the host end of the VM's
virtio-serial channel, a unix socket QEMU listens on (``-chardev socket,server=on``). ``find_channel`` finds that
socket over QMP: the ``virtserialport`` device named ``org.qemu.guest_agent.0`` names its chardev, and
``query-chardev`` gives the chardev's socket path and whether qemu-ga has the port open in the guest.

Why the care with timeouts and resynchronisation: the channel is a byte stream with one client at a time and no
framing beyond JSON. A reply to a request that timed out arrives later, possibly on the next connection; so every
request carries an ``id`` and replies with another id are dropped, and each connection starts with
``guest-sync-delimited`` (0xFF resets the agent's parser; the reply is prefixed with 0xFF), which discards whatever
an earlier client left in the pipe. A request that timed out is still queued in the guest, which is what makes a
late thaw work: qemu-ga handles requests one by one, so a thaw sent after a hanging freeze runs right after it.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...cut.agent import AgentError, AgentTimeout, GuestAgent
from .qmp import QmpSession

AGENT_PORT = "org.qemu.guest_agent.0"
SYNC_TIMEOUT = 2.0


@dataclass
class Channel:
    """The host end of a VM's guest-agent port, as QMP describes it."""

    socket: Path | None          # None: the chardev is not a listening unix socket
    label: str
    guest_open: bool             # qemu-ga has the port open in the guest
    client_connected: bool       # some client (libvirt, another tool) is connected to the socket
    backend: str                 # query-chardev's filename, for messages


def find_channel(qmp: QmpSession) -> Channel | None:
    """The VM's guest-agent channel, or None when it has no virtio-serial port named org.qemu.guest_agent.0."""
    label = None
    for container in ("/machine/peripheral", "/machine/peripheral-anon"):
        for child in qmp.cmd("qom-list", path=container):
            if child.get("type") != "child<virtserialport>":
                continue
            path = f"{container}/{child['name']}"
            if qmp.cmd("qom-get", path=path, property="name") == AGENT_PORT:
                label = str(qmp.cmd("qom-get", path=path, property="chardev"))
                break
        if label:
            break
    if not label:
        return None
    for dev in qmp.cmd("query-chardev"):
        if dev.get("label") == label:
            return parse_backend(label, str(dev.get("filename", "")), bool(dev.get("frontend-open")))
    return Channel(None, label, False, False, "(chardev not found)")


def parse_backend(label: str, filename: str, guest_open: bool) -> Channel:
    """``disconnected:unix:/p,server=on`` (listening, no client) or ``unix:/p,server=on`` (a client is connected)."""
    connected = not filename.startswith("disconnected:")
    spec = filename.removeprefix("disconnected:")
    sock = None
    if spec.startswith("unix:") and ",server=on" in spec:
        sock = Path(spec[len("unix:"):].split(",server=on")[0].replace(",,", ","))
    return Channel(sock, label, guest_open, connected, filename)


class SocketAgent(GuestAgent):
    """qemu-ga over a unix socket: one connection, opened lazily and resynchronised with guest-sync-delimited."""

    def __init__(self, path: Path, *, hint: str = "") -> None:
        self.path = path
        self.hint = hint              # appended to 'did not answer' messages (e.g. why the channel may be dead)
        self._sock: socket.socket | None = None
        self._buf = b""
        self._ids = itertools.count(int(time.time() * 1000) % 1_000_000_000)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buf = b""

    # -- protocol ------------------------------------------------------------------------------------------------

    def _connect(self, timeout: float) -> socket.socket:
        if self._sock is not None:
            return self._sock
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(min(timeout, SYNC_TIMEOUT))
        try:
            s.connect(str(self.path))
        except OSError as exc:
            s.close()
            raise AgentError(f"cannot connect to the guest agent socket {self.path}: {exc.strerror or exc}") \
                from exc
        self._sock = s
        token = next(self._ids)
        wait = min(timeout, SYNC_TIMEOUT)
        try:
            self._send(b"\xff" + _request("guest-sync-delimited", {"id": token}))
            self._wait_sync(token, time.monotonic() + wait)
        except AgentTimeout:
            self.close()
            raise AgentTimeout(f"the guest agent on {self.path} did not answer guest-sync-delimited within "
                               f"{wait:g} s{self._hint()}") from None
        except AgentError:
            self.close()
            raise
        return s

    def _call(self, command: str, args: dict[str, Any] | None = None, *, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        self._connect(timeout)
        rid = next(self._ids)
        self._send(_request(command, args, rid))
        while True:
            try:
                msg = self._next(deadline, command)
            except AgentTimeout:
                raise AgentTimeout(f"the guest agent did not answer {command} within {timeout:g} s"
                                   f"{self._hint()}") from None
            if msg.get("id") != rid:
                continue              # a late reply to an earlier request, or a stale parse error
            if "error" in msg:
                err = msg["error"]
                raise AgentError(f"guest agent refused {command}: {err.get('class')}: {err.get('desc')}")
            return msg.get("return")

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.close()
            raise AgentError(f"lost the guest agent connection {self.path}: {exc}") from exc

    def _wait_sync(self, token: int, deadline: float) -> None:
        while True:
            i = self._buf.rfind(b"\xff")
            if i >= 0:
                self._buf = self._buf[i + 1:]
                msg = self._next(deadline, "guest-sync-delimited")
                if msg.get("return") == token:
                    return
            else:
                self._fill(deadline, "guest-sync-delimited")

    def _next(self, deadline: float, command: str) -> dict[str, Any]:
        """The next complete JSON message (replies are newline-terminated); undecodable lines are skipped."""
        while True:
            line, nl, rest = self._buf.partition(b"\n")
            if nl:
                self._buf = rest
                try:
                    msg = json.loads(line.strip(b"\xff").decode())
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    return msg
                continue
            self._fill(deadline, command)

    def _fill(self, deadline: float, command: str) -> None:
        assert self._sock is not None
        left = deadline - time.monotonic()
        if left <= 0:
            self._timeout(command, deadline)
        self._sock.settimeout(left)
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            self._timeout(command, deadline)
        except OSError as exc:
            self.close()
            raise AgentError(f"lost the guest agent connection {self.path} during {command}: {exc}") from exc
        if not data:
            self.close()
            raise AgentError(f"the guest agent socket {self.path} closed the connection during {command}")
        self._buf += data

    def _timeout(self, command: str, deadline: float) -> None:
        raise AgentTimeout(command)

    def _hint(self) -> str:
        return f" ({self.hint})" if self.hint else ""


def _request(command: str, args: dict[str, Any] | None = None, rid: int | None = None) -> bytes:
    req: dict[str, Any] = {"execute": command}
    if args:
        req["arguments"] = args
    if rid is not None:
        req["id"] = rid
    return json.dumps(req).encode() + b"\n"

