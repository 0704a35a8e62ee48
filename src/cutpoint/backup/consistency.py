"""Consistency types: the application-consistent procedure around the cut, and its fallback to crash-consistent.

``crash`` touches no agent: the cut alone is what the guest would see after a power loss at that instant, on all
disks at once. ``app`` asks the guest agent to make the filesystems clean first:

    ping -> pre-script -> freeze -> [ the atomic cut ] -> thaw -> (confirm thawed) -> post-script

Any failure on the agent path (no channel, no answer, a pre-script failing, the freeze failing or timing out) does
not fail the backup: the same backup goes on with a crash-consistent cut, and the point records what it *got*
(``consistency: "crash"``), what was asked (``requested: "app"``) and why (``fallback_reason``). The one thing that
must never happen is a guest left frozen, so the thaw is issued in every path once a freeze was sent, including
after a freeze that timed out: qemu-ga handles requests in order, so a thaw queued behind a hanging freeze runs
right after it. Whether the guest really is thawed is then confirmed with ``guest-fsfreeze-status``; if the agent
stays silent the point carries a warning saying so.

``frozen_ms`` is measured from sending the freeze to the thaw's answer: an upper bound of the time the guest's
filesystems were frozen, of which the cut's own ``pause_ms`` is a part.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HypervisorError, UsageError
from ..cut.agent import AgentError, AgentTimeout, GuestAgent
from ..cut.disks import Disk
from ..cut.driver import CutHandle, DriverSession
from ..drivers.qmp.agent import SocketAgent
from ..vault.manifest import Manifest

log = logging.getLogger(__name__)

TYPES = ("crash", "app")


@dataclass
class Timeouts:
    """Hard limits (seconds) on each agent step; a step that exceeds one is a fallback, never a hang."""

    ping: float = 2.0
    freeze: float = 10.0
    thaw: float = 10.0
    script: float = 60.0

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Timeouts:
        t = cls()
        if settings.get("freeze_timeout"):
            t.freeze = float(settings["freeze_timeout"])
        if settings.get("script_timeout"):
            t.script = float(settings["script_timeout"])
        return t


def requested_type(settings: dict[str, Any], override: str | None) -> str:
    """The consistency type a backup asks for: ``override`` (``--consistency``), else the VM's, else crash."""
    req = override or settings.get("consistency") or "crash"
    if req not in TYPES:
        raise UsageError(f"consistency {req!r} is not one of: {', '.join(TYPES)}")
    scripts = [k for k in ("pre_script", "post_script") if settings.get(k)]
    if req == "crash" and scripts:
        raise UsageError("pre/post scripts run only in application-consistent backups, and this one is "
                         f"crash-consistent; use --consistency app, or remove the scripts with 'cutpoint vm set "
                         f"NAME {' '.join('--' + k.replace('_', '-') + ' ' + repr('') for k in scripts)}'")
    return req


def update_settings(settings: dict[str, Any], *, consistency: str | None = None, pre_script: str | None = None,
                    post_script: str | None = None, exclude: list[str] | None = None,
                    include: list[str] | None = None, agent_socket: str | None = None,
                    freeze_timeout: float | None = None) -> dict[str, Any]:
    """``cutpoint vm set``: the VM's new settings (``""`` clears a script or the socket). Refuses pre/post scripts
    on a crash-consistent VM: they would never run, and a user relying on them must hear it now."""
    new = dict(settings)
    if consistency is not None:
        if consistency not in TYPES:
            raise UsageError(f"consistency {consistency!r} is not one of: {', '.join(TYPES)}")
        new["consistency"] = consistency
    for key, value in (("pre_script", pre_script), ("post_script", post_script)):
        if value == "":
            new.pop(key, None)
        elif value is not None:
            if not value.startswith("/"):
                raise UsageError(f"{key.replace('_', '-')} {value!r} must be an absolute path inside the guest")
            new[key] = value
    if agent_socket == "":
        new.pop("agent_socket", None)
    elif agent_socket is not None:
        new["agent_socket"] = str(Path(agent_socket).expanduser().resolve())
    if freeze_timeout is not None:
        if freeze_timeout <= 0:
            raise UsageError("--freeze-timeout must be a positive number of seconds")
        new["freeze_timeout"] = freeze_timeout
    excluded = [d for d in new.get("exclude_disks") or [] if d not in (include or [])]
    excluded += [d for d in exclude or [] if d not in excluded]
    if excluded:
        new["exclude_disks"] = excluded
    else:
        new.pop("exclude_disks", None)
    scripts = [k.replace("_", "-") for k in ("pre_script", "post_script") if new.get(k)]
    if scripts and (new.get("consistency") or "crash") == "crash":
        raise UsageError(f"{' and '.join(scripts)} run only in application-consistent backups, and this VM's are "
                         "crash-consistent (nothing runs in the guest); add --consistency app")
    return new


