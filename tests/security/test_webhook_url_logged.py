"""A webhook URL is often itself a secret (a Slack or Teams hook carries its credential in the path, others in the
query or userinfo). When the webhook fails, the log and the job records must name only its scheme and host: the
path, query and userinfo never appear, whether the receiver refuses connections, answers 500, or the URL is refused
at start."""

from __future__ import annotations

import json
import logging
import socket
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from cutpoint.jobs.alerts import Alerter
from tests.helpers import cutpoint
from tests.service.fakes import harness, policy

UTC = timezone.utc
SECRETS = ("hookuser", "hookpass", "T0KENPATH", "B1GSECRET", "qsecret")


def _url(port: int, host: str = "127.0.0.1") -> str:
    return f"http://hookuser:hookpass@{host}:{port}/services/T0KENPATH/B1GSECRET?token=qsecret#frag"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Fails(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def failing_receiver():
    srv = HTTPServer(("127.0.0.1", 0), _Fails)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield int(srv.server_address[1])
    srv.shutdown()


def _no_secret(text: str) -> None:
    for s in SECRETS:
        assert s not in text, f"{s!r} leaked: {text}"


@pytest.mark.parametrize("receiver", ["refused", "http-500", "bad-host"])
def test_failing_webhook_logs_only_scheme_and_host(receiver: str, failing_receiver: int,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    url = {"refused": _url(_closed_port()), "http-500": _url(failing_receiver),
           "bad-host": _url(1, "no-such-host.invalid")}[receiver]
    h = harness(datetime(2024, 6, 1, 12, tzinfo=UTC), fail=lambda t: True)
    h.svc.alerter = h.svc.scheduler.alerter = h.svc.runner.alerter = Alerter(url)
    h.add_vm("web", policy({"frequency": "daily", "time": "03:00"}))
    caplog.set_level(logging.DEBUG, logger="cutpoint")
    h.svc.tick()
    h.run_until(datetime(2024, 6, 2, 3, 5, tzinfo=UTC), timedelta(minutes=1))
    h.svc.alerter.flush()
    warnings = [r.getMessage() for r in caplog.records if "webhook" in r.getMessage()]
    assert warnings, "the failed webhook was not logged at all"
    host = "no-such-host.invalid" if receiver == "bad-host" else "127.0.0.1"
    assert all(f"http://{host}" in w for w in warnings), warnings
    if receiver == "http-500":                     # userinfo went into basic auth: the receiver was reached
        assert all("HTTP 500" in w for w in warnings), warnings
    _no_secret(caplog.text)
    _no_secret(json.dumps([j.to_json() for j in h.svc.jobs.list(limit=1000)]))


def test_refused_webhook_url_is_not_echoed(tmp_path) -> None:
    bad = "ftp://hookuser:hookpass@example.com/T0KENPATH?token=qsecret"
    r = cutpoint("serve", "--webhook", bad)
    assert r.code == 2 and "webhook" in r.err and "ftp://example.com" in r.err, r.err
    _no_secret(r.err + r.out)
    f = tmp_path / "hook"                              # off the command line, where other users can read it
    f.write_text(bad + "\n")
    r = cutpoint("serve", "--webhook-file", str(f))
    assert r.code == 2 and "ftp://example.com" in r.err, r.err
    _no_secret(r.err + r.out)
    r = cutpoint("serve", "--webhook-file", str(tmp_path / "missing"))
    assert r.code == 2 and "--webhook-file" in r.err, r.err


def test_webhook_file_supplies_the_url(tmp_path) -> None:
    import argparse

    from cutpoint.cli.serve import _webhook
    f = tmp_path / "hook"
    f.write_text(" https://hooks.example.com/services/T0KENPATH \n")
    assert _webhook(argparse.Namespace(webhook=None, webhook_file=f)) == "https://hooks.example.com/services/T0KENPATH"
    assert _webhook(argparse.Namespace(webhook="https://a.example/x", webhook_file=None)) == "https://a.example/x"
    assert _webhook(argparse.Namespace(webhook=None, webhook_file=None)) is None
