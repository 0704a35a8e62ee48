"""The console over a real vault and service (fake backups on a fake clock): login and sessions, CSRF and roles,
field errors instead of 500s, and hostile strings escaped (the service is conftest.py's ``env``). Points with real
filesystems are in test_real_point.py; the real-browser run is test_browser.py.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from cutpoint.api.console import routes as console
from cutpoint.api.console.session import COOKIE
from cutpoint.catalog.db import VmRecord
from cutpoint.errors import HypervisorError
from tests.api.console.helpers import login, wait_idle

HOSTILE = '<script>alert("x")</script>&<img src=x onerror=alert(1)>'


def test_root_is_the_login_page_without_credentials_and_the_dashboard_with_them(env) -> None:
    client, tokens, _, _ = env
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert 'name="token"' in r.text and "API token" in r.text and "web" not in r.text
    for bad in ("Bearer wrong-token-xxxxxxxxxxxx", "Basic abc", "Bearer "):
        r = client.get("/", headers={"Authorization": bad})
        assert r.status_code == 200 and 'name="token"' in r.text, bad
    r = client.get("/", headers={"Authorization": f"Bearer {tokens['operator']}"})
    assert r.status_code == 200 and "Protection" in r.text and 'href="/ui/vms/web"' in r.text
    assert "script-src" not in r.headers["content-security-policy"]      # default-src 'none': no script at all
    r = client.get("/ui/vms/web")
    assert r.status_code == 401 and 'name="token"' in r.text            # other pages: the login page, never JSON
    login(client, tokens["read-only"])
    r = client.get("/")
    assert r.status_code == 200 and 'href="/ui/vms/web"' in r.text


def test_wrong_and_expired_login_get_the_login_page(env) -> None:
    client, tokens, _, _ = env
    r = client.post("/login", data={"token": "not-a-token"}, follow_redirects=False)
    assert r.status_code == 401 and "not valid" in r.text and 'name="token"' in r.text
    assert "set-cookie" not in r.headers
    client.cookies.set(COOKIE, "forged-session-id")
    assert 'name="token"' in client.get("/").text
    for body in (b"\xff\xfe=%%%", b"token=" + b"a" * 100000):
        r = client.post("/login", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code in (400, 401) and 'name="token"' in r.text
    login(client, tokens["operator"])
    sessions = client.app.state.console_sessions  # type: ignore[attr-defined]
    for s in sessions._by_id.values():
        s.expires = 0.0                                              # expired
    r = client.get("/ui/vault")
    assert r.status_code == 401 and 'name="token"' in r.text


def test_forged_post_and_read_only_session_are_refused(env) -> None:
    client, tokens, svc, fb = env
    r = client.post("/ui/vms/web/backup", headers={"Authorization": f"Bearer {tokens['operator']}"},
                    data={"consistency": ""})
    assert r.status_code == 403                                               # forms need the browser session
    csrf = login(client, tokens["operator"])
    r = client.post("/ui/vms/web/backup", data={"consistency": ""})            # no CSRF token: a forged form
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.post("/ui/vms/web/backup", data={"csrf": "guess", "consistency": ""})
    assert r.status_code == 403
    wait_idle(svc)
    assert fb.calls == [] and svc.jobs.list() == []

    client.cookies.clear()
    ro_csrf = login(client, tokens["read-only"])
    assert ro_csrf != csrf
    for path in ("/", "/ui/vms/web", "/ui/policies", "/ui/vault", "/ui/alerts", "/ui/jobs"):
        page = client.get(path).text
        posts = re.findall(r'<form[^>]*method="post"[^>]*action="([^"]+)"', page)
        assert posts == ["/logout"], (path, posts)                           # no button that changes anything
        assert "Back up now" not in page and "Verify now" not in page
    for path, data in (("/ui/vms/web/backup", {}), ("/ui/policies", {"name": "p"}), ("/ui/vault/gc", {}),
                       ("/ui/vault/verify", {}), ("/ui/vms/web/policy", {"policy": ""})):
        r = client.post(path, data={"csrf": ro_csrf, **data})
        assert r.status_code == 403 and "read-only" in r.text, path
    wait_idle(svc)
    assert fb.calls == [] and svc.jobs.list() == [] and svc.policies.all() == []


def test_back_up_now_with_a_consistency_choice(env) -> None:
    client, tokens, svc, fb = env
    csrf = login(client, tokens["operator"])
    r = client.post("/ui/vms/web/backup", data={"csrf": csrf, "consistency": "bogus"})
    assert r.status_code == 422 and "is not crash or app" in r.text and 'id="f-consistency-err"' in r.text
    r = client.post("/ui/vms/web/backup", data={"csrf": csrf, "consistency": "app"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/jobs/")
    wait_idle(svc)
    assert fb.consistency == ["app"]
    job = client.get(r.headers["location"])
    assert job.status_code == 200 and "succeeded" in job.text
    vm = client.get("/ui/vms/web").text
    assert "<svg" in vm and svc.vaults.get().catalog.points("web")[0].id in vm


def test_policy_field_errors_are_shown_beside_the_field(env) -> None:
    client, tokens, svc, _ = env
    csrf = login(client, tokens["operator"])
    good = {"csrf": csrf, "name": "nightly", "timezone": "Europe/Berlin", "schedule.frequency": "daily",
            "schedule.time": "02:00", "retention.last": "3"}
    cases = [({"schedule.time": "7pm"}, "schedule-time", "not a time of day"),
             ({"timezone": "Nowhere/Land"}, "timezone", "unknown time zone"),
             ({"retention.last": "x"}, "retention-last", "not a whole number"),
             ({"retention.last": "0"}, "retention-last", "keeps no point"),
             ({"name": "../etc"}, "name", "not a valid name"),
             ({"schedule.frequency": "hourly", "schedule.every": "5"}, "schedule-every", "is not one of"),
             ({"consistency": "maybe"}, "consistency", "is not one of")]
    for change, fid, needle in cases:
        r = client.post("/ui/policies", data={**good, **change})
        assert r.status_code == 422, (change, r.text)
        m = re.search(rf'id="f-{fid}-err"[^>]*>([^<]*)<', r.text)
        assert m and needle in m.group(1), (change, r.text)
    assert svc.policies.all() == []
    r = client.post("/ui/policies", data=good, follow_redirects=False)
    assert r.status_code == 303
    page = client.get("/ui/policies/nightly").text
    assert "Next runs: 2024-06-02T00:00:00.000Z" in page        # 02:00 Berlin summer time
    r = client.post("/ui/vms/web/policy", data={"csrf": csrf, "policy": "nope"})
    assert r.status_code == 422 and 'id="f-policy-err"' in r.text
    r = client.post("/ui/vms/web/policy", data={"csrf": csrf, "policy": "nightly"})
    assert r.status_code == 200 and "policy assigned" in r.text
    assert "web" in client.get("/ui/policies").text.split("nightly", 1)[1]
    r = client.post("/ui/policies/nightly", data={**good, "schedule.time": "25:00"})
    assert r.status_code == 422 and 'id="f-schedule-time-err"' in r.text


def test_bad_input_anywhere_is_a_page_never_a_500(env, tmp_path: Path) -> None:
    client, tokens, svc, _ = env
    csrf = login(client, tokens["operator"])
    for path in ("/ui/vms/nope", "/ui/vms/web/points/nope", "/ui/jobs/abc", "/ui/jobs/99999999999999999999",
                 "/ui/jobs/5", "/ui/policies/nope", "/ui/jobs?state=bogus&kind=x", "/ui/vms/web/points/x/files",
                 "/ui/vms/web/points/x/download?part=-1", "/ui/vms/%3Cb%3E"):
        r = client.get(path)
        assert r.status_code < 500 and "text/html" in r.headers["content-type"], (path, r.status_code, r.text)
        assert "Traceback" not in r.text
    fb_post = [("/ui/vms/nope/backup", {}), ("/ui/vms/web/points/nope/restore", {"to": "/", "format": "raw"}),
               ("/ui/alerts/ack", {"key": "job:1"}), ("/ui/policies/nope", {"name": "nope"}),
               ("/ui/vms/web/backup", {"full": "maybe"})]
    for path, data in fb_post:
        r = client.post(path, data={"csrf": csrf, **data})
        assert 400 <= r.status_code < 500 and "text/html" in r.headers["content-type"], (path, r.text)
    client.post("/ui/vms/web/backup", data={"csrf": csrf})
    wait_idle(svc)
    pid = svc.vaults.get().catalog.points("web")[0].id
    for data, fld in (({"to": "relative", "format": "raw"}, "to"), ({"to": "/etc", "format": "raw"}, "to"),
                      ({"to": str(tmp_path / "x"), "format": "vmdk"}, "format")):
        r = client.post(f"/ui/vms/web/points/{pid}/restore", data={"csrf": csrf, **data})
        assert r.status_code == 422 and f'id="f-{fld}-err"' in r.text, (data, r.text)


def test_hostile_strings_are_escaped(env) -> None:
    client, tokens, svc, fb = env
    fb.fail = lambda t: True
    svc.vaults.get().catalog.update_vm("web", settings={"note": HOSTILE})

    def boom(vault, vm, opts):
        raise HypervisorError(HOSTILE)
    svc.scheduler.backup_fn = boom
    csrf = login(client, tokens["operator"])
    client.post("/ui/vms/web/backup", data={"csrf": csrf})
    wait_idle(svc)
    svc.vaults.get().catalog.add_vm(VmRecord("evil", "qmp", f"/tmp/{HOSTILE}.sock", HOSTILE, {}))
    for path in ("/ui/jobs", "/ui/jobs/1", "/ui/alerts", "/", "/ui/vms/evil"):
        page = client.get(path).text
        assert "<script>" not in page and "<img src=x" not in page, path
        assert "&lt;script&gt;" in page or path == "/", path


def test_console_routes_are_the_ones_is_console_exempts(env) -> None:
    client, tokens, svc, _ = env
    from fastapi import FastAPI
    bare = FastAPI()
    before = {getattr(r, "path", "") for r in bare.routes}
    console.install(bare, svc, tokens, Path("/nonexistent"))
    added = {getattr(r, "path", "") for r in bare.routes} - before
    assert "/" in added and "/ui/policies" in added
    assert [p for p in added if not console.is_console(p)] == []     # every console route is exempt from bearer
    for path in ("/vms", "/login-x", "/jobs", "/report/usage"):
        assert client.get(path).status_code == 401, path       # the JSON API still wants its bearer token


def test_restore_wizard_fields_are_checked_before_any_job(env) -> None:
    client, tokens, svc, _ = env
    csrf = login(client, tokens["operator"])
    client.post("/ui/vms/web/backup", data={"csrf": csrf})
    wait_idle(svc)
    pid = svc.vaults.get().catalog.points("web")[0].id
    page = client.get(f"/ui/vms/web/points/{pid}").text
    assert "Everything written since that point is lost" in page and 'id="f-confirm"' in page
    base = f"/ui/vms/web/points/{pid}/restore"
    for kind, data, fld, needle in (
            ("replace", {"confirm": ""}, "confirm", "type the VM name"),
            ("replace", {"confirm": "WEB"}, "confirm", "type the VM name"),
            ("new-vm", {"new_name": "../x", "new_format": "qcow2"}, "new_name", "is not valid"),
            ("new-vm", {"new_name": "web", "new_format": "qcow2"}, "new_name", "already protected"),
            ("new-vm", {"new_name": "copy", "new_format": "vmdk"}, "new_format", "is not one of"),
            ("instant", {"instant_name": ""}, "instant_name", "is not valid")):
        r = client.post(f"{base}/{kind}", data={"csrf": csrf, **data})
        assert r.status_code == 422, (kind, data, r.text)
        m = re.search(rf'id="f-{fld}-err"[^>]*>([^<]*)<', r.text)
        assert m and needle in m.group(1), (kind, data, r.text)
    assert client.post(f"{base}/bogus", data={"csrf": csrf}).status_code == 404
    wait_idle(svc)
    assert [j.kind for j in svc.jobs.list()] == ["backup"]


def test_dashboard_counts_job_outcomes_per_day(env) -> None:
    client, tokens, svc, fb = env
    csrf = login(client, tokens["operator"])
    client.post("/ui/vms/web/backup", data={"csrf": csrf})
    wait_idle(svc)
    fb.fail = lambda t: True
    client.post("/ui/vms/web/backup", data={"csrf": csrf})
    wait_idle(svc)
    page = client.get("/").text
    row = re.search(r"<tr><td>2024-06-01</td>(.*?)</tr>", page)
    assert row, page
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert [re.sub(r"<[^>]+>", "", c) for c in cells] == ["0", "1", "1", "0"]   # running, succeeded, failed, interr.
    assert "job #2 failed" in page                                            # and the failure is an alert
    alerts = client.get("/ui/alerts").text
    key = re.search(r'name="key" value="([^"]+)"', alerts)
    assert key and key.group(1) == "job:2"
    r = client.post("/ui/alerts/ack", data={"csrf": csrf, "key": "job:2"}, follow_redirects=False)
    assert r.status_code == 303
    assert "job #2 failed" not in client.get("/").text and 'name="key"' not in client.get("/ui/alerts").text
    assert "acknowledged" in client.get("/ui/alerts?all=1").text
    assert client.post("/ui/alerts/ack", data={"csrf": csrf, "key": "job:999"}).status_code == 404


def test_running_job_shows_progress_and_the_pages_refresh(env) -> None:
    client, tokens, svc, _ = env
    now = svc.clock.now()
    jid = svc.jobs.start("backup", "web", "api", now)
    svc.jobs.progress(jid, 3 << 20)
    svc.clock.advance(timedelta(seconds=2))  # type: ignore[attr-defined]
    login(client, tokens["read-only"])
    dash = client.get("/").text
    assert '<meta http-equiv="refresh" content="5">' in dash
    assert '<span class="progress">3.0 MiB</span>' in dash and "1.5 MiB/s" in dash
    job = client.get(f"/ui/jobs/{jid}").text
    assert '<meta http-equiv="refresh" content="2">' in job and '<b id="job-bytes">3.0 MiB</b>' in job
    svc.jobs.finish(jid, "succeeded", svc.clock.now())
    assert "http-equiv" not in client.get("/").text and "http-equiv" not in client.get(f"/ui/jobs/{jid}").text


def test_dashboard_shows_the_last_drill_verdicts(env) -> None:
    from cutpoint.catalog.db import DrillRecord
    client, tokens, svc, fb = env
    csrf = login(client, tokens["operator"])
    client.post("/ui/vms/web/backup", data={"csrf": csrf})
    wait_idle(svc)
    cat = svc.vaults.get().catalog
    (pt,) = cat.points("web")
    assert "Last drill verdicts" in client.get("/").text
    cat.set_drill(DrillRecord(pt.id, "failed", "2024-06-01T12:05:00Z",
                              {"verdict": "failed", "rto_s": None, "reasons": [f"console: {HOSTILE}"]}))
    page = client.get("/").text
    section = page[page.index('id="h-drill"'):page.index('id="h-al"')]
    assert pt.id in section and 'class="badge bad">failed<' in section, section
    assert "<script>" not in section and "console: &lt;script&gt;" in section, section


def test_editing_a_policy_keeps_what_the_form_does_not_show(env) -> None:
    from cutpoint.policy.model import Policy
    client, tokens, svc, _ = env
    csrf = login(client, tokens["operator"])
    svc.policies.put(Policy.from_dict({
        "name": "nightly", "schedule": {"frequency": "daily", "time": "02:00"}, "retention": {"last": 3},
        "verify": {"frequency": "weekly", "days": ["sun"], "time": "04:00"}, "drill": {"after_backups": 5},
        "copy": {"to": "s3://offsite/web", "after_backup": True}}))
    before = svc.policies.get("nightly")
    assert before.verify is not None and before.drill is not None and before.copy is not None
    r = client.post("/ui/policies/nightly", data={
        "csrf": csrf, "timezone": "UTC", "schedule.frequency": "daily", "schedule.time": "03:00",
        "retention.last": "4"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    after = svc.policies.get("nightly")
    assert after.schedule.time == "03:00" and after.retention.last == 4
    assert after.verify == before.verify and after.drill == before.drill and after.copy == before.copy


def test_unreadable_logout_form_is_a_page(env) -> None:
    client, tokens, svc, _ = env
    login(client, tokens["operator"])
    r = client.post("/logout", content=b"\xff\xfe", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "text/html" in r.headers["content-type"], (r.status_code, r.text)


def test_vm_timeline_shows_each_points_drill_badge(env) -> None:
    from cutpoint.catalog.db import DrillRecord
    client, tokens, svc, fb = env
    csrf = login(client, tokens["operator"])
    client.post("/ui/vms/web/backup", data={"csrf": csrf})
    wait_idle(svc)
    cat = svc.vaults.get().catalog
    (pt,) = cat.points("web")
    assert "drill:" not in client.get("/ui/vms/web").text          # never drilled: no badge
    cat.set_drill(DrillRecord(pt.id, "passed", "2024-06-01T12:05:00Z",
                              {"verdict": "passed", "rto_s": 4.2, "reasons": []}))
    assert 'class="badge ok" title="2024-06-01T12:05:00Z, RTO 4.2 s">drill: passed<' in client.get("/ui/vms/web").text
    cat.set_drill(DrillRecord(pt.id, "failed", "2024-06-02T12:05:00Z",
                              {"verdict": "failed", "rto_s": None, "reasons": [f"console: {HOSTILE}"]}))
    page = client.get("/ui/vms/web").text
    assert 'class="badge bad"' in page and "drill: failed" in page and "console: &lt;script&gt;" in page
    assert "<script>" not in page


def test_unknown_console_addresses_are_pages(env) -> None:
    """A console address that no page answers (an empty or slash-holding VM name, a typo, a wrong method) is the
    login page without credentials, so that an anonymous caller learns nothing, and an HTML not-found page with
    them; never the API's JSON."""
    client, tokens, _, _ = env
    paths = ("/ui/vms/", "/ui/vms/a%2Fb", "/ui/vms/web/points/", "/ui/nope", "/ui/policies/a%2F..%2Fb",
             "/ui/vms/web/points/x/files/more", "/ui/")
    for path in paths:
        r = client.get(path)
        assert r.status_code == 401 and 'name="token"' in r.text, (path, r.status_code, r.text)
    r = client.post("/ui/jobs", data={"csrf": "x"})
    assert r.status_code == 401 and 'name="token"' in r.text, r.text
    login(client, tokens["read-only"])
    for method, path in [("GET", p) for p in paths] + [("POST", "/ui/jobs"), ("POST", "/ui/vms/web/points/x")]:
        r = client.request(method, path)
        assert r.status_code == 404 and "text/html" in r.headers["content-type"], (path, r.status_code, r.text)
        assert "<h1>Not found</h1>" in r.text and "no such console page" in r.text, (path, r.text)


def test_vm_timeline_shows_whether_a_point_is_immutable(env) -> None:
    from cutpoint.vault import protection
    client, tokens, svc, fb = env
    csrf = login(client, tokens["operator"])
    client.post("/ui/vms/web/backup", data={"csrf": csrf})
    wait_idle(svc)
    assert "immutable until" not in client.get("/ui/vms/web").text        # a vault without immutability
    vault = svc.vaults.get()
    protection.change(vault, 36500, None)
    (pt,) = vault.catalog.points("web")
    from datetime import timedelta
    from cutpoint.vault.prune import parse_created
    until = parse_created(pt.created) + timedelta(days=36500)
    assert f'(vault: 36500 days)">immutable until {until:%Y-%m-%d %H:%M}Z</span>' in client.get("/ui/vms/web").text