@dataclass
class Consistency:
    """One backup's consistency procedure; it is the ``Quiesce`` the driver calls around the atomic step."""

    requested: str
    settings: dict[str, Any] = field(default_factory=dict)
    timeouts: Timeouts = field(default_factory=Timeouts)
    fallback_reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    frozen_ms: float | None = None
    agent: GuestAgent | None = None
    _active: bool = False          # the agent path is still on: freeze at the cut
    _frozen: bool = False          # the freeze answered: the cut is app-consistent
    _freeze_sent: float | None = None
    _thaw_confirmed: bool = True
    _post_due: bool = False
    _finished: bool = False

    @property
    def consistency(self) -> str:
        return "app" if self._frozen else "crash"

    # -- before the cut (the driver session is open) ---------------------------------------------------------------

    def prepare(self, s: DriverSession) -> None:
        """Find and ping the agent, run the pre-script. Failures switch this backup to crash-consistent."""
        if self.requested != "app":
            return
        try:
            self.agent = self._find_agent(s)
            if self.agent is None:
                raise AgentError("no guest agent channel: the VM has no virtio-serial port named "
                                 "org.qemu.guest_agent.0; add one, or name the agent's socket with "
                                 "'cutpoint vm set NAME --agent-socket PATH'")
            try:
                self.agent.ping(self.timeouts.ping)
            except AgentError as exc:
                raise AgentError(f"guest agent not answering: {exc}") from exc
            self._post_due = bool(self.settings.get("post_script"))
            pre = self.settings.get("pre_script")
            if pre:
                self._script("pre-script", pre, fatal=True)
        except HypervisorError as exc:        # AgentError, or QMP failing while looking for the channel
            self._fall_back(str(exc))
            return
        self._active = True

    def _find_agent(self, s: DriverSession) -> GuestAgent | None:
        sock = self.settings.get("agent_socket")
        return SocketAgent(Path(sock)) if sock else s.agent()

    def cut(self, s: DriverSession, disks: list[Disk], point_id: str, since: dict[str, str | None],
            workdir: Path) -> CutHandle:
        return s.cut(disks, point_id, since, workdir, self if self._active else None)

    # -- Quiesce: called by the driver right around the atomic step ------------------------------------------------

    def freeze(self) -> None:
        if not self._active or self.agent is None:
            return
        self._freeze_sent = time.perf_counter()
        self._thaw_confirmed = False
        try:
            n = self.agent.freeze(self.timeouts.freeze)
        except AgentTimeout:
            self._fall_back(f"guest-fsfreeze-freeze did not answer within {self.timeouts.freeze:g} s (the freeze "
                            "may still complete in the guest; a thaw is queued behind it)")
            self._thaw(min(1.0, self.timeouts.thaw))     # queued behind the hanging freeze; confirmed in finish()
            return
        except AgentError as exc:
            self._fall_back(f"guest-fsfreeze-freeze failed: {exc}")
            self._thaw(min(1.0, self.timeouts.thaw))
            return
        if n <= 0:
            self._fall_back("guest-fsfreeze-freeze froze no filesystem (the guest has none mounted that the agent "
                            "can freeze)")
            self._thaw(self.timeouts.thaw)
            return
        self._frozen = True

    def thaw(self) -> None:
        if self._frozen and not self._thaw_confirmed:
            self._thaw(self.timeouts.thaw)

    def _thaw(self, timeout: float) -> None:
        assert self.agent is not None
        self._active = False
        try:
            self.agent.thaw(timeout)
        except AgentError as exc:
            log.info("guest-fsfreeze-thaw: %s; checking the freeze status after the cut", exc)
            return
        self._thawed()

    def _thawed(self) -> None:
        self._thaw_confirmed = True
        if self._frozen and self._freeze_sent is not None:
            self.frozen_ms = round((time.perf_counter() - self._freeze_sent) * 1000.0, 3)

    # -- after the cut (the driver session is closed) --------------------------------------------------------------

    def finish(self) -> None:
        """Confirm the guest is thawed (thawing again if needed), run the post-script, let go of the agent.
        Idempotent: the backup calls it on every path, and only the first call does anything."""
        if self.agent is None or self._finished:
            return
        self._finished = True
        try:
            if not self._thaw_confirmed:
                self._confirm_thawed()
            if self._post_due:
                self._script("post-script", self.settings["post_script"], fatal=False)
        finally:
            self.agent.close()

    def _confirm_thawed(self) -> None:
        assert self.agent is not None
        deadline = time.monotonic() + self.timeouts.thaw
        while time.monotonic() < deadline:
            try:
                state = self.agent.status(max(0.5, deadline - time.monotonic()))
                if state == "thawed":
                    self._thawed()
                    return
                self.agent.thaw(max(0.5, deadline - time.monotonic()))
                self._thawed()
                return
            except AgentTimeout:
                continue
            except AgentError as exc:
                log.debug("freeze status: %s", exc)
                time.sleep(0.2)
        self.warnings.append(f"the guest agent did not confirm within {self.timeouts.thaw:g} s that the guest's "
                             "filesystems are thawed; a thaw request is queued in the agent. Check the guest "
                             "(guest-fsfreeze-status) and thaw it (guest-fsfreeze-thaw) if it is still frozen")

    def _script(self, kind: str, path: str, *, fatal: bool) -> None:
        assert self.agent is not None
        try:
            r = self.agent.exec(path, [], self.timeouts.script)
        except AgentTimeout as exc:
            problem = f"{kind} {path} did not finish within {self.timeouts.script:g} s ({exc})"
        except AgentError as exc:
            problem = f"{kind} {path} could not be run: {exc}"
        else:
            if r.exitcode == 0:
                return
            tail = (r.err.strip() or r.out.strip()).splitlines()[-1:] or [""]
            how = f"was killed by signal {r.signal}" if r.exitcode is None else f"exited with {r.exitcode}"
            problem = f"{kind} {path} {how}" + (f": {tail[0][:200]}" if tail[0] else "")
        if fatal:
            raise AgentError(problem)
        self.warnings.append(problem)

    def _fall_back(self, reason: str) -> None:
        self._active = False
        if self.fallback_reason is None:
            self.fallback_reason = reason
            log.warning("application-consistent backup not possible, taking a crash-consistent cut: %s", reason)

    def record(self, manifest: Manifest) -> None:
        """Write the outcome and this procedure's warnings onto the point's manifest."""
        for k, v in self.outcome().items():
            setattr(manifest, k, v)
        manifest.warnings += [w for w in self.warnings if w not in manifest.warnings]

    def outcome(self) -> dict[str, Any]:
        """The point's consistency fields (the manifest's and the ``--json`` summary's)."""
        return {"consistency": self.consistency, "requested": self.requested,
                "fallback_reason": self.fallback_reason if self.requested == "app" and not self._frozen else None,
                "frozen_ms": self.frozen_ms if self._frozen else None}
