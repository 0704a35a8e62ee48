"""The guest-agent client against a scripted fake qemu-ga: resynchronisation after stale bytes, id matching, late
replies, errors, timeouts and guest-exec; and the consistency procedure's fallbacks with a fake agent."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cutpoint.backup.consistency import Consistency, Timeouts, requested_type, update_settings
from cutpoint.errors import UsageError
from cutpoint.cut.agent import AgentError, AgentTimeout, ExecResult, GuestAgent
from cutpoint.drivers.qmp.agent import SocketAgent, parse_backend

Handler = Callable[[dict[str, Any]], Any]


class FakeGa:
    """A unix-socket server speaking qemu-ga's wire protocol; ``handlers[command](request)`` gives the return
    value, raises to send an error, or returns ``SILENT`` to never answer."""

    SILENT = object()

    def __init__(self, path: Path, handlers: dict[str, Handler], stale: bytes = b"") -> None:
        self.path, self.handlers, self.stale = path, handlers, stale
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(str(path))
        self.srv.listen(1)
        self.seen: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            conn.sendall(self.stale)           # what an earlier client's late replies left in the pipe
            buf = b""
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self._answer(conn, line)

    def _answer(self, conn: socket.socket, line: bytes) -> None:
        delimited = line.startswith(b"\xff")
        req = json.loads(line.lstrip(b"\xff"))
        cmd = req["execute"]
        self.seen.append(cmd)
        if cmd == "guest-sync-delimited":
            conn.sendall(b'{"return": 1}\n' + b"\xff" + json.dumps({"return": req["arguments"]["id"]}).encode()
                         + b"\n" if delimited else b"")
            return
        try:
            ret = self.handlers[cmd](req.get("arguments", {}))
        except Exception as exc:  # noqa: BLE001 - the fake turns any failure into an agent error
            ret, err = None, {"class": "GenericError", "desc": str(exc)}
        else:
            err = None
        if ret is self.SILENT:
            return
        msg: dict[str, Any] = {"error": err} if err else {"return": ret}
        if "id" in req:
            conn.sendall(json.dumps({"return": "late reply", "id": -1}).encode() + b"\n")   # someone else's
            msg["id"] = req["id"]
        conn.sendall(json.dumps(msg).encode() + b"\n")

    def close(self) -> None:
        self.srv.close()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Callable[..., FakeGa]]:
    made: list[FakeGa] = []

    def make(handlers: dict[str, Handler], stale: bytes = b"") -> FakeGa:
        ga = FakeGa(tmp_path / f"ga{len(made)}.sock", handlers, stale)
        made.append(ga)
        return ga

    yield make
    for ga in made:
        ga.close()


def test_sync_skips_stale_bytes_and_replies_match_ids(fake: Callable[..., FakeGa]) -> None:
    state = {"frozen": False}

    def freeze(_: dict[str, Any]) -> int:
        state["frozen"] = True
        return 2

    ga = fake({"guest-ping": lambda a: {}, "guest-fsfreeze-freeze": freeze,
               "guest-fsfreeze-status": lambda a: "frozen" if state["frozen"] else "thawed",
               "guest-fsfreeze-thaw": lambda a: 2},
              stale=b'{"return": 2, "id": 99}\n\xff{"return": 12345}\n garbage \xff\n')
    a = SocketAgent(ga.path)
    a.ping(2)
    assert a.status(2) == "thawed"
    assert a.freeze(2) == 2 and a.status(2) == "frozen"
    assert a.thaw(2) == 2
    a.close()
    assert ga.seen[0] == "guest-sync-delimited"


def test_errors_timeouts_and_missing_socket(fake: Callable[..., FakeGa], tmp_path: Path) -> None:
    def refuse(_: dict[str, Any]) -> None:
        raise RuntimeError("failed to freeze /mnt: Device or resource busy")

    ga = fake({"guest-fsfreeze-freeze": refuse, "guest-ping": lambda a: FakeGa.SILENT})
    a = SocketAgent(ga.path, hint="test hint")
    with pytest.raises(AgentError, match="refused guest-fsfreeze-freeze: GenericError: failed to freeze"):
        a.freeze(2)
    t0 = time.monotonic()
    with pytest.raises(AgentTimeout, match=r"did not answer guest-ping within 0.3 s \(test hint\)"):
        a.ping(0.3)
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(AgentError, match="cannot connect to the guest agent socket"):
        SocketAgent(tmp_path / "nothing.sock").ping(1)


def test_exec_polls_until_exit(fake: Callable[..., FakeGa]) -> None:
    polls = iter([{"exited": False}, {"exited": True, "exitcode": 3,
                                      "err-data": base64.b64encode(b"db busy\n").decode()}])
    ga = fake({"guest-exec": lambda a: {"pid": 7} if a["path"] == "/pre" else {},
               "guest-exec-status": lambda a: next(polls)})
    r = SocketAgent(ga.path).exec("/pre", [], 5)
    assert r == ExecResult(3, None, "", "db busy\n")


def test_parse_backend() -> None:
    ch = parse_backend("qga0", "disconnected:unix:/run/a,,b/qga.sock,server=on", True)
    assert ch.socket == Path("/run/a,b/qga.sock") and not ch.client_connected and ch.guest_open
    assert parse_backend("qga0", "unix:/x.sock,server=on", False).client_connected
    assert parse_backend("qga0", "pty:/dev/pts/3", True).socket is None


class ScriptedAgent(GuestAgent):
    """A GuestAgent whose steps fail on demand, recording the calls."""

    def __init__(self, fail: str = "", frozen: int = 1) -> None:
        self.fail, self.frozen, self.calls = fail, frozen, []

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if self.fail == name + "-timeout":
            raise AgentTimeout(f"{name} timed out")
        if self.fail == name:
            raise AgentError(f"{name} failed")

    def ping(self, timeout: float) -> None:
        self._step("ping")

    def freeze(self, timeout: float) -> int:
        self._step("freeze")
        return self.frozen

    def thaw(self, timeout: float) -> int:
        self._step("thaw")
        return 1

    def status(self, timeout: float) -> str:
        self._step("status")
        return "thawed"

    def exec(self, path: str, args: list[str], timeout: float) -> ExecResult:
        self._step("exec " + path)
        return ExecResult(1 if "fail" in path else 0, None, "", "it broke\n")


class Session:
    def __init__(self, agent: GuestAgent | None) -> None:
        self._agent = agent

    def agent(self) -> GuestAgent | None:
        return self._agent


def _run(agent: GuestAgent | None, settings: dict[str, Any] | None = None) -> Consistency:
    c = Consistency("app", settings or {}, Timeouts(thaw=1))
    c.prepare(Session(agent))  # type: ignore[arg-type]
    c.freeze()
    c.thaw()
    c.finish()
    return c


@pytest.mark.parametrize("fail,frozen,reason,calls", [
    ("", 1, None, ["ping", "exec /pre", "freeze", "thaw", "exec /post"]),
    ("ping-timeout", 1, "guest agent not answering: ping timed out", ["ping"]),
    ("freeze", 1, "guest-fsfreeze-freeze failed: freeze failed", ["ping", "exec /pre", "freeze", "thaw", "exec /post"]),
    ("freeze-timeout", 1, "did not answer within 10 s", ["ping", "exec /pre", "freeze", "thaw", "exec /post"]),
    ("", 0, "froze no filesystem", ["ping", "exec /pre", "freeze", "thaw", "exec /post"]),
    ("thaw-timeout", 1, None, ["ping", "exec /pre", "freeze", "thaw", "status", "exec /post"]),
])
def test_procedure_outcomes(fail: str, frozen: int, reason: str | None, calls: list[str]) -> None:
    agent = ScriptedAgent(fail, frozen)
    c = _run(agent, {"pre_script": "/pre", "post_script": "/post"})
    out = c.outcome()
    assert agent.calls == calls
    if reason is None:
        assert out["consistency"] == "app" and out["fallback_reason"] is None and out["frozen_ms"] > 0
    else:
        assert out["consistency"] == "crash" and out["requested"] == "app" and out["frozen_ms"] is None
        assert reason in out["fallback_reason"]


def test_pre_script_failure_and_no_agent() -> None:
    agent = ScriptedAgent()
    c = _run(agent, {"pre_script": "/fail-pre", "post_script": "/post"})
    assert c.outcome()["fallback_reason"] == "pre-script /fail-pre exited with 1: it broke"
    assert agent.calls == ["ping", "exec /fail-pre", "exec /post"]    # no freeze; post-script still undoes pre
    c = _run(None)
    assert c.consistency == "crash" and "no guest agent channel" in (c.fallback_reason or "")
    c = _run(ScriptedAgent(), {"post_script": "/fail-post"})
    assert c.consistency == "app" and c.warnings == ["post-script /fail-post exited with 1: it broke"]


def test_settings_rules() -> None:
    s = update_settings({}, consistency="app", pre_script="/pre", exclude=["d1", "d2"])
    assert s == {"consistency": "app", "pre_script": "/pre", "exclude_disks": ["d1", "d2"]}
    assert update_settings(s, include=["d1"])["exclude_disks"] == ["d2"]
    with pytest.raises(UsageError, match="run only in application-consistent backups"):
        update_settings(s, consistency="crash")
    with pytest.raises(UsageError, match="run only in application-consistent backups"):
        update_settings({}, post_script="/post")
    with pytest.raises(UsageError, match="absolute path"):
        update_settings({"consistency": "app"}, pre_script="pre.sh")
    assert requested_type({"consistency": "app"}, None) == "app"
    assert requested_type({}, None) == "crash"
    with pytest.raises(UsageError, match="--consistency app"):
        requested_type({"consistency": "app", "pre_script": "/pre"}, "crash")
