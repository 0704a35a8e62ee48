"""Helpers of the console tests: log in as a browser does, wait for the service's jobs."""

from __future__ import annotations

import re
import time

from fastapi.testclient import TestClient

from cutpoint.service.daemon import Service


def login(client: TestClient, token: str) -> str:
    """Log in; returns the session's CSRF token (as the pages' forms carry it)."""
    r = client.post("/login", data={"token": token}, follow_redirects=False)
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower(), cookie
    page = client.get("/").text
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


def wait_idle(svc: Service) -> None:
    deadline = time.monotonic() + 10
    while not svc.runner.idle():
        assert time.monotonic() < deadline
        time.sleep(0.02)
