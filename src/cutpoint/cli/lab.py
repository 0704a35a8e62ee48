"""``cutpoint lab``: boot throwaway QEMU guests running the ordered-write workload, and judge disk images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConsistencyViolation, UsageError
from ..units import human, parse_size

if TYPE_CHECKING:
    from ..lab.vm import DiskSpec


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("lab", help="lab VMs running an ordered-write workload, and the consistency verifier")
    ls = p.add_subparsers(dest="lab_command", metavar="ACTION")
    ls.required = True

    u = ls.add_parser("up", help="boot a lab VM (or restart a stopped one on its disks) and print it as JSON")
    u.add_argument("name")
    u.add_argument("--disks", type=int, default=2, help="number of disks (default 2)")
    u.add_argument("--size", default="128M", help="size of every disk (default 128M)")
    u.add_argument("--sizes", help="comma-separated size per disk, e.g. 64M,128M (overrides --disks/--size)")
    u.add_argument("--format", choices=("qcow2", "raw"), default="qcow2")
    u.add_argument("--attach", choices=("blockdev", "drive"), default="blockdev",
                   help="blockdev: stable node names disk0, disk1...; drive: legacy -drive, generated node names")
    u.add_argument("--cdrom", action="store_true", help="add an empty CD-ROM (backups must skip it)")
    u.add_argument("--no-workload", action="store_true", help="boot without starting the workload")
    u.add_argument("--agent", action="store_true",
                   help="run qemu-guest-agent (virtio-serial, socket qga.sock in the VM's directory); the disks get "
                        "ext4 filesystems, mounted in the guest, and the workload writes files through them")
    u.add_argument("--seed", type=int, help="workload seed (default: the previous one, else random)")
    u.add_argument("--slots", type=int, default=256, help="slots per disk (default 256)")
    u.add_argument("--rate", type=int, default=0, help="writes per second, 0 = as fast as possible")
    u.add_argument("--memory", type=int, default=256, help="guest memory in MiB")
    u.add_argument("--timeout", type=float, default=60, help="seconds to wait for the workload to start")
    u.set_defaults(func=cmd_up)

    d = ls.add_parser("down", help="stop a lab VM (its disks stay unless --rm)")
    d.add_argument("name")
    d.add_argument("--rm", action="store_true", help="also delete its directory and disks")
    d.set_defaults(func=cmd_down)

    li = ls.add_parser("list", help="list lab VMs")
    li.add_argument("--json", action="store_true")
    li.set_defaults(func=cmd_list)

    v = ls.add_parser("verify", help="judge whether images hold a prefix of the workload's write order")
    v.add_argument("path", type=Path, nargs="+", help="a directory of images, or the image files themselves")
    v.add_argument("--ordered", action="store_true", help="also require image i to hold disk i")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_verify)

    b = ls.add_parser("build", help="build (or find cached) the lab guest kernel and initramfs")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.set_defaults(func=cmd_build)


def _specs(args: argparse.Namespace) -> list[DiskSpec]:
    from ..lab.vm import DiskSpec

    if args.sizes:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    else:
        if args.disks < 1:
            raise UsageError("--disks must be at least 1")
        sizes = [parse_size(args.size)] * args.disks
    return [DiskSpec(size=s, fmt=args.format, attach=args.attach) for s in sizes]


def _dump(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")


def cmd_up(args: argparse.Namespace) -> int:
    from ..lab import vm as labvm

    vm = labvm.up(args.name, _specs(args), seed=args.seed, slots=args.slots, workload=not args.no_workload,
                  cdrom=args.cdrom, memory_mb=args.memory, timeout=args.timeout, rate=args.rate, agent=args.agent)
    _dump(vm.to_json())
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from ..lab import vm as labvm

    labvm.down(args.name, remove=args.rm)
    print(f"lab VM {args.name} {'removed' if args.rm else 'stopped'}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ..lab import vm as labvm

    vms = labvm.list_vms()
    if args.json:
        _dump([v.to_json() for v in vms])
        return 0
    if not vms:
        print("no lab VMs")
        return 0
    rows = [["name", "state", "pid", "accel", "disks", "qmp"]]
    for v in vms:
        disks = ", ".join(f"{human(dk['size'])} {dk['format']}" for dk in v.disks)
        rows.append([v.name, "running" if v.running else "stopped", str(v.pid if v.running else "-"), v.accel,
                     disks, str(v.qmp)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..lab.verify import verify_dir, verify_images

    if len(args.path) == 1 and args.path[0].is_dir():
        verdict = verify_dir(args.path[0], strict_order=args.ordered)
    else:
        verdict = verify_images(args.path, strict_order=args.ordered)
    if args.json:
        _dump(verdict.to_json())
    else:
        print(verdict.summary())
        for i, p in enumerate(verdict.disks):
            print(f"  disk{i}: {p or '(missing)'}")
        for p in verdict.ignored:
            print(f"  ignored (no workload data): {p}")
    return 0 if verdict.ok else ConsistencyViolation.exit_code


def cmd_build(args: argparse.Namespace) -> int:
    from ..lab import image

    g = image.build(force=args.force)
    _dump({"kernel": str(g.kernel), "initrd": str(g.initrd), "workload": str(g.workload),
           "kernel_version": g.kernel_version, "dir": str(g.dir), "modules": list(g.modules)})
    return 0
