"""Full backup of one libvirt domain: cutpoint (``vm add --libvirt``) against virtnbdbackup, the tool a libvirt user
would pick instead. Both go through libvirt's pull-mode backup API, so both read the same QEMU NBD exports.

The domain is ``type='qemu'`` (TCG) with sparse copies of the two dataset images as raw virtio disks, started paused:
no guest runs, the backup API only needs the QEMU process (both tools are checked to work on it). virtnbdbackup
backs up raw disks only with ``--raw``, and only as ``-l copy`` (a full backup without a checkpoint: a raw disk
cannot hold the persistent bitmap that ``-l full`` creates; given ``-l full`` it switches to copy by itself). Its
output for a raw disk is a thin raw image (data extents written, zero/hole extents skipped), so "stored" here is the
allocated size (``du``) of each tool's output, for both tools.

Defining and starting the domain is not timed (``define_start_seconds`` records it). It can take a minute: where
/dev/kvm exists but libvirt's QEMU user cannot open it, libvirt finds its cached QEMU capabilities stale ("KVM was
enabled when probing ..., but it is not available now") and probes QEMU again on every lookup.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import harness
from harness import MiB, median

URI = "qemu:///system"
TAG = "cutpoint bench domain, pid"
TAG_RX = re.compile(r"cutpoint bench domain, pid (\d+)")
PREFIX = "cpb-virt-"


def allocated(path: Path) -> int:
    """Bytes allocated on disk under path (what ``du`` reports)."""
    return sum(p.lstat().st_blocks * 512 for p in [path, *path.rglob("*")] if p.exists())


def apparent(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _libvirt_up() -> str | None:
    """None when libvirtd answers on URI (started here if it is not and we are root), else why not."""
    from cutpoint.lab import libvirtd

    return libvirtd.ensure(URI)


def _domain_xml(name: str, disks: list[Path]) -> str:
    devs = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{p}'/>"
        f"<target dev='vd{chr(97 + i)}' bus='virtio'/></disk>" for i, p in enumerate(disks))
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <description>{TAG} {os.getpid()}</description>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>{devs}<memballoon model='none'/></devices>
</domain>"""


