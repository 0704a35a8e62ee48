"""Turning bench results into a table for the terminal and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MiB = 1 << 20
TARGETS = {"ratio_to_raw_read": 0.8, "vs_restic_borg": 3.0, "vs_virtnbdbackup": 1.5, "pause_4_disks_ms": 2.0,
           "rss_mib": 256.0, "inc1_time_vs_full": 0.05}


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def engine_targets(r: dict[str, Any]) -> list[tuple[str, float | None, str, bool | None]]:
    """The storage engine's targets (issue 15): (what, measured, target, met), from one run's results."""
    tools = r.get("throughput", {}).get("tools", {})
    ch, en = r.get("chain", {}), r.get("engine", {})

    def ratio(a: str, b: str) -> float | None:
        try:
            return float(tools[a]["mib_s"]) / float(tools[b]["mib_s"])
        except (KeyError, TypeError, ZeroDivisionError):
            return None

    def get(d: dict[str, Any], *path: str) -> float | None:
        for k in path:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return float(d) if isinstance(d, (int, float)) else None

    lv = r.get("libvirt", {})
    vnb = None
    try:
        vnb = float(lv["tools"]["cutpoint (libvirt)"]["mib_s"]) / float(lv["tools"]["virtnbdbackup -l copy --raw"]["mib_s"])
    except (KeyError, TypeError, ZeroDivisionError):
        pass
    inc = ch.get("incremental_1pct", {})
    stored_x = (inc["stored_bytes"] / inc["changed_bytes"]) if inc.get("changed_bytes") else None
    rows = [("full backup vs restic (whole processes)", ratio("cutpoint", "restic"), ">= 2.5x", 2.5),
            ("full backup vs borg", ratio("cutpoint", "borg"), ">= 2x", 2.0),
            ("full backup vs virtnbdbackup (libvirt)", vnb, ">= 1.5x", 1.5),
            ("engine vs hash+compress on 2 cores (in-process)", get(en, "full", "ratio_to_limit"), ">= 0.7x", 0.7),
            ("1% in 64 KiB writes: time vs full (whole process)", get(inc, "time_vs_full"), "<= 10%", -0.10),
            ("1% in 64 KiB writes: time vs full (in-process)", get(en, "incremental_1pct_64k", "time_vs_full"),
             "<= 10%", -0.10),
            ("1% in 64 KiB writes: stored / changed (VM, whole process)", stored_x, "<= 3x", -3.0),
            ("1% in 64 KiB writes: stored+index / changed (random data)",
             get(en, "incremental_1pct_64k", "stored_vs_changed"), "<= 3x", -3.0),
            ("1% in 1 MiB runs: time vs full (in-process)", get(en, "incremental_1pct_1m", "time_vs_full"),
             "<= 5%", -0.05),
            ("restore vs durable qemu-img convert (whole process)", get(ch, "restore", "ratio"), ">= 0.8x", 0.8),
            ("restore vs durable qemu-img convert (in-process)", get(en, "restore", "ratio_to_convert"), ">= 0.8x",
             0.8),
            ("verify --read-data vs full backup speed (in-process)", get(en, "verify_read_data",
                                                                          "ratio_to_full_backup"), ">= 1x", 1.0),
            ("1 TiB sparse disk: incremental's index vs full's", get(en, "index_1tib", "ratio"), "<= 2%", -0.02),
            ("peak RSS, MiB (4x disk)", get(r.get("rss", {}), "4x", "rss_mib"), "<= 256", -256.0)]
    out: list[tuple[str, float | None, str, bool | None]] = []
    for what, v, text, t in rows:
        met = None if v is None else (v >= t if t > 0 else v <= -t)
        out.append((what, v, text, met))
    return out


def s3_targets(s3: dict[str, Any]) -> list[tuple[str, float | None, str, float]]:
    """Issue 16's targets from the s3 case: (what, measured ratio, target text, threshold)."""
    return [("full backup into S3 vs bare parallel PUTs of the same stored bytes", s3.get("backup_vs_bare_put"),
             ">= 0.8x", 0.8),
            ("full backup into S3 vs restic's S3 backend (whole processes)", s3.get("backup_vs_restic"), ">= 2x", 2.0),
            ("restore from S3 vs bare parallel GETs of the same objects", s3.get("restore_vs_bare_get"), ">= 0.8x",
             0.8)]


