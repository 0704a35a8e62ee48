"""The QMP wire as ``QmpSession`` speaks it, against a scripted monitor: events and stale replies between a command
and its reply are skipped, a reply split over several reads is joined, QEMU's error is the command's error, and a
monitor that hangs up or never answers is one clear error."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cutpoint.drivers.qmp.qmp import QmpSession
from cutpoint.errors import HypervisorError, QmpCommandError

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""}, "capabilities": []}}


def _line(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\r\n"


@contextmanager
def monitor(path: Path, answer: Callable[[socket.socket, dict], None]) -> Iterator[list[dict]]:
    """A one-client QMP monitor on ``path``: greeting, capabilities, then ``answer(conn, request)`` per command.
    Yields the requests it received."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    seen: list[dict] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(_line(GREETING))
            buf = b""
            while True:
                while b"\n" not in buf:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                seen.append(req)
                if req["execute"] == "qmp_capabilities":
                    conn.sendall(_line({"return": {}}))
                else:
                    answer(conn, req)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield seen
    finally:
        srv.close()
        t.join(5)


def test_events_and_stale_replies_are_skipped_and_split_replies_joined(tmp_path: Path) -> None:
    def answer(conn: socket.socket, req: dict) -> None:
        conn.sendall(_line({"event": "JOB_STATUS_CHANGE", "data": {"id": "j", "status": "running"},
                            "timestamp": {"seconds": 1, "microseconds": 2}}))
        conn.sendall(_line({"return": "stale", "id": req["id"] - 1}))
        reply = _line({"return": {"echo": req.get("arguments"), "big": "x" * 200_000}, "id": req["id"]})
        conn.sendall(reply[:10])                  # torn across reads
        conn.sendall(reply[10:])

    with monitor(tmp_path / "m.sock", answer) as seen, QmpSession(tmp_path / "m.sock") as s:
        got = s.cmd("query-named-block-nodes", flat=True, node_name="n0")
        assert got["echo"] == {"flat": True, "node-name": "n0"} and len(got["big"]) == 200_000
        assert s.cmd("query-status")["echo"] is None          # no arguments: none sent
    assert seen[0] == {"execute": "qmp_capabilities"}
    assert "arguments" not in seen[2]


def test_qemu_error_is_the_commands_error(tmp_path: Path) -> None:
    def answer(conn: socket.socket, req: dict) -> None:
        conn.sendall(_line({"error": {"class": "GenericError", "desc": "Node 'x' not found"}, "id": req["id"]}))

    with monitor(tmp_path / "m.sock", answer), QmpSession(tmp_path / "m.sock") as s:
        with pytest.raises(QmpCommandError) as err:
            s.cmd("blockdev-del", node_name="x")
        assert (err.value.error_class, err.value.desc) == ("GenericError", "Node 'x' not found")
        with pytest.raises(QmpCommandError):                   # the session stays usable
            s.cmd("blockdev-del", node_name="x")


def test_monitor_that_hangs_up_mid_command(tmp_path: Path) -> None:
    def answer(conn: socket.socket, req: dict) -> None:
        conn.shutdown(socket.SHUT_RDWR)

    with monitor(tmp_path / "m.sock", answer), QmpSession(tmp_path / "m.sock") as s:
        with pytest.raises(HypervisorError, match="lost the QMP connection .* during 'quit'.*did the VM exit"):
            s.cmd("quit")


def test_monitor_that_does_not_answer(tmp_path: Path) -> None:
    with monitor(tmp_path / "m.sock", lambda conn, req: None), QmpSession(tmp_path / "m.sock") as s:
        with pytest.raises(HypervisorError, match="QEMU did not answer 'query-status' .* within 0 s"):
            s.cmd("query-status", _timeout=0.3)
