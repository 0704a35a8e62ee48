"""The QMP driver: a QEMU process reached through its monitor socket (see docs/design.md, "The cut")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...cut.agent import AgentError, GuestAgent
from ...cut.cleanup import sweep_workdirs
from ...cut.disks import Disk, Inventory
from ...cut.driver import CutHandle, Driver, DriverSession, ReadTarget
from ...cut.naming import bitmap_name
from ...cut.plan import Cut, plan_cut
from ...cut.quiesce import Quiesce
from . import bitmaps
from .agent import SocketAgent, find_channel
from .cleanup import release_cut, stop_orphan_nbd_server, sweep
from .config import capture
from .cut import take_cut
from .disks import discover
from .qmp import QmpSession


class QmpDriverSession(DriverSession):
    def __init__(self, qmp: Path, vm: str) -> None:
        self.qmp = qmp
        self.vm = vm
        self.s = QmpSession(qmp).open()

    def sweep(self, workdirs: Path) -> list[str]:
        return sweep(self.s) + stop_orphan_nbd_server(self.s, workdirs, self.vm) + sweep_workdirs(workdirs, self.vm)

    def inventory(self) -> Inventory:
        return discover(self.s)

    def chain(self, disk: Disk, prev_point: str | None) -> str | None:
        return bitmaps.reconcile(self.s, disk, bitmap_name(prev_point) if prev_point else None)

    def cut(self, disks: list[Disk], point_id: str, since: dict[str, str | None], workdir: Path,
            quiesce: Quiesce | None = None) -> CutHandle:
        prev = {name: bitmap_name(p) if p else None for name, p in since.items()}
        cut = plan_cut(self.qmp, workdir, disks, point_id, prev)
        try:
            take_cut(self.s, cut, quiesce)
        except BaseException:
            self.close()                        # cleanup needs the monitor
            release_cut(cut, success=False)
            raise
        return CutHandle(cut.nbd_socket, [ReadTarget(fd.disk, fd.export, fd.prev_bitmap) for fd in cut.disks],
                         cut.pause_ms, state=cut)

    def agent(self) -> GuestAgent | None:
        ch = find_channel(self.s)
        if ch is None:
            return None
        if ch.socket is None:
            raise AgentError(f"the guest agent port's chardev {ch.label!r} is {ch.backend!r}, not a unix socket "
                             "QEMU listens on; attach it with -chardev socket,path=PATH,server=on,wait=off or "
                             "name a socket with 'cutpoint vm set NAME --agent-socket PATH'")
        if not ch.guest_open:
            raise AgentError(f"qemu-ga is not running in the guest: the guest has not opened the "
                             f"org.qemu.guest_agent.0 port (chardev {ch.label!r}, socket {ch.socket})")
        return SocketAgent(ch.socket, hint=f"another client is connected to {ch.socket}" if ch.client_connected
                           else "")

    def capture_config(self) -> dict[str, Any] | None:
        return capture(self.s)

    def close(self) -> None:
        self.s.close()


class QmpDriver(Driver):
    kind = "qmp"

    def __init__(self, qmp: Path, vm: str) -> None:
        self.qmp = qmp
        self.vm = vm

    def session(self) -> QmpDriverSession:
        return QmpDriverSession(self.qmp, self.vm)

    def describe(self) -> Inventory:
        with self.session() as s:
            return s.inventory()

    def release(self, handle: CutHandle, success: bool) -> list[str]:
        assert isinstance(handle.state, Cut)
        return release_cut(handle.state, success)