def table(r: dict[str, Any]) -> str:
    lines = []
    tp = r.get("throughput", {})
    if "tools" in tp:
        lines.append(f"Full backup of {tp['logical_bytes'] / MiB:.0f} MiB (medians)")
        lines.append(f"{'tool':24} {'MiB/s':>8} {'x raw read':>10} {'stored MiB':>11} {'RSS MiB':>8}")
        for name, v in tp["tools"].items():
            if name == "virtnbdbackup" and "tools" in r.get("libvirt", {}):
                lines.append(f"{name:24} measured through libvirt: see the 'via libvirt' block below")
                continue
            if "not_run" in v:
                lines.append(f"{name:24} not run: {v['not_run']}")
                continue
            stored = v.get("stored_bytes")
            lines.append(f"{name:24} {v['mib_s']:8.1f} {v.get('ratio_to_raw_read', 0):10.2f} "
                         f"{_fmt(stored / MiB if stored else None):>11} {_fmt(v.get('rss_mib')):>8}")
    lines += _libvirt_block(r.get("libvirt", {}))
    en = r.get("engine", {})
    if "full" in en:
        lines.append("")
        lines.append(f"engine in-process: {en['full']['mib_s']:.0f} MiB/s of non-zero data vs hash+compress on 2 cores "
                     f"{en['limit']['mib_s']:.0f} MiB/s; restore {en['restore']['ratio_to_convert']:.2f}x a durable "
                     f"qemu-img convert; verify --read-data {en['verify_read_data']['ratio_to_full_backup']:.2f}x the "
                     f"full's speed; 1 TiB sparse disk: index {en['index_1tib']['full_index_bytes']} B full, "
                     f"{en['index_1tib']['incremental_index_bytes']} B incremental (a flat list: "
                     f"{en['index_1tib']['flat_index_bytes'] / MiB:.0f} MiB)")
        if "index_dense" in en:
            dn = en["index_dense"]
            lines.append(f"full {dn['disk_bytes'] >> 30} GiB disk, 1% of chunks changed at random "
                         f"({dn['leaves_touched']} of {dn['leaves']} leaves touched): index {dn['full_index_bytes']} B "
                         f"full, {dn['incremental_index_bytes']} B incremental ({dn['ratio']:.1%})")
    targets = engine_targets(r)
    if any(m is not None for *_, m in targets):
        lines.append("")
        lines.append("storage engine targets (issue 15):")
        for what, v, text, met in targets:
            val = "-" if v is None else f"{v:.3g}"
            lines.append(f"  {'met   ' if met else 'MISSED' if met is False else 'n/a   '} {what}: {val} ({text})")
    s3 = r.get("s3", {})
    if "seconds" in s3:
        lines.append("")
        lines.append("S3 vaults (issue 16; one local SeaweedFS):")
        for what, v, text, t in s3_targets(s3):
            met = None if v is None else v >= t
            val = "-" if v is None else f"{v:.3g}"
            lines.append(f"  {'met   ' if met else 'MISSED' if met is False else 'n/a   '} {what}: {val} ({text})")
        if "cpu_seconds" in s3:
            c = s3["cpu_seconds"]
            lines.append(f"  CPU seconds on {s3['cores']} cores, server included: backup {c['cutpoint']:.2f} cutpoint + "
                         f"{c['cutpoint_server']:.2f} server + {c['cutpoint_qemu']:.2f} QEMU, bare PUTs "
                         f"{c['bare_put_server']:.2f} server; restore {c['restore']:.2f} + {c['restore_server']:.2f} "
                         f"server, bare GETs {c['bare_get_server']:.2f} server")
            lines.append(f"  best ratios that CPU allows here: backup vs PUTs {s3['backup_vs_bare_put_bound']:.2f}x, "
                         f"restore vs GETs {s3['restore_vs_bare_get_bound']:.2f}x")
    ch = r.get("chain", {})
    if "full" in ch:
        lines.append("")
        lines.append(f"second full of unchanged disks: stored {ch['second_full_unchanged']['stored_bytes']} bytes")
        lines.append(f"clone VM ({ch['clone_vm']['changed_bytes'] / MiB:.0f} MiB changed on a shared base): "
                     f"stored {ch['clone_vm']['stored_bytes'] / MiB:.1f} MiB")
        for label, text in (("1pct_clustered", "1% changed in 1 MiB runs"), ("1pct", "1% changed in 64 KiB writes"),
                            ("10pct", "10% changed in 64 KiB writes")):
            v = ch[f"incremental_{label}"]
            lines.append(f"incremental, {text}: {v['seconds']:.2f} s ({v['time_vs_full']:.1%} of the full's "
                         f"{ch['full']['seconds']:.1f} s; in-process {v['duration_vs_full']:.1%}), read "
                         f"{v['read_bytes'] / MiB:.1f} MiB ({v['read_vs_full']:.1%})")
        rs = ch["restore"]
        lines.append(f"restore: {rs['cutpoint_mib_s']:.0f} MiB/s vs qemu-img convert {rs['qemu_img_convert_mib_s']:.0f}"
                     f" MiB/s ({rs['ratio']:.2f}x)")
    pz = r.get("pause", {})
    if pz and "error" not in pz:
        lines.append("")
        disks = {n: v for n, v in pz.items() if n.isdigit()}
        lines.append("pause_ms (median / max): " + ", ".join(
            f"{n} disk{'s' if n != '1' else ''}: {v['median_ms']:.1f} / {v['max_ms']:.1f}" for n, v in disks.items()))
        lines.append("guest's largest single write, ms (no cut / during cuts): " + ", ".join(
            f"{n} disk{'s' if n != '1' else ''}: {_fmt(v.get('guest_max_write_ms_baseline'))} / "
            f"{_fmt(v.get('guest_max_write_ms_during_cuts'))}" for n, v in disks.items()))
        app = pz.get("app_2_disks")
        if app:
            lines.append(f"app-consistent, 2 disks: pause {app['pause_ms']:.1f} ms, frozen {app['frozen_ms']:.0f} ms "
                         f"(guest filesystems frozen), consistency {sorted(set(app['consistency']))}")
    rss = r.get("rss", {})
    if "1x" in rss:
        lines.append(f"peak RSS: {rss['1x']['rss_mib']:.0f} MiB for {rss['1x']['disk_bytes'] / MiB:.0f} MiB disk, "
                     f"{rss['4x']['rss_mib']:.0f} MiB for {rss['4x']['disk_bytes'] / MiB:.0f} MiB disk")
    inst = r.get("instant")
    if isinstance(inst, list):
        lines.append("instant restore: " + ", ".join(
            f"{i['disk_gib']} GiB disk: QEMU running {i['time_to_running_s']:.2f} s, workload resumed "
            f"{i['time_to_workload_s']:.1f} s, finish {i['finish_s']:.1f} s" for i in inst))
    for k, v in r.items():
        if isinstance(v, dict) and "error" in v:
            lines.append(f"case {k} failed: {v['error']}")
    return "\n".join(lines)


