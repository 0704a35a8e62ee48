"""Every error the API returns is JSON ``{"error": kind, "reason": text, "status": code}`` (plus ``field`` when one
input field is at fault), whatever raised it: a cutpoint error, request validation, an unknown route, or a bug.

Bad input maps to 4xx by the error's class; a 500 only ever means a bug or a broken vault, never a bad request.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import (CutpointError, HypervisorError, LockedError, NotFoundError, UsageError, VaultError)
from ..policy.model import PolicyError

log = logging.getLogger(__name__)

STATUS: tuple[tuple[type[CutpointError], int, str], ...] = (
    (PolicyError, 422, "invalid_policy"),
    (UsageError, 400, "bad_request"),
    (NotFoundError, 404, "not_found"),
    (LockedError, 409, "busy"),
    (HypervisorError, 502, "hypervisor"),
    (VaultError, 500, "vault"),
)
NAMES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 422: "invalid_request"}


def body(status: int, kind: str, reason: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": kind, "reason": reason, "status": status, **extra}, status_code=status,
                        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)


def install(app: FastAPI) -> None:
    @app.exception_handler(CutpointError)
    async def cutpoint_error(_: Request, exc: CutpointError) -> JSONResponse:
        reason = " ".join(str(exc).split())
        for cls, status, kind in STATUS:
            if isinstance(exc, cls):
                extra = {"field": exc.field} if isinstance(exc, PolicyError) else {}
                return body(status, kind, reason, **extra)
        return body(500, "error", reason)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        parts = []
        for e in errs:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        first = errs[0] if errs else {}
        fld = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return body(422, "invalid_request", "; ".join(parts) or "invalid request", field=fld or None)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        reason = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return body(exc.status_code, NAMES.get(exc.status_code, "error"), reason)

    @app.exception_handler(Exception)
    async def bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("API request failed")
        return body(500, "internal", f"internal error: {type(exc).__name__}: {exc}")
