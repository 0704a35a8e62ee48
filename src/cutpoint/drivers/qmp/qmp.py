"""A short-lived, synchronous QMP session on top of the ``qemu.qmp`` library.

A QMP monitor serves one client at a time: a second client is accepted by the kernel but gets no greeting until the
first one lets go. So cutpoint holds a monitor only for the few commands it needs, always with timeouts, and when the
greeting does not come it says plainly that another client holds the monitor instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import struct
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from qemu.qmp import ConnectError, ExecuteError, QMPClient, QMPError

from ...errors import HypervisorError, MonitorBusyError, QmpCommandError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
GREETING_ATTEMPTS = 3
COMMAND_TIMEOUT = 30.0


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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: QMPClient | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def open(self) -> "QmpSession":
        check_socket(self.path)
        for attempt in range(GREETING_ATTEMPTS):
            try:
                return self._open_once()
            except _TornGreeting as torn:
                if attempt + 1 == GREETING_ATTEMPTS:
                    raise _connect_error(self.path, torn.exc) from torn.exc
                log.debug("QMP greeting from %s torn (%s); connecting again", self.path, torn.exc.exc)
                time.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    def _open_once(self) -> "QmpSession":
        """One connection attempt. A greeting torn by a socket error is retried by ``open``: a QEMU whose monitor
        was just let go by another client can hand the next connection a socket that fails its first read (seen
        as EINVAL from recv with QEMU 7.2), and the connection after it works."""
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient("cutpoint")
        try:
            self._run(self._client.connect(str(self.path)), self.connect_timeout)
        except asyncio.TimeoutError:
            self.close()
            raise MonitorBusyError(
                f"QMP monitor {self.path} accepted the connection but sent no greeting within "
                f"{self.connect_timeout:.0f} s: another client (libvirt, a QMP shell, another cutpoint run) holds it. "
                "Close that client and retry, or give QEMU a second monitor (-qmp unix:PATH,server=on,wait=off) "
                "for cutpoint") from None
        except ConnectError as exc:
            self.close()
            if type(exc.exc) is OSError:            # not refused/reset/EOF: a torn first read, worth one more try
                raise _TornGreeting(exc) from exc
            raise _connect_error(self.path, exc) from exc
        return self

    def close(self) -> None:
        if self._client is not None and self._loop is not None:
            try:
                self._run(self._client.disconnect(), 5.0)
            except (QMPError, OSError, EOFError, asyncio.TimeoutError) as exc:  # already gone: nothing to release
                log.debug("QMP disconnect from %s: %s", self.path, exc)
        if self._loop is not None:
            self._loop.close()
        self._client = None
        self._loop = None

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
        timeout = _timeout
        if self._client is None:
            raise HypervisorError(f"QMP session to {self.path} is not open")
        try:
            return self._run(self._client.execute(name, args or None), timeout or self.command_timeout)
        except ExecuteError as exc:
            raise QmpCommandError(name, exc.error_class, str(exc)) from exc
        except asyncio.TimeoutError:
            raise HypervisorError(f"QEMU did not answer {name!r} on {self.path} within "
                                  f"{timeout or self.command_timeout:.0f} s") from None
        except (QMPError, OSError, EOFError) as exc:
            raise HypervisorError(f"lost the QMP connection to {self.path} during {name!r}: {exc}; "
                                  "did the VM exit?") from exc

    def peer_pid(self) -> int | None:
        """The pid of the QEMU process serving this monitor (``SO_PEERCRED``), or None when it cannot be known.

        The kernel records the listening process's credentials on the connection, so this names the QEMU that
        created the socket; 0 (a process in another pid namespace) is reported as None.
        """
        writer = getattr(self._client, "_writer", None)
        sock = writer.get_extra_info("socket") if writer is not None else None
        if sock is None:
            return None
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
        pid = struct.unpack("3i", raw)[0]
        return pid if pid > 0 else None

    def _run(self, coro: Any, timeout: float) -> Any:
        assert self._loop is not None
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))


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


class _TornGreeting(Exception):
    """Internal: a connection whose greeting failed with a bare socket error (``QmpSession.open`` retries)."""

    def __init__(self, exc: ConnectError) -> None:
        super().__init__(str(exc))
        self.exc = exc


def _connect_error(path: Path, exc: ConnectError) -> HypervisorError:
    root = exc.exc
    if isinstance(root, ConnectionRefusedError):
        return HypervisorError(f"QMP socket {path} refuses connections: the VM that created it is no longer "
                               "running (a dead socket file); start the VM or fix the path")
    if isinstance(root, QMPError):
        return HypervisorError(f"{path} answered with something that is not a QMP greeting: it is not a QEMU "
                               "monitor socket")
    if isinstance(root, (EOFError, ConnectionResetError, socket.error)):
        return HypervisorError(f"{path} closed the connection without a QMP greeting "
                               f"({root.__class__.__name__}): it is not a QEMU monitor socket")
    return HypervisorError(f"cannot connect to QMP socket {path}: {exc}")
