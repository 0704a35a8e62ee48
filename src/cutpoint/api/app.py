"""The REST API (FastAPI): VMs, policies, points, jobs, on-demand backup and restore, reports, and ``/health``;
and the web console at ``/`` and ``/ui/...`` (``console/``), which checks its own credentials (bearer token or the
session cookie, plus a CSRF token on every form) and answers HTML.

Every route but ``/health`` needs ``Authorization: Bearer <token>`` (see ``auth.py``); the check is a middleware so
that it also covers the OpenAPI schema and unknown paths (an anonymous caller learns nothing, not even which routes
exist). A read-only token may only GET: any other method is a 403 before a route runs, so a new route cannot forget
the check. Requests are served on a thread pool; each thread uses its own vault connection (``service.vaults``), and
backups and restores run as jobs on the service's runner, so the one-job-per-VM rule holds across the API, the
scheduler and the CLI (the VM lock).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from fastapi import Body, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..errors import UsageError
from ..jobs.store import KINDS, STATES, iso
from ..policy.model import Policy
from ..policy.schedule import upcoming
from ..policy.store import assign
from ..restore.images import FORMATS
from ..restore.targets import confine, default_restore_root
from ..service.daemon import Service
from ..service.report import drills, status, usage
from ..service.work import backup_job, drill_job, restore_job
from ..vault import approvals, audit, guard, protection, softdelete
from . import auth, errors
from .console import routes as console
from .views import point_json, vm_json

PUBLIC = {"/health"}
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
EXAMPLE = {"name": "daily", "timezone": "Europe/Berlin", "schedule": {"frequency": "daily", "time": "02:00"},
           "retention": {"last": 3, "daily": 7}}


class BackupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    full: bool = Field(False, description="read every disk in full, not only what changed")


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    point: str = Field(..., min_length=1, description="point id, a unique prefix, or 'latest'")
    to: str = Field(..., min_length=1, description="absolute directory on the server for the images, under its "
                    "restore root (cutpoint serve --restore-root)")
    format: Literal["raw", "qcow2"] = "raw"


class DrillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    point: str = Field("latest", min_length=1, description="point id, a unique prefix, or 'latest'")
    console: str | None = Field(None, description="console pattern for this run (else the VM's, else the default)")
    timeout: float | None = Field(None, gt=0, description="seconds for every signal")


class AssignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: str | None = Field(..., description="policy name, or null to stop scheduling the VM")


def create_app(svc: Service, tokens: str | Mapping[str, str], *, restore_root: Path | None = None) -> FastAPI:
    """``tokens``: role -> token (``auth.tokens``); a plain string is the operator token alone. ``restore_root``: the
    only directory tree API restores may write into (``cutpoint serve --restore-root``, default
    ``targets.default_restore_root()``)."""
    accepted = {auth.OPERATOR: tokens} if isinstance(tokens, str) else dict(tokens)
    root = (restore_root or default_restore_root()).absolute()
    app = FastAPI(title="cutpoint", version=__version__, docs_url=None, redoc_url=None,
                  description="Crash-consistent multi-disk backups of QEMU VMs: policies, jobs, points.")
    errors.install(app)
    app.state.console_sessions = console.install(app, svc, accepted, root)

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Response:
        if request.url.path not in PUBLIC and not console.is_console(request.url.path):
            role = auth.role_of(request.headers.get("authorization"), accepted)
            if role is None:
                reason = ("missing Authorization: Bearer <token> header" if "authorization" not in request.headers
                          else "invalid token")
                return errors.body(401, "unauthorized",
                                   reason + "; the token is printed by 'cutpoint serve --show-token'")
            if role != auth.OPERATOR and request.method not in READ_METHODS:
                return errors.body(403, "forbidden", f"this token is {role}: it may only read (GET); "
                                   "changes need the operator token ('cutpoint serve --show-token')")
        response: Response = await call_next(request)
        return response

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/health", tags=["service"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "scheduler": svc.running}

    # -- VMs and points ------------------------------------------------------------------------------------------

    @app.get("/vms", tags=["vms"])
    def list_vms() -> list[dict[str, Any]]:
        return [vm_json(svc, v) for v in svc.vaults.get().catalog.vms()]

    @app.get("/vms/{name}", tags=["vms"])
    def get_vm(name: str) -> dict[str, Any]:
        return vm_json(svc, svc.vaults.get().catalog.vm(name))

    @app.put("/vms/{name}/policy", tags=["vms"])
    def set_policy(name: str, req: AssignRequest) -> dict[str, Any]:
        catalog = svc.vaults.get().catalog
        assign(catalog, svc.policies, name, req.policy)
        return vm_json(svc, catalog.vm(name))

    @app.get("/vms/{name}/points", tags=["points"])
    def vm_points(name: str) -> list[dict[str, Any]]:
        catalog = svc.vaults.get().catalog
        catalog.vm(name)
        return [point_json(p, catalog.drill(p.id)) for p in catalog.points(name)]

    @app.get("/points", tags=["points"])
    def points(vm: str | None = None, deleted: bool = False) -> list[dict[str, Any]]:
        """``deleted=true``: the soft-deleted points instead, as 'cutpoint points --deleted --json' lists them."""
        vault = svc.vaults.get()
        if deleted:
            return [d.to_json() for d in softdelete.scan(vault, protection.current(vault), vm)]
        catalog = vault.catalog
        if vm is not None:
            catalog.vm(vm)
        return [point_json(p, catalog.drill(p.id)) for p in catalog.points(vm)]

    # -- multi-user authorization: read only; deciding needs the guard key, which no API token is ----------------

    @app.get("/approvals", tags=["approvals"])
    def list_approvals(state: Literal["pending", "approved", "denied", "expired", "used", "invalid"] | None = None
                       ) -> dict[str, Any]:
        """The vault's guard and its requests (``cutpoint approvals --json``). Approving or denying one needs the
        guard key ('cutpoint approve REQUEST --guard-key FILE'): no token can, the point being a second principal."""
        vault = svc.vaults.get()
        g = guard.of(vault.config)
        found = approvals.listing(vault.backend, str(vault.config["id"]), g, audit.now())
        return {"guard": g.to_config() if g else None,
                "requests": [s.to_json() for s in found if state is None or s.state == state]}

    @app.get("/approvals/audit", tags=["approvals"])
    def approvals_audit() -> list[dict[str, Any]]:
        """The guard's audit log: every request, approval, denial, use and refusal (``cutpoint approvals --audit``)."""
        return [e.to_json() for e in audit.events(svc.vaults.get().backend)]

    @app.get("/vms/{name}/points/{point}", tags=["points"])
    def get_point(name: str, point: str) -> dict[str, Any]:
        catalog = svc.vaults.get().catalog
        catalog.vm(name)
        rec = catalog.point(name, point)
        return {**point_json(rec, catalog.drill(rec.id)), "summary": rec.summary}

    @app.post("/vms/{name}/backup", status_code=202, tags=["jobs"])
    def start_backup(name: str, req: BackupRequest | None = Body(None)) -> dict[str, Any]:
        catalog = svc.vaults.get().catalog
        vm = catalog.vm(name)
        pname = vm.settings.get("policy")
        policy = svc.policies.get(pname) if pname else None
        job = svc.runner.submit("backup", name, backup_job(name, full=bool(req and req.full), policy=policy,
                                                           backup_fn=svc.scheduler.backup_fn), trigger="api")
        return {"job": job, "url": f"/jobs/{job}"}

    @app.post("/vms/{name}/restore", status_code=202, tags=["jobs"])
    def start_restore(name: str, req: RestoreRequest) -> dict[str, Any]:
        catalog = svc.vaults.get().catalog
        catalog.vm(name)
        rec = catalog.point(name, req.point)
        if req.format not in FORMATS:
            raise UsageError(f"unknown format {req.format!r}")
        to = confine(Path(req.to), root)          # the job checks again when it runs
        job = svc.runner.submit("restore", name, restore_job(name, rec.id, to, req.format, within=root),
                                trigger="api", detail={"point": rec.id})
        return {"job": job, "url": f"/jobs/{job}", "point": rec.id}

    @app.post("/vms/{name}/drill", status_code=202, tags=["jobs"])
    def start_drill(name: str, req: DrillRequest | None = Body(None)) -> dict[str, Any]:
        """A restore drill of one point as a job; its verdict is then on the point (``drill``) and in the job."""
        req = req or DrillRequest(point="latest", console=None, timeout=None)
        catalog = svc.vaults.get().catalog
        catalog.vm(name)
        rec = catalog.point(name, req.point)
        job = svc.runner.submit("drill", name, drill_job(name, rec.id, console=req.console, timeout=req.timeout),
                                trigger="api", detail={"point": rec.id})
        return {"job": job, "url": f"/jobs/{job}", "point": rec.id}

    # -- policies ------------------------------------------------------------------------------------------------

    @app.get("/policies", tags=["policies"])
    def list_policies() -> list[dict[str, Any]]:
        return [p.to_dict() for p in svc.policies.all()]

    @app.post("/policies", status_code=201, tags=["policies"])
    def create_policy(body: dict[str, Any] = Body(..., examples=[EXAMPLE])) -> dict[str, Any]:
        p = Policy.from_dict(body)
        svc.policies.put(p)
        return p.to_dict()

    @app.get("/policies/{name}", tags=["policies"])
    def get_policy(name: str, count: int = Query(5, ge=0, le=100)) -> dict[str, Any]:
        p = svc.policies.get(name)
        users = [v.name for v in svc.vaults.get().catalog.vms() if v.settings.get("policy") == name]
        return {**p.to_dict(), "vms": users, "next_runs": [iso(t) for t in upcoming(p, svc.clock.now(), count)]}

    @app.put("/policies/{name}", tags=["policies"])
    def put_policy(name: str, response: Response, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        if "name" in body and body["name"] != name:
            raise UsageError(f"the body names policy {body['name']!r} but the path names {name!r}")
        p = Policy.from_dict(body, name)
        if svc.policies.put(p, replace=True):
            response.status_code = 201
        return p.to_dict()

    @app.delete("/policies/{name}", status_code=204, tags=["policies"])
    def delete_policy(name: str) -> Response:
        svc.policies.delete(name, svc.vaults.get().catalog)
        return Response(status_code=204)

    # -- jobs and the report -------------------------------------------------------------------------------------

    @app.get("/jobs", tags=["jobs"])
    def list_jobs(vm: str | None = None, state: Literal[STATES] | None = None,  # type: ignore[valid-type]
                  kind: Literal[KINDS] | None = None,  # type: ignore[valid-type]
                  limit: int = Query(100, ge=1, le=10000)) -> list[dict[str, Any]]:
        return [j.to_json() for j in svc.jobs.list(vm=vm, state=state, kind=kind, limit=limit)]

    @app.get("/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: int = PathParam(ge=1, le=2**63 - 1)) -> dict[str, Any]:      # SQLite's INTEGER range
        return svc.jobs.get(job_id).to_json()

    @app.get("/report", tags=["service"])
    def get_report(hours: int = Query(24, ge=1, le=24 * 366)) -> dict[str, Any]:
        return status(svc, hours).to_json()

    @app.get("/report/drills", tags=["service"])
    def get_drill_report() -> list[dict[str, Any]]:
        """Every point's last restore drill: verdict, RTO, reasons (``cutpoint report --drills --json``)."""
        return [r.to_json() for r in drills(svc.vaults.get())]

    @app.get("/report/usage", tags=["service"])
    def get_usage() -> dict[str, Any]:
        """Per VM: protected-instance weight and vault bytes, as ``cutpoint report --json``."""
        return usage(svc.vaults.get()).to_json()

    return app
