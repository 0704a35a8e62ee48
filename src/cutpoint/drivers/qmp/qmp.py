"""A short-lived, synchronous QMP session: JSON lines over the monitor's unix socket.

A QMP monitor serves one client at a time: a second client is accepted by the kernel but gets no greeting until the
first one lets go. So cutpoint holds a monitor only for the few commands it needs, always with timeouts, and when the
greeting does not come it says plainly that another client holds the monitor instead of hanging.

cutpoint speaks the protocol itself, as it does the guest agent's (``agent.py``): QEMU's greeting, one
``qmp_capabilities``, then per command one JSON line out and lines back until the reply with the command's id
(events in between are skipped). The asyncio client library used before cost ~40 ms to import and 1-2 ms of event
loop per command, more than QEMU took to answer; a backup sends about 50 commands.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import stat
import struct
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from ...errors import HypervisorError, MonitorBusyError, QmpCommandError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
GREETING_ATTEMPTS = 3
COMMAND_TIMEOUT = 30.0
MAX_MESSAGE = 10 << 20          # a longer line is not QEMU's (libvirt and the qemu.qmp library allow as much)


class Monitor(Protocol):
    """A QEMU monitor to send QMP commands to: a ``QmpSession``, or libvirt's pass-through to a domain's monitor
    (``drivers/libvirt/conn.py``). Both raise ``QmpCommandError`` (with QEMU's ``error_class``) for QEMU's errors."""

    def cmd(self, name: str, /, _timeout: float | None = None, **args: Any) -> Any: ...


def qmp_arguments(args: dict[str, Any]) -> dict[str, Any]:
    """QMP argument names with dashes are passed to ``cmd`` with underscores (``node_name`` for ``node-name``)."""
    return {k.replace("_", "-"): v for k, v in args.items()}


def reply_value(command: str, reply: Any) -> Any:
    """The ``return`` of a raw QMP reply; an ``error`` reply becomes ``QmpCommandError`` with its class."""
    if not isinstance(reply, dict):
        raise HypervisorError(f"QEMU answered {command!r} with something that is not a QMP reply")
    if "error" in reply:
        err = reply["error"] if isinstance(reply["error"], dict) else {}
        raise QmpCommandError(command, str(err.get("class", "")), str(err.get("desc", reply["error"])))
    return reply.get("return")


class QmpSession:
    """One connection to a QEMU monitor, used as a context manager and closed as soon as possible."""

    def __init__(self, socket_path: str | Path, *, connect_timeout: float = CONNECT_TIMEOUT,
                 command_timeout: float = COMMAND_TIMEOUT) -> None:
        self.path = Path(socket_path)
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._scanned = 0                   # bytes of _buf already known to hold no newline
        self._ids = itertools.count(1)

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def open(self) -> "QmpSession":
        check_socket(self.path)
        for attempt in range(GREETING_ATTEMPTS):
            try:
                return self._open_once()
            except _TornGreeting as torn:
                if attempt + 1 == GREETING_ATTEMPTS:
                    raise _connect_error(self.path, torn.exc) from torn.exc
                log.debug("QMP greeting from %s torn (%s); connecting again", self.path, torn.exc)
                time.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    def _open_once(self) -> "QmpSession":
        """One connection attempt. A greeting torn by a socket error is retried by ``open``: a QEMU whose monitor
        was just let go by another client can hand the next connection a socket that fails its first read (seen
        as EINVAL from recv with QEMU 7.2), and the connection after it works."""
        try:
            self._handshake(time.monotonic() + self.connect_timeout)
        except TimeoutError:
            self.close()
            raise MonitorBusyError(
                f"QMP monitor {self.path} accepted the connection but sent no greeting within "
                f"{self.connect_timeout:.0f} s: another client (libvirt, a QMP shell, another cutpoint run) holds it. "
                "Close that client and retry, or give QEMU a second monitor (-qmp unix:PATH,server=on,wait=off) "
                "for cutpoint") from None
        except (OSError, EOFError, _NotQmp) as exc:
            self.close()
            if type(exc) is OSError:                # not refused/reset/EOF: a torn first read, worth one more try
                raise _TornGreeting(exc) from exc
            raise _connect_error(self.path, exc) from exc
        return self

    def _handshake(self, deadline: float) -> None:
        """Connect, read QEMU's greeting and leave capabilities negotiation. Raises the cause as it is:
        ``TimeoutError`` (no greeting in time), ``ConnectionRefusedError``, ``EOFError``, another ``OSError``, or
        ``_NotQmp`` (the peer does not speak QMP)."""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                self._sock.connect(str(self.path))
                break
            except BlockingIOError:     # the listen queue is full: QEMU accepts no one while a client holds it
                if time.monotonic() >= deadline:
                    raise TimeoutError from None
                time.sleep(0.01)
        greeting = self._message(deadline)
        if not isinstance(greeting.get("QMP"), dict):
            raise _NotQmp(f"its first message is not a greeting: {_short(greeting)}")
        self._send({"execute": "qmp_capabilities"}, deadline)
        reply = self._message(deadline)
        if "return" not in reply:
            raise _NotQmp(f"qmp_capabilities was answered with {_short(reply)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buf.clear()
        self._scanned = 0

    def __enter__(self) -> "QmpSession":
        return self.open()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- commands --------------------------------------------------------------------------------------------------

    def cmd(self, name: str, /, _timeout: float | None = None, **args: Any) -> Any:
        """Run one QMP command; QEMU's error becomes ``QmpCommandError`` naming the command.

        QMP argument names with dashes are passed with underscores (``node_name`` for ``node-name``).
        """
        args = qmp_arguments(args)
        timeout = _timeout or self.command_timeout
        if self._sock is None:
            raise HypervisorError(f"QMP session to {self.path} is not open")
        rid = next(self._ids)
        request: dict[str, Any] = {"execute": name, "id": rid}
        if args:
            request["arguments"] = args
        deadline = time.monotonic() + timeout
        try:
            self._send(request, deadline)
            while True:
                reply = self._message(deadline)
                if reply.get("id") == rid:          # events, and a late reply to a command that timed out, are not
                    return reply_value(name, reply)
        except TimeoutError:
            raise HypervisorError(f"QEMU did not answer {name!r} on {self.path} within {timeout:.0f} s") from None
        except (OSError, EOFError, _NotQmp) as exc:
            raise HypervisorError(f"lost the QMP connection to {self.path} during {name!r}: {exc}; "
                                  "did the VM exit?") from exc

    def peer_pid(self) -> int | None:
        """The pid of the QEMU process serving this monitor (``SO_PEERCRED``), or None when it cannot be known.

        The kernel records the listening process's credentials on the connection, so this names the QEMU that
        created the socket; 0 (a process in another pid namespace) is reported as None.
        """
        if self._sock is None:
            return None
        try:
            raw = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
        pid = struct.unpack("3i", raw)[0]
        return pid if pid > 0 else None

    # -- the wire ----------------------------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any], deadline: float) -> None:
        assert self._sock is not None
        self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
        self._sock.sendall(json.dumps(message).encode() + b"\n")

    def _message(self, deadline: float) -> dict[str, Any]:
        """The next message: one JSON object per line. ``TimeoutError`` at the deadline, ``EOFError`` when QEMU
        hangs up, ``_NotQmp`` for anything that is not a JSON object."""
        assert self._sock is not None
        while True:
            end = self._buf.find(b"\n", self._scanned)
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[:end + 1]
                self._scanned = 0
                try:
                    msg = json.loads(line)
                except ValueError:
                    raise _NotQmp(f"it sent {line[:60]!r}, which is not JSON") from None
                if not isinstance(msg, dict):
                    raise _NotQmp(f"it sent {_short(msg)}, which is not a JSON object")
                return msg
            self._scanned = len(self._buf)
            if self._scanned > MAX_MESSAGE:
                raise _NotQmp(f"it sent a line of more than {MAX_MESSAGE} bytes")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self._sock.settimeout(left)
            data = self._sock.recv(1 << 16)
            if not data:
                raise EOFError("QEMU closed the connection")
            self._buf += data


def check_socket(path: Path) -> None:
    """Fail early, with a precise message, when the path cannot be a live QMP socket."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise HypervisorError(f"QMP socket {path} does not exist: is the VM running, and was it started with "
                              "-qmp unix:PATH,server=on,wait=off?") from None
    except PermissionError as exc:
        raise HypervisorError(f"no permission to open QMP socket {path}: run cutpoint as the VM's user or root") \
            from exc
    if not stat.S_ISSOCK(st.st_mode):
        raise HypervisorError(f"{path} is not a unix socket, so it cannot be a QEMU QMP monitor")


class _NotQmp(Exception):
    """Internal: the peer sent something that is not QMP (not JSON, not a greeting, a refused negotiation)."""


class _TornGreeting(Exception):
    """Internal: a connection whose greeting failed with a bare socket error (``QmpSession.open`` retries)."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(str(exc))
        self.exc = exc


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _connect_error(path: Path, root: BaseException) -> HypervisorError:
    if isinstance(root, ConnectionRefusedError):
        return HypervisorError(f"QMP socket {path} refuses connections: the VM that created it is no longer "
                               "running (a dead socket file); start the VM or fix the path")
    if isinstance(root, _NotQmp):
        return HypervisorError(f"{path} answered with something that is not a QMP greeting: it is not a QEMU "
                               "monitor socket")
    if isinstance(root, (EOFError, ConnectionResetError, socket.error)):
        return HypervisorError(f"{path} closed the connection without a QMP greeting "
                               f"({root.__class__.__name__}): it is not a QEMU monitor socket")
    return HypervisorError(f"cannot connect to QMP socket {path}: {root}")
