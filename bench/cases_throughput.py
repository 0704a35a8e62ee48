"""Full-backup throughput and bytes stored: cutpoint against the physical limit (reading the NBD export) and the
tools a user would pick instead, all on the same disks."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import harness
from harness import MiB, median


def raw_nbd_read(qmp: Path, work: Path) -> float:
    """Seconds to read every byte of every disk from a fleecing export with libnbd, discarding the data."""
    from cutpoint.cut.plan import plan_cut
    from cutpoint.drivers.qmp.cleanup import release_cut
    from cutpoint.drivers.qmp.cut import take_cut
    from cutpoint.drivers.qmp.disks import discover
    from cutpoint.drivers.qmp.qmp import QmpSession
    from cutpoint.reader.export import ExportReader

    from cutpoint.cut.cleanup import workdir_for
    from cutpoint.paths import work_home

    with QmpSession(qmp) as s:
        disks = discover(s).disks
        cut = plan_cut(qmp, workdir_for(work_home(), "bench", "20260101T000000Z-0000"), disks, "bench", {})
        take_cut(s, cut)
    try:
        t0 = time.perf_counter()
        for fd in cut.disks:
            with ExportReader(cut.nbd_socket, fd.export) as r:
                size = r.size()
                for off in range(0, size, 4 * MiB):
                    r.pread(off, min(4 * MiB, size - off))
        return time.perf_counter() - t0
    finally:
        release_cut(cut, success=False)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_case(ds: dict[str, Path], work: Path, runs: int) -> dict[str, object]:
    logical = sum(p.stat().st_size for p in ds.values())
    files = [str(p) for p in ds.values()]
    res: dict[str, dict[str, object]] = {}

    def record(name: str, secs: list[float], stored: int | None, rss: list[float] | None = None,
               note: str = "") -> None:
        m = median(secs)
        res[name] = {"seconds": m, "runs": secs, "mib_s": logical / MiB / m, "stored_bytes": stored,
                     "rss_mib": median(rss) if rss else None, "note": note}

    with harness.bare_qemu(ds) as vm:
        record("raw NBD read", [raw_nbd_read(vm.qmp, work) for _ in range(runs)], None,
               note="libnbd pread of every byte of the fleecing exports, data discarded: the limit")
        for label, encrypt in (("cutpoint", False), ("cutpoint (encrypted)", True)):
            secs, rss, stored = [], [], 0
            for i in range(runs):
                vault = work / f"vault-{i}"
                shutil.rmtree(vault, ignore_errors=True)
                env = {"CUTPOINT_VAULT": str(vault), "CUTPOINT_WORK": str(work / "cw"),
                       "CUTPOINT_PASSPHRASE": "bench-passphrase"}
                flag = "--encrypt" if encrypt else "--no-encrypt"
                init = subprocess.run([*harness.CUTPOINT, "vault", "init", flag], env={**os.environ, **env},
                                      capture_output=True, text=True)
                if init.returncode != 0:
                    res[label] = {"not_run": f"'cutpoint vault init {flag}' failed: {init.stderr.strip()}"}
                    break
                harness.cutpoint("vm", "add", "bench", "--qmp", str(vm.qmp), env=env)
                t = harness.cutpoint("backup", "bench", "--json", env=env)
                secs.append(t.seconds)
                rss.append(t.rss_mib)
                stored = du(vault)
            else:
                record(label, secs, stored, rss, "whole 'cutpoint backup' process incl. start-up; fresh vault each run")
    out = work / "convert.raw"
    secs = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for f in files:
            subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", f, str(out)], check=True)
            out.unlink()
        secs.append(time.perf_counter() - t0)
    record("qemu-img convert", secs, None, note="plain copy of the image files to raw files (sparse-aware)")
    res.update(_restic(files, work, runs, logical))
    res.update(_borg(files, work, runs, logical))
    res["virtnbdbackup"] = {"not_run": "backs up libvirt domains only: measured in the libvirt case (the 'via libvirt' "
                                       "block), against cutpoint on the same domain"}
    limit = res["raw NBD read"]["mib_s"]
    for v in res.values():
        if "mib_s" in v:
            v["ratio_to_raw_read"] = v["mib_s"] / limit   # type: ignore[operator]
    return {"logical_bytes": logical, "tools": res}


def _restic(files: list[str], work: Path, runs: int, logical: int) -> dict[str, object]:
    if not shutil.which("restic"):
        return {"restic": {"not_run": "restic is not installed (apt-get install restic)"}}
    secs, rss = [], []
    stored = 0
    for i in range(runs):
        repo = work / f"restic-{i}"
        shutil.rmtree(repo, ignore_errors=True)
        env = {"RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(repo), "RESTIC_CACHE_DIR": str(work / "rc")}
        harness.run(["restic", "init", "-q"], env)
        t = harness.run(["restic", "backup", "-q", *files], env)
        secs.append(t.seconds)
        rss.append(t.rss_mib)
        stored = du(repo)
    m = median(secs)
    return {"restic": {"seconds": m, "runs": secs, "mib_s": logical / MiB / m, "stored_bytes": stored,
                       "rss_mib": median(rss), "note": "restic backup of the raw image files (always encrypted)"}}


def _borg(files: list[str], work: Path, runs: int, logical: int) -> dict[str, object]:
    if not shutil.which("borg"):
        return {"borg": {"not_run": "borg is not installed (apt-get install borgbackup)"}}
    secs, rss = [], []
    stored = 0
    for i in range(runs):
        repo = work / f"borg-{i}"
        shutil.rmtree(repo, ignore_errors=True)
        env = {"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes", "BORG_BASE_DIR": str(work / "borgbase")}
        harness.run(["borg", "init", "-e", "none", str(repo)], env)
        t = harness.run(["borg", "create", f"{repo}::a", *files], env)
        secs.append(t.seconds)
        rss.append(t.rss_mib)
        stored = du(repo)
    m = median(secs)
    return {"borg": {"seconds": m, "runs": secs, "mib_s": logical / MiB / m, "stored_bytes": stored,
                     "rss_mib": median(rss), "note": "borg create of the raw image files, lz4, unencrypted"}}