def _remove(conn, name: str) -> None:  # type: ignore[no-untyped-def]
    """Destroy (retried: it can time out on a loaded host) and undefine with checkpoint/snapshot metadata."""
    import libvirt

    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    for _ in range(3):
        try:
            if dom.isActive():
                dom.destroy()
            break
        except libvirt.libvirtError:
            time.sleep(1)
    try:
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                          | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    except libvirt.libvirtError:
        pass
    deadline = time.monotonic() + 10
    while Path(f"/run/libvirt/qemu/{name}.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def _remove_orphans(conn) -> None:  # type: ignore[no-untyped-def]
    """Bench domains of a killed run (their finally never ran): only those whose bench process is gone."""
    import libvirt

    for dom in conn.listAllDomains(0):
        if not dom.name().startswith(PREFIX):
            continue
        try:
            m = TAG_RX.search(dom.metadata(libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, None, 0) or "")
        except libvirt.libvirtError:
            continue
        if m and not Path(f"/proc/{m.group(1)}").exists():
            _remove(conn, dom.name())


def run_case(ds: dict[str, Path], work: Path, runs: int) -> dict[str, object]:
    why = _libvirt_up()
    if why is not None:
        return {"virtnbdbackup": {"not_run": f"libvirt cannot run here: {why}"}}
    import libvirt

    d = work / "libvirt"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for p in (work, d):
        os.chmod(p, 0o755)               # libvirt's QEMU runs as another user: it must reach the disks and scratch
    disks = []
    for key in ("sys", "data"):
        dst = d / f"{key}.raw"
        subprocess.run(["cp", "--sparse=always", str(ds[key]), str(dst)], check=True)
        disks.append(dst)
    os.sync()       # the copies' 1.6 GiB written back now, not by the syncfs of the first tool that makes one
    logical = sum(p.stat().st_size for p in disks)
    name = f"{PREFIX}{os.getpid()}-{random.randrange(16**4):04x}"
    conn = libvirt.open(URI)
    res: dict[str, dict[str, object]] = {}
    try:
        _remove_orphans(conn)
        t0 = time.monotonic()
        dom = conn.defineXML(_domain_xml(name, disks))
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        setup = time.monotonic() - t0

        def record(label: str, secs: list[float], rss: list[float], stored: int, app: int, note: str) -> None:
            m = median(secs)
            res[label] = {"seconds": m, "runs": secs, "mib_s": logical / MiB / m, "stored_bytes": stored,
                          "apparent_bytes": app, "rss_mib": median(rss), "note": note}

        vnb = shutil.which("virtnbdbackup")
        vlabel = "virtnbdbackup -l copy --raw"
        vsecs: list[float] = []
        vrss: list[float] = []
        vstored = vapp = 0
        csecs: list[float] = []
        crss: list[float] = []
        cstored = capp = 0
        version = "not installed"
        if vnb is None:
            res[vlabel] = {"not_run": "virtnbdbackup is not installed (scripts/install-deps --bench)"}
        else:
            version = subprocess.run([vnb, "-V"], check=False, capture_output=True, text=True).stdout.strip()
        for i in range(runs):
            if vnb is not None and "not_run" not in res.get(vlabel, {}):
                dest, scratch = d / f"vnb-{i}", d / f"vnb-scratch-{i}"
                shutil.rmtree(dest, ignore_errors=True)
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir(mode=0o755)
                t = harness.run([vnb, "-U", URI, "-d", name, "-l", "copy", "--raw", "-n", "-o", str(dest),
                                 "-S", str(scratch)], check=False)
                if t.code != 0:
                    log = "".join(p.read_text(errors="replace") for p in dest.glob("*.log")) if dest.exists() else ""
                    res[vlabel] = {"not_run": f"virtnbdbackup failed ({t.code}): {(log or t.out)[-600:].strip()}"}
                else:
                    vsecs.append(t.seconds)
                    vrss.append(t.rss_mib)
                    vstored, vapp = allocated(dest), apparent(dest)
                shutil.rmtree(dest, ignore_errors=True)          # keep the disk use of the run bounded
                shutil.rmtree(scratch, ignore_errors=True)
            vault = d / f"vault-{i}"
            shutil.rmtree(vault, ignore_errors=True)
            env = {"CUTPOINT_VAULT": str(vault), "CUTPOINT_WORK": str(d / "cw")}
            harness.cutpoint("vault", "init", "--no-encrypt", env=env)
            harness.cutpoint("vm", "add", "bench", "--libvirt", name, "--connect", URI, env=env)
            t = harness.cutpoint("backup", "bench", "--json", env=env)
            csecs.append(t.seconds)
            crss.append(t.rss_mib)
            cstored, capp = allocated(vault), apparent(vault)
            shutil.rmtree(vault, ignore_errors=True)
        if vsecs and "not_run" not in res.get(vlabel, {}):
            record(vlabel, vsecs, vrss, vstored, vapp,
                   "raw disks: copy mode (no checkpoint), thin raw image per disk; whole process, fresh dir each run")
        record("cutpoint (libvirt)", csecs, crss, cstored, capp,
               "'cutpoint backup' of the domain via libvirt's backup API; whole process, fresh vault each run")
    finally:
        _remove(conn, name)
        conn.close()
        shutil.rmtree(d, ignore_errors=True)
    left = Path(f"/run/libvirt/qemu/{name}.pid").exists()
    out: dict[str, object] = {"logical_bytes": logical, "domain": "type='qemu' (TCG), started paused, 2 raw virtio "
                              "disks (sparse copies of the dataset)", "define_start_seconds": setup, "virtnbdbackup_version": version,
                              "tools": res}
    v, c = res.get(vlabel, {}), res["cutpoint (libvirt)"]
    if "mib_s" in v:
        out["ratio_cutpoint_over_virtnbdbackup"] = c["mib_s"] / v["mib_s"]  # type: ignore[operator]
    else:
        out["virtnbdbackup"] = {"not_run": v.get("not_run", "unknown")}
    if left:
        out["warning"] = f"QEMU of domain {name} still running after destroy"
    return out
