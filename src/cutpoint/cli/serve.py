"""``cutpoint serve``: the backup service (scheduler, jobs, retention, gc) and its REST API, in one process.

Binds 127.0.0.1 by default. SIGTERM or SIGINT stops it cleanly: no new jobs, running ones interrupted and cleaned up
(no partial point, the job recorded ``interrupted``), then the API closes and the process exits 0. API tokens live in
the host state directory, not in the vault (``api/auth.py``); ``--show-token [--role read-only]`` prints one and exits.
Tokens are read at start: restart the service after ``--rotate-token``. API restores write only under
``--restore-root``, so a token cannot place files in any directory the service can reach.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..api import auth
from ..errors import CutpointError, UsageError
from ..restore.targets import DEFAULT_RESTORE_ROOT, default_restore_root, make_root
from .common import add_vault_arg, open_vault

log = logging.getLogger("cutpoint.serve")
DEFAULT_PORT = 8470


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the backup service and its REST API",
                       description="Runs scheduled backups of every VM with a policy, retries, retention and gc, "
                       "and serves the REST API (Authorization: Bearer TOKEN; GET /openapi.json).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    p.add_argument("--webhook", default=os.environ.get("CUTPOINT_WEBHOOK"),
                   help="POST a JSON alert here when a job fails or a VM misses its RPO (default "
                        "$CUTPOINT_WEBHOOK; a URL on the command line is visible to other local users: prefer "
                        "--webhook-file)")
    p.add_argument("--webhook-file", type=Path, metavar="FILE",
                   help="read the webhook URL from FILE (keep it 0600); only its scheme and host are ever logged")
    p.add_argument("--retries", type=int, default=3, help="attempts per scheduled backup (default 3)")
    p.add_argument("--backoff", type=float, default=60.0,
                   help="seconds before the first retry, doubling after each (default 60)")
    p.add_argument("--restore-root", type=Path, default=None, metavar="DIR",
                   help=f"API restores write only under DIR (default {DEFAULT_RESTORE_ROOT}; created mode 0700)")
    p.add_argument("--job-timeout", type=float, default=6 * 3600, metavar="SECONDS",
                   help="stop a job running longer than this and record it failed (default 21600: 6 h)")
    p.add_argument("--show-token", action="store_true", help="print the API token (creating it) and exit")
    p.add_argument("--rotate-token", action="store_true", help="replace the API token, print it and exit")
    p.add_argument("--role", choices=auth.ROLES, default=auth.OPERATOR,
                   help="the token --show-token/--rotate-token print: operator (default; everything) or read-only "
                        "(GET only)")
    p.add_argument("--tick", type=float, default=5.0, help=argparse.SUPPRESS)       # seconds between passes
    p.add_argument("--gc-grace", type=float, default=None, help=argparse.SUPPRESS)  # tests: gc's age cutoff
    p.add_argument("--stop-grace", type=float, default=60.0, help=argparse.SUPPRESS)
    add_vault_arg(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    vault = open_vault(args)
    if args.show_token or args.rotate_token:
        print(auth.load_or_create(vault.root, role=args.role, rotate=args.rotate_token))
        return 0
    webhook = _webhook(args)
    if args.retries < 1 or args.backoff < 0 or args.tick <= 0:
        raise UsageError("--retries must be at least 1, --backoff not negative")
    if not 60 <= args.job_timeout <= 366 * 86400:
        raise UsageError(f"--job-timeout {args.job_timeout:g} is out of range: give seconds, 60 to 31622400")
    import uvicorn  # the service stack is imported here: every other command starts faster without it

    from ..api.app import create_app
    from ..service.daemon import Service
    from ..service.scheduler import RetryPolicy

    tokens = auth.tokens(vault.root)
    restore_root = make_root(args.restore_root or default_restore_root())
    sock = _bind(args.host, args.port)
    logging.getLogger("cutpoint").setLevel(logging.INFO)
    svc = Service(vault, tick=args.tick, webhook=webhook, retry=RetryPolicy(args.retries, args.backoff),
                  gc_grace=args.gc_grace, gc_interval=timedelta(hours=1),
                  job_timeout=timedelta(seconds=args.job_timeout))
    server = uvicorn.Server(uvicorn.Config(create_app(svc, tokens, restore_root=restore_root), log_level="warning",
                                           access_log=False, lifespan="off"))
    web = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="cutpoint-api", daemon=True)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        web.start()
        svc.start()
        host, port = sock.getsockname()[:2]
        print(f"cutpoint serve: vault {vault.where}, API on http://{_url_host(host)}:{port} "
              f"(token: cutpoint serve --show-token)", file=sys.stderr, flush=True)
        if args.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("the API listens on %s without TLS: the token crosses the network in clear text", host)
        while not stop.wait(0.5):
            if not web.is_alive():
                raise CutpointError("the API server stopped unexpectedly")
    finally:
        clean = svc.stop(args.stop_grace)
        server.should_exit = True
        web.join(10)
        svc.close()
        for s, h in old.items():
            signal.signal(s, h)
        log.info("stopped%s", "" if clean else " (some jobs had to be marked interrupted)")
    return 0


def _webhook(args: argparse.Namespace) -> str | None:
    """The webhook URL, checked before anything starts (a bad one is named redacted: it may be a secret)."""
    from ..jobs.alerts import check_url

    if args.webhook_file is None:
        if args.webhook:
            check_url(args.webhook)
            return str(args.webhook)
        return None
    try:
        url = args.webhook_file.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --webhook-file {args.webhook_file}: {getattr(exc, 'strerror', None) or exc}"
                         ) from exc
    if not url:
        raise UsageError(f"--webhook-file {args.webhook_file} is empty; put the webhook URL in it")
    check_url(url)
    return url


def _bind(host: str, port: int) -> socket.socket:
    """Bind before starting anything, so a taken port is one clear error instead of a half-started service."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port number")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host!r} does not resolve: {exc.strerror}") from exc
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise CutpointError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
