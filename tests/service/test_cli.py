"""The service's CLI edges: jobs recorded for CLI backups, the token commands, a taken port, the progress bar."""

from __future__ import annotations

import io
import json
import os
import socket
from pathlib import Path

from rich.console import Console

from cutpoint.cli.progress import ProgressLine
from tests.helpers import blockdev_args, cutpoint, make_image


def test_cli_backups_are_jobs(bare_qemu, tmp_path: Path) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "16M", writes=["write -P 1 0 1M"]), "sys"))
    r = cutpoint("backup", "web")
    assert r.code == 3 and json.loads(cutpoint("jobs", "--json", check=True).out) == []   # unknown VM: no job
    cutpoint("vm", "add", "web", "--qmp", str(vm.qmp), check=True)
    res = json.loads(cutpoint("backup", "web", "--json", check=True).out)
    point, read = res["point"], sum(d["read_bytes"] for d in res["disks"])
    assert read == 1 << 20                                    # the 1 MiB written (format v4 reads 64 KiB chunks)
    vm.kill()
    assert cutpoint("backup", "web").code == 4
    jobs = json.loads(cutpoint("jobs", "--json", check=True).out)
    assert [(j["kind"], j["vm"], j["state"], j["trigger"]) for j in jobs] == [
        ("backup", "web", "failed", "manual"), ("backup", "web", "succeeded", "manual")]
    assert jobs[1]["point"] == point and jobs[1]["bytes"] == read and jobs[1]["duration_s"] >= 0
    assert "QMP" in jobs[0]["error"] or "socket" in jobs[0]["error"]
    table = cutpoint("jobs", "--vm", "web", check=True).out
    assert point in table and "failed" in table
    assert json.loads(cutpoint("jobs", str(jobs[1]["id"]), "--json", check=True).out)["point"] == point
    r = cutpoint("jobs", "999")
    assert r.code == 3 and "no job 999" in r.err


def test_cli_restore_prune_and_verify_are_jobs(bare_qemu, tmp_path: Path) -> None:
    vm = bare_qemu(blockdev_args(make_image(tmp_path / "a.qcow2", "16M", writes=["write -P 1 0 1M"]), "sys"))
    cutpoint("vm", "add", "web", "--qmp", str(vm.qmp), check=True)
    first = json.loads(cutpoint("backup", "web", "--json", check=True).out)["point"]
    cutpoint("backup", "web", check=True)
    cutpoint("restore", "web", first, "--to", str(tmp_path / "out"), check=True)
    assert cutpoint("restore", "web", "nosuch", "--to", str(tmp_path / "out2")).code == 3
    cutpoint("verify", "--read-data", check=True)
    cutpoint("prune", "web", "--keep-last", "1", check=True)
    jobs = json.loads(cutpoint("jobs", "--json", check=True).out)
    got = sorted((j["kind"], j["state"]) for j in jobs if j["kind"] != "backup")
    assert got == [("prune", "succeeded"), ("restore", "failed"), ("restore", "succeeded"), ("verify", "succeeded")]
    restore = next(j for j in jobs if j["kind"] == "restore" and j["state"] == "succeeded")
    assert restore["point"] == first and restore["bytes"] == 16 << 20
    assert restore["detail"]["mode"] == "images" and [f["disk"] for f in restore["detail"]["files"]] == ["sys"]
    prune = next(j for j in jobs if j["kind"] == "prune")
    assert prune["detail"]["removed"] == [first]


def test_token_commands_and_a_taken_port() -> None:
    t1 = cutpoint("serve", "--show-token", check=True).out.strip()
    assert cutpoint("serve", "--show-token", check=True).out.strip() == t1 and len(t1) >= 32
    from cutpoint.api.auth import token_path
    path = token_path(Path(os.environ["CUTPOINT_VAULT"]))
    assert path.stat().st_mode & 0o777 == 0o600
    t2 = cutpoint("serve", "--rotate-token", check=True).out.strip()
    assert t2 != t1 and path.read_text().strip() == t2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        r = cutpoint("serve", "--port", str(s.getsockname()[1]), timeout=30)
    assert r.code == 1 and r.err.strip().startswith("cutpoint: error: cannot listen on 127.0.0.1:"), r.err
    r = cutpoint("serve", "--webhook", "ftp://x")
    assert r.code == 2 and "webhook" in r.err


def test_progress_bar_stays_one_bar_when_a_disk_finishes_before_another_starts() -> None:
    """Disks are read at once: a clean disk can report done before the other's first report. The bar must not close
    and start again (it printed a second bar mid-backup)."""
    out = io.StringIO()
    bar = ProgressLine(True, console=Console(file=out, force_terminal=True, width=120))
    bar("sys", 32 << 20, 32 << 20)
    first = bar._bar
    bar("data", 0, 32 << 20)
    bar("data", 32 << 20, 32 << 20)
    assert first is not None and bar._bar is first
    bar.close()
    assert bar._bar is None                           # closed when the operation ends (``with`` in the CLI)
    assert "sys" in out.getvalue() and "data" in out.getvalue()


def test_progress_bar_shows_bytes_and_rate_and_json_silences_it() -> None:
    out = io.StringIO()
    bar = ProgressLine(True, console=Console(file=out, force_terminal=True, width=120))
    for disk in ("sys", "data"):
        for mib in range(0, 33, 4):
            bar(disk, mib << 20, 32 << 20)
    bar.close()                 # its last frame: before it, what is drawn depends on the refresh thread's timing
    text = out.getvalue()
    assert "sys" in text and "data" in text and "32.0/32.0 MiB" in text and "/s" in text
    silent = io.StringIO()
    quiet = ProgressLine(False, console=Console(file=silent, force_terminal=True))
    quiet("sys", 1, 2)
    assert silent.getvalue() == ""
    assert ProgressLine(True).enabled is False        # stderr is not a terminal under pytest
