"""The restore driver for QEMU VMs reached by QMP: a new VM is the captured command line rewritten onto the restored
images (``start.sh``), replace writes the VM's own disk files, instant runs from the point over NBD."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import NotFoundError
from ..errors import UsageError
from ..vault.manifest import Manifest
from ..vault.vault import Vault
from ..vmconfig import QmpVmConfig
from . import launch, replace, vmsetup
from .cmdline import Rewritten
from .driver import NewMachine, NewVmDone, Registration, RestoreDriver
from .images import Progress, RestoredFile
from .results import InstantResult, NewDisk, NewVmResult, ReplacedDisk, ReplaceResult
from .targets import Instant


class QmpRestoreDriver(RestoreDriver):
    kind = "qmp"

    def __init__(self, vault: Vault, m: Manifest, cfg: QmpVmConfig | None) -> None:
        self.cfg = cfg
        self.address = _address(vault, m.vm)

    def new_machine(self, vault: Vault, m: Manifest, name: str) -> NewMachine:
        return _QemuMachine(m, vmsetup.qmp_config(m, self.cfg), name)

    def replace(self, vault: Vault, m: Manifest, progress: Progress | None) -> ReplaceResult:
        """The VM must be stopped: any of three witnesses (``launch.running_reason``) refuses; then only differing
        chunks are written (``replace.py``)."""
        t0 = time.monotonic()
        plan = replace._plan(m)
        cfg = self.cfg
        qmp = self.address or (cfg.qmp_address if cfg else None)

        def stopped() -> None:
            why = launch.running_reason(qmp, cfg.pid if cfg else None, cfg.start_time if cfg else None,
                                        [p for _, p, _ in plan])
            if why:
                where = qmp or "its QMP socket"
                raise UsageError(f"VM {m.vm!r} is running ({why}); stop it first (shut the guest down, or send the "
                                 f"QMP command 'quit' to {where}), then retry --replace")

        stopped()
        disks = [ReplacedDisk.from_engine(r)
                 for r in replace.replace_planned(vault, m, plan, progress, before_write=stopped)]
        dt = time.monotonic() - t0
        compared = sum(d.bytes_compared for d in disks)
        return ReplaceResult(vm=m.vm, point=m.point, disks=disks, duration_s=round(dt, 3),
                             rate_bytes_s=round(compared / max(dt, 1e-6)))

    def instant(self, vault: Vault, m: Manifest, target: Instant) -> InstantResult:
        from .instant import instant_restore
        return instant_restore(vault, m, vmsetup.qmp_config(m, self.cfg), target)


class _QemuMachine(NewMachine):
    def __init__(self, m: Manifest, cfg: QmpVmConfig, name: str) -> None:
        self.m, self.cfg, self.name = m, cfg, name
        self.rw: Rewritten | None = None
        self.spec = self.script = Path()
        self.pid: int | None = None
        self.disks: list[NewDisk] = []

    def define(self, vmdir: Path, images: list[RestoredFile], fmt: str) -> None:
        m, cfg = self.m, self.cfg
        paths = {f.disk: f.path for f in images}
        self.rw = vmsetup.command_line(m, cfg, self.name, vmdir, vmsetup.targets(m, cfg, paths, fmt))
        self.disks = [NewDisk.of(f, fmt) for f in images]
        extra = {"name": self.name, "restored_from": {"vm": m.vm, "point": m.point}, "source": cfg.source,
                 "disks": [d.to_json() for d in self.disks]}
        self.spec, self.script = vmsetup.write_spec(vmdir, self.rw, extra)

    def start(self) -> None:
        assert self.rw is not None
        self.pid = launch.start(self.rw, Path(self.spec).parent / "qemu.log")

    def registration(self) -> Registration:
        assert self.rw is not None
        return Registration("qmp", str(self.rw.qmp), {"restored_from": {"vm": self.m.vm, "point": self.m.point},
                                                      "dir": str(self.spec.parent), "pid": self.pid})

    def discard(self) -> None:
        if self.pid and self.rw is not None:
            launch.stop(self.rw.qmp, self.pid)

    def result(self, done: NewVmDone) -> NewVmResult:
        assert self.rw is not None
        total = sum(f.size for f in done.files)
        return NewVmResult(vm=self.m.vm, point=self.m.point, new_vm=self.name, dir=done.dir, disks=self.disks,
                           script=self.script, config=self.spec, config_source=self.cfg.source, qmp=self.rw.qmp,
                           started=done.started, pid=self.pid, registered=done.registered,
                           warnings=self.rw.warnings, restore_s=round(done.restore_s, 3),
                           duration_s=round(done.duration_s, 3), rate_bytes_s=vmsetup.rate(total, done.restore_s))


def _address(vault: Vault, name: str) -> str | None:
    """The registered QMP socket of VM ``name`` (None when it is no longer registered)."""
    try:
        return vault.catalog.vm(name).address
    except NotFoundError:
        return None
