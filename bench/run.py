"""``make bench``: cutpoint measured side by side with the physical limit and the tools users pick instead.

Writes bench/results/latest.json (and a dated copy), PNG plots, and prints a table. Targets are reported, never
asserted. ``--quick`` uses a small dataset and one run per case, to check the harness itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases_chain  # noqa: E402
import cases_engine  # noqa: E402
import cases_libvirt  # noqa: E402
import cases_pause  # noqa: E402
import cases_s3  # noqa: E402
import cases_throughput  # noqa: E402
import dataset  # noqa: E402
import harness  # noqa: E402
import instant_restore  # noqa: E402
import report  # noqa: E402
from harness import MiB  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def rss_vs_size(ds: dict[str, Path], work: Path) -> dict[str, object]:
    """Peak RSS of a full backup of the sys disk, and of a disk 4x larger holding the same data (rest sparse)."""
    big = work / "big.raw"
    big.unlink(missing_ok=True)
    subprocess.run(["cp", "--sparse=always", str(ds["sys"]), str(big)], check=True)
    os.truncate(big, 4 * ds["sys"].stat().st_size)
    out = {}
    for label, disk in (("1x", ds["sys"]), ("4x", big)):
        vault = work / f"vault-rss-{label}"
        shutil.rmtree(vault, ignore_errors=True)
        env = {"CUTPOINT_VAULT": str(vault), "CUTPOINT_WORK": str(work / "cw")}
        with harness.bare_qemu({"sys": disk}) as vm:
            harness.cutpoint("vault", "init", "--no-encrypt", env=env)
            harness.cutpoint("vm", "add", "rss", "--qmp", str(vm.qmp), env=env)
            t = harness.cutpoint("backup", "rss", "--json", env=env)
        out[label] = {"disk_bytes": disk.stat().st_size, "rss_mib": t.rss_mib, "seconds": t.seconds}
        shutil.rmtree(vault, ignore_errors=True)
    big.unlink()
    return out


def instant(work: Path, sizes: list[int]) -> list[dict[str, object]]:
    """Instant restore time-to-running for each disk size (GiB), in private vault/lab/VM directories."""
    saved = {k: os.environ.get(k) for k in ("CUTPOINT_VAULT", "CUTPOINT_WORK", "CUTPOINT_LAB", "CUTPOINT_VMS")}
    for k, sub in (("CUTPOINT_VAULT", "vault-instant"), ("CUTPOINT_WORK", "cw"), ("CUTPOINT_LAB", "lab"),
                   ("CUTPOINT_VMS", "vms")):
        os.environ[k] = str(work / sub)
    try:
        return [instant_restore.one(s) for s in sizes]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small dataset, one run: checks the harness")
    ap.add_argument("--only", nargs="*", default=None, help="cases to run: throughput libvirt chain engine pause rss instant s3")
    args = ap.parse_args()
    runs = 1 if args.quick else 3
    # Whole processes are timed as an installed cutpoint runs: with its bytecode compiled (pip compiles a package at
    # install). Without it, and with PYTHONDONTWRITEBYTECODE set, every process compiles each module it imports
    # (0.1-0.2 s more per backup here). compileall writes the caches whatever that variable says.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(harness.REPO / "src" / "cutpoint")], check=True)
    work = dataset.WORK / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ds = dataset.build(256 * MiB, 128 * MiB) if args.quick else dataset.build()
    wanted = set(args.only or ["throughput", "libvirt", "chain", "engine", "pause", "rss", "instant", "s3"])
    results: dict[str, object] = {"machine": harness.machine(), "quick": args.quick,
                                  "dataset": {k: str(v) for k, v in ds.items()}}
    t0 = time.monotonic()
    steps = [("throughput", lambda: cases_throughput.run_case(ds, work, runs)),
             ("libvirt", lambda: cases_libvirt.run_case(ds, work, runs)),
             ("chain", lambda: cases_chain.run_case(ds, work, runs)),
             ("engine", lambda: cases_engine.run_case(ds, work)),
             ("pause", lambda: cases_pause.run_case(work, 2 if args.quick else 5)),
             ("rss", lambda: rss_vs_size(ds, work)),
             ("instant", lambda: instant(work, [1] if args.quick else [1, 8])),
             ("s3", lambda: cases_s3.run_case(ds, work, runs))]
    for name, fn in steps:
        if name not in wanted:
            continue
        print(f"== {name} ...", flush=True)
        s = time.monotonic()
        try:
            results[name] = fn()
        except (Exception, SystemExit) as exc:  # a failed case is reported, the others still run
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"   {time.monotonic() - s:.0f} s", flush=True)
    results["total_seconds"] = time.monotonic() - t0
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = "quick" if args.quick else "latest"
    if args.only and (RESULTS / f"{name}.json").exists():   # a partial run updates its cases, keeps the others
        merged = json.loads((RESULTS / f"{name}.json").read_text())
        merged.update(results)
        results = merged
    harness.write_json(RESULTS / f"{name}.json", results)
    if not args.quick and not args.only:
        harness.write_json(RESULTS / f"run-{stamp}.json", results)
    print(report.table(results))
    report.plots(results, RESULTS, prefix=name)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
