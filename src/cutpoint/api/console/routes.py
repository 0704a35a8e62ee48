"""Console routes. GET pages need a bearer token or the session cookie (else the login page); every POST needs a
browser session of the operator role and that session's CSRF token, checked here before anything runs.

Pages are built in their own modules; this one maps URLs to them, turns bad input into field errors and cutpoint
errors into an HTML page with the right status (never a stack trace), and sets headers that forbid scripts,
framing and cross-site form targets (Content-Security-Policy).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ...errors import CutpointError, NotFoundError, UsageError
from ...restore.images import FORMATS
from ...restore.targets import confine
from ...service.daemon import Service
from ...service.work import backup_job, gc_job, restore_job, target_job, verify_job
from ...policy.store import assign
from .. import errors as api_errors
from . import dashboard, jobspage, pointpage, policies, vaultpage, vmpage
from .alerts import acknowledge
from .html import Viewer, esc, page
from .session import COOKIE, FormError, Sessions, csrf_ok, read_form

PREFIXES = ("/ui/",)
EXACT = {"/", "/login", "/logout"}
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                                      "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
           "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "Cache-Control": "no-store"}


def is_console(path: str) -> bool:
    return path in EXACT or path.startswith(PREFIXES)


def html(title: str, body: str, viewer: Viewer | None, status: int = 200, refresh: int | None = None) -> HTMLResponse:
    return HTMLResponse(page(title, body, viewer, refresh=refresh), status_code=status, headers=HEADERS)


def login_page(error: str = "", status: int = 200) -> HTMLResponse:
    err = f'<span class="err" id="token-err" role="alert">{esc(error)}</span>' if error else ""
    invalid = ' aria-invalid="true" aria-describedby="token-err"' if error else ""
    body = ('<p>Sign in with an API token. The operator prints it with <code>cutpoint serve --show-token</code> '
            "(add <code>--role read-only</code> for a token that can only look).</p>"
            '<form method="post" action="/login"><div class="field"><label for="token">API token</label>'
            f'<input id="token" name="token" type="password" autocomplete="current-password" required autofocus'
            f'{invalid}>{err}</div>'
            '<button type="submit" id="login">Log in</button></form>')
    return html("Log in", body, None, status)


def error_page(exc: CutpointError, viewer: Viewer | None) -> HTMLResponse:
    status = 500
    for cls, code, _ in api_errors.STATUS:
        if isinstance(exc, cls):
            status = code
            break
    reason = " ".join(str(exc).split())
    return html("Not found" if status == 404 else "Error", f'<p class="bad" role="alert">{esc(reason)}</p>'
                '<p><a href="/">back to the dashboard</a></p>', viewer, status)


def forbidden(viewer: Viewer | None, why: str) -> HTMLResponse:
    return html("Forbidden", f'<p class="bad" role="alert">{esc(why)}</p>', viewer, 403)


def install(app: FastAPI, svc: Service, accepted: dict[str, str], restore_root: Path) -> Sessions:
    sessions = Sessions(accepted)

    def view(title: str, build: Callable[[Viewer], str | tuple[str, bool]]) -> Callable[..., Any]:
        """Wrap a page builder: credentials (else the login page) and errors as pages."""
        def handler(request: Request) -> Response:
            viewer = sessions.viewer(request)
            if viewer is None:
                return login_page("" if request.url.path == "/" else "log in to see this page",
                                  200 if request.url.path == "/" else 401)
            try:
                got = build(viewer)
            except CutpointError as exc:
                return error_page(exc, viewer)
            body, live = got if isinstance(got, tuple) else (got, False)
            return html(title, body, viewer, refresh=(2 if request.url.path.startswith("/ui/jobs/") else 5)
                        if live else None)
        return handler

    async def posted(request: Request) -> tuple[Viewer, dict[str, str]] | Response:
        viewer = sessions.viewer(request)
        if viewer is None:
            return login_page("log in first", 401)
        try:
            form = await read_form(request)
        except FormError as exc:
            return html("Bad request", f'<p class="bad">{esc(exc)}</p>', viewer, 400)
        if not csrf_ok(viewer, form):
            return forbidden(viewer, "this form did not come from your console session (missing or wrong CSRF "
                                     "token); reload the page and submit it again")
        if not viewer.operator:
            return forbidden(viewer, f"this session's token is {viewer.role}: it may only look; changes need the "
                                     "operator token ('cutpoint serve --show-token')")
        return viewer, form

    def action(fn: Callable[[Viewer, dict[str, str], Request], Response]) -> Callable[[Request],
                                                                                    Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            got = await posted(request)
            if isinstance(got, Response):
                return got
            viewer, form = got
            try:
                return await run_in_threadpool(fn, viewer, form, request)
            except CutpointError as exc:
                return error_page(exc, viewer)
        return handler

    def see_other(url: str) -> Response:
        return RedirectResponse(url, status_code=303, headers=HEADERS)

    # -- login --------------------------------------------------------------------------------------------------

    async def login(request: Request) -> Response:
        try:
            form = await read_form(request)
        except FormError:
            return login_page("the login form was not readable; try again", 400)
        got = sessions.login(form.get("token", ""))
        if got is None:
            return login_page("that token is not valid here (wrong, or rotated since); get the current one with "
                              "'cutpoint serve --show-token'", 401)
        sid, _ = got
        resp = see_other("/")
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path="/", max_age=int(sessions.ttl))
        return resp

    async def logout(request: Request) -> Response:
        viewer = sessions.viewer(request)
        try:
            form = await read_form(request)
        except FormError as exc:
            return html("Bad request", f'<p class="bad">{esc(exc)}</p>', viewer, 400)
        if viewer is not None and not csrf_ok(viewer, form):
            return forbidden(viewer, "logout needs your session's CSRF token")
        sessions.logout(request.cookies.get(COOKIE))
        resp = see_other("/")
        resp.delete_cookie(COOKIE, path="/")
        return resp

    app.add_api_route("/", view("Dashboard", lambda v: dashboard.render(svc, v)), methods=["GET"],
                      include_in_schema=False)
    app.add_api_route("/login", login, methods=["POST"], include_in_schema=False)
    app.add_api_route("/logout", logout, methods=["POST"], include_in_schema=False)

    # -- VMs and points -------------------------------------------------------------------------------------------

    def vm_get(request: Request) -> Response:
        name = request.path_params["name"]
        return view(f"VM {name}", lambda v: vmpage.render(svc, v, name))(request)

    def backup_now(viewer: Viewer, form: dict[str, str], request: Request) -> Response:
        name = request.path_params["name"]
        errs = {}
        cons = form.get("consistency", "")
        if cons not in vmpage.CONSISTENCY_CHOICES:
            errs["consistency"] = f"{cons!r} is not crash or app (or empty for the configured type)"
        if form.get("full", "") not in ("", "no", "yes"):
            errs["full"] = "choose yes or no"
        vm = svc.vaults.get().catalog.vm(name)
        if errs:
            return html(f"VM {name}", vmpage.render(svc, viewer, name, errs), viewer, 422)
        pname = vm.settings.get("policy")
        policy = svc.policies.get(pname) if pname else None
        job = svc.runner.submit("backup", name, backup_job(name, full=form.get("full") == "yes", policy=policy,
                                                           backup_fn=svc.scheduler.backup_fn,
                                                           consistency=cons or None), trigger="api")
        return see_other(f"/ui/jobs/{job}")

    def set_policy(viewer: Viewer, form: dict[str, str], request: Request) -> Response:
        name = request.path_params["name"]
        catalog = svc.vaults.get().catalog
        catalog.vm(name)
        try:
            assign(catalog, svc.policies, name, form.get("policy") or None)
        except NotFoundError as exc:
            return html(f"VM {name}", vmpage.render(svc, viewer, name, {"policy": str(exc)}), viewer, 422)
        return html(f"VM {name}", vmpage.render(svc, viewer, name, message="policy assigned"), viewer)

    def point_get(request: Request) -> Response:
        name, point = request.path_params["name"], request.path_params["point"]
        return view(f"Point {point}", lambda v: pointpage.render(svc, v, name, point, restore_root))(request)

    def restore_now(viewer: Viewer, form: dict[str, str], request: Request) -> Response:
        name, point = request.path_params["name"], request.path_params["point"]
        rec = svc.vaults.get().catalog.point(name, point)
        errs = {}
        fmt = form.get("format", "")
        if fmt not in FORMATS:
            errs["format"] = f"{fmt!r} is not one of {', '.join(FORMATS)}"
        to_s = form.get("to", "").strip()
        to = None
        if not to_s.startswith("/"):
            errs["to"] = "give an absolute directory under the restore root"
        else:
            try:
                to = confine(Path(to_s), restore_root)
            except UsageError as exc:
                errs["to"] = str(exc)
        if errs or to is None:
            return html(f"Point {rec.id}", pointpage.render(svc, viewer, name, rec.id, restore_root, errs, form),
                        viewer, 422)
        job = svc.runner.submit("restore", name, restore_job(name, rec.id, to, fmt, within=restore_root),
                                trigger="api", detail={"point": rec.id})
        return see_other(f"/ui/jobs/{job}")

    def restore_other(viewer: Viewer, form: dict[str, str], request: Request) -> Response:
        """New VM, replace (typed confirmation) or instant: each field checked before a job is submitted."""
        name, point, kind = (request.path_params[k] for k in ("name", "point", "kind"))
        catalog = svc.vaults.get().catalog
        rec = catalog.point(name, point)
        target, errs = pointpage.target_of(catalog, name, kind, form)
        if errs:
            return html(f"Point {rec.id}", pointpage.render(svc, viewer, name, rec.id, restore_root, errs, form),
                        viewer, 422)
        job = svc.runner.submit("restore", name, target_job(name, rec.id, target), trigger="api",
                                detail={"point": rec.id, "target": kind})
        return see_other(f"/ui/jobs/{job}")

    def _loc(request: Request) -> tuple[str, str | None, int | None]:
        q = request.query_params
        part_s = q.get("part")
        if part_s is not None and not part_s.isdigit():
            raise UsageError(f"part {part_s!r} is not a partition number")
        return q.get("path") or "/", q.get("disk") or None, int(part_s) if part_s is not None else None

    def files_get(request: Request) -> Response:
        name, point = request.path_params["name"], request.path_params["point"]

        def build(v: Viewer) -> str:
            path, disk, part = _loc(request)
            return pointpage.browse(svc, v, name, point, path, disk, part)
        return view(f"Files of {point}", build)(request)

    def download_get(request: Request) -> Response:
        viewer = sessions.viewer(request)
        if viewer is None:
            return login_page("log in to download", 401)
        try:
            path, disk, part = _loc(request)
            body, fname, media = pointpage.download(svc, request.path_params["name"], request.path_params["point"],
                                                    path, disk, part)
        except CutpointError as exc:
            return error_page(exc, viewer)
        return StreamingResponse(body, media_type=media, headers={
            **HEADERS, "Content-Disposition": f"attachment; filename*=UTF-8''{quote(fname, safe='')}"})

    app.add_api_route("/ui/vms/{name}", vm_get, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/vms/{name}/backup", action(backup_now), methods=["POST"], include_in_schema=False)
    app.add_api_route("/ui/vms/{name}/policy", action(set_policy), methods=["POST"], include_in_schema=False)
    app.add_api_route("/ui/vms/{name}/points/{point}", point_get, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/vms/{name}/points/{point}/restore", action(restore_now), methods=["POST"],
                      include_in_schema=False)
    app.add_api_route("/ui/vms/{name}/points/{point}/restore/{kind}", action(restore_other), methods=["POST"],
                      include_in_schema=False)
    app.add_api_route("/ui/vms/{name}/points/{point}/files", files_get, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/vms/{name}/points/{point}/download", download_get, methods=["GET"],
                      include_in_schema=False)

    # -- policies -------------------------------------------------------------------------------------------------

    def policy_save(viewer: Viewer, form: dict[str, str], request: Request) -> Response:
        name = request.path_params.get("name")
        if name is not None:
            form = {**form, "name": name}
        p, errs = policies.validate(form)
        if p is None:
            body = (policies.render(svc, viewer, form, errs) if name is None
                    else policies.render_one(svc, viewer, name, form, errs))
            return html("Policies" if name is None else f"Policy {name}", body, viewer, 422)
        if name is not None:        # the form has no verify, drill or copy fields: an edit keeps the stored ones
            try:
                old = svc.policies.get(name)
                p = dataclasses.replace(p, verify=old.verify, drill=old.drill, copy=old.copy)
            except NotFoundError:
                pass                # put(replace=True) below names the missing policy
        try:
            svc.policies.put(p, replace=name is not None)
        except UsageError as exc:
            return html("Policies", policies.render(svc, viewer, form, {"name": str(exc)}), viewer, 422)
        return see_other(f"/ui/policies/{quote(p.name)}")

    def policy_get(request: Request) -> Response:
        name = request.path_params["name"]
        return view(f"Policy {name}", lambda v: policies.render_one(svc, v, name))(request)

    app.add_api_route("/ui/policies", view("Policies", lambda v: policies.render(svc, v)), methods=["GET"],
                      include_in_schema=False)
    app.add_api_route("/ui/policies", action(policy_save), methods=["POST"], include_in_schema=False)
    app.add_api_route("/ui/policies/{name}", policy_get, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/policies/{name}", action(policy_save), methods=["POST"], include_in_schema=False)

    # -- jobs, alerts, vault --------------------------------------------------------------------------------------

    def jobs_get(request: Request) -> Response:
        q = request.query_params
        return view("Jobs", lambda v: jobspage.render_list(svc, v, q.get("vm"), q.get("state"), q.get("kind"))
                    )(request)

    def job_get(request: Request) -> Response:
        raw = request.path_params["job_id"]
        def build(v: Viewer) -> tuple[str, bool]:
            if not raw.isdigit() or not 1 <= int(raw) < 2**63:
                raise NotFoundError(f"no job {raw!r}: job ids are whole numbers")
            return jobspage.render_one(svc, v, int(raw))
        return view(f"Job #{raw}", build)(request)

    def alerts_get(request: Request) -> Response:
        return view("Alerts", lambda v: jobspage.render_alerts(svc, v, request.query_params.get("all") == "1")
                    )(request)

    def ack(viewer: Viewer, form: dict[str, str], request: Request) -> Response:
        if not acknowledge(svc, form.get("key", ""), viewer.role):
            raise NotFoundError(f"no current alert {form.get('key', '')!r}; it may have cleared")
        return see_other("/ui/alerts")

    def verify_now(viewer: Viewer, form: dict[str, str], request: Request) -> Response:
        started = []
        for vm in sorted({p.vm for p in svc.vaults.get().catalog.points()}):
            if svc.runner.busy(vm) is None:
                started.append(svc.runner.submit("verify", vm, verify_job(vm, read_data=True), trigger="api"))
        msg = (f"verify started for {len(started)} VM(s): jobs {', '.join(f'#{j}' for j in started)}" if started
               else "nothing to verify (no points, or every VM is busy)")
        return html("Vault", vaultpage.render(svc, viewer, msg), viewer)

    def gc_now(viewer: Viewer, form: dict[str, str], request: Request) -> Response:
        job = svc.runner.submit("gc", None, gc_job(svc.scheduler.gc_grace), trigger="api")
        return see_other(f"/ui/jobs/{job}")

    app.add_api_route("/ui/jobs", jobs_get, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/jobs/{job_id}", job_get, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/alerts", alerts_get, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/alerts/ack", action(ack), methods=["POST"], include_in_schema=False)
    app.add_api_route("/ui/vault", view("Vault", lambda v: vaultpage.render(svc, v)), methods=["GET"],
                      include_in_schema=False)
    app.add_api_route("/ui/vault/verify", action(verify_now), methods=["POST"], include_in_schema=False)
    app.add_api_route("/ui/vault/gc", action(gc_now), methods=["POST"], include_in_schema=False)

    json_miss = app.exception_handlers.get(HTTPException)

    async def no_page(request: Request, exc: Exception) -> Response:
        """A console address or method that no route answers: the login page without credentials, so that an
        anonymous caller learns nothing; else an HTML not-found page. Other paths keep the API's JSON answer."""
        if not (isinstance(exc, HTTPException) and exc.status_code in (404, 405) and is_console(request.url.path)):
            if json_miss is None:
                raise exc
            got = json_miss(request, exc)
            return await got if isinstance(got, Awaitable) else got
        viewer = sessions.viewer(request)
        if viewer is None:
            return login_page("log in to see this page", 401)
        return error_page(NotFoundError(f"no such console page ({request.method} {request.url.path})"), viewer)

    app.add_exception_handler(HTTPException, no_page)
    return sessions