def _libvirt_block(lv: dict[str, Any]) -> list[str]:
    """cutpoint and virtnbdbackup on one libvirt domain: both through libvirt's backup API, not comparable row by row
    with the QMP-path table above (other process, other export path)."""
    if not lv or "error" in lv:
        return []
    lines = [""]
    if "tools" not in lv:
        lines.append(f"via libvirt: virtnbdbackup not run: {lv.get('virtnbdbackup', {}).get('not_run', '?')}")
        return lines
    lines.append(f"Full backup via libvirt of one domain, {lv['logical_bytes'] / MiB:.0f} MiB (medians; {lv['domain']})")
    lines.append(f"{'tool':28} {'seconds':>8} {'MiB/s':>8} {'stored MiB':>11} {'RSS MiB':>8}")
    for name, v in lv["tools"].items():
        if "not_run" in v:
            lines.append(f"{name:28} not run: {v['not_run']}")
            continue
        lines.append(f"{name:28} {v['seconds']:8.2f} {v['mib_s']:8.1f} {v['stored_bytes'] / MiB:11.1f} "
                     f"{_fmt(v.get('rss_mib')):>8}")
    ratio = lv.get("ratio_cutpoint_over_virtnbdbackup")
    if ratio is not None:
        lines.append(f"ratio cutpoint/virtnbdbackup throughput: {ratio:.2f}x (target >= {TARGETS['vs_virtnbdbackup']}x)")
    lines.append("stored = allocated bytes (du) of the vault / of virtnbdbackup's output directory")
    return lines


def plots(r: dict[str, Any], out: Path, prefix: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots")
        return
    tools = {k: v for k, v in r.get("throughput", {}).get("tools", {}).items() if "mib_s" in v}
    if tools:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.barh(list(tools), [v["mib_s"] for v in tools.values()], color="#4a7ab5")
        ax.set_xlabel("MiB/s (logical disk bytes / wall time)")
        ax.set_title("Full backup throughput, same disks")
        ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(out / f"{prefix}-throughput.png", dpi=100)
        plt.close(fig)
    lv = {k: v for k, v in r.get("libvirt", {}).get("tools", {}).items() if "mib_s" in v}
    if lv:
        fig, ax = plt.subplots(figsize=(7, 2.2))
        ax.barh(list(lv), [v["mib_s"] for v in lv.values()], color="#5a9a5a")
        ax.set_xlabel("MiB/s (logical disk bytes / wall time)")
        ax.set_title("Full backup of one libvirt domain")
        ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(out / f"{prefix}-libvirt.png", dpi=100)
        plt.close(fig)
    pz = r.get("pause", {})
    if pz and "error" not in pz:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        disks = {n: v for n, v in pz.items() if n.isdigit()}
        ns = [int(n) for n in disks]
        ax.plot(ns, [v["median_ms"] for v in disks.values()], "o-", label="median")
        ax.plot(ns, [v["max_ms"] for v in disks.values()], "s--", label="max")
        ax.set_xlabel("disks in the cut")
        ax.set_ylabel("guest I/O pause (ms)")
        ax.set_xticks(ns)
        ax.legend()
        ax.set_title("Pause of the atomic cut (TCG guest under load)")
        fig.tight_layout()
        fig.savefig(out / f"{prefix}-pause.png", dpi=100)
        plt.close(fig)
