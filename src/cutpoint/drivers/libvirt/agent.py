"""The guest agent of a libvirt domain, reached through libvirtd (``virDomainQemuAgentCommand``).

libvirtd owns the host end of a domain's ``org.qemu.guest_agent.0`` channel, so cutpoint cannot open the socket the
way ``SocketAgent`` does; libvirt relays each command, synchronising with the agent first (``guest-sync``), which
also drops replies to requests that timed out. Every call passes its own timeout (whole seconds, as libvirt takes
them), so a hanging freeze costs exactly the consistency procedure's budget. The agent outlives the driver session
(thaw confirmation and the post-script run after the cut), so it keeps its own connection.
"""

from __future__ import annotations

import json
import math
from typing import Any

import libvirt
import libvirt_qemu

from ...cut.agent import AgentError, AgentTimeout, GuestAgent
from . import conn as lc

TIMEOUT_CODES = {libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_ERR_OPERATION_TIMEOUT}


class LibvirtAgent(GuestAgent):
    def __init__(self, uri: str, domain: str) -> None:
        self.uri, self.domain = uri, domain
        self._conn: libvirt.virConnect | None = None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass  # libvirtd went away: nothing of ours to release
        self._conn = None

    def _call(self, command: str, args: dict[str, Any] | None = None, *, timeout: float) -> Any:
        if self._conn is None:
            self._conn = lc.connect(self.uri)
        dom = lc.lookup(self._conn, self.domain, self.uri)
        req = json.dumps({"execute": command, "arguments": args} if args else {"execute": command})
        secs = max(1, math.ceil(timeout))
        try:
            reply = json.loads(libvirt_qemu.qemuAgentCommand(dom, req, secs, 0))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in TIMEOUT_CODES:
                raise AgentTimeout(f"the guest agent did not answer {command} within {secs} s "
                                   f"(libvirt: {lc.msg(exc)})") from exc
            raise AgentError(f"guest agent {command} through libvirt failed: {lc.msg(exc)}") from exc
        except ValueError as exc:
            raise AgentError(f"the guest agent answered {command} with something that is not JSON") from exc
        if "error" in reply:
            err = reply["error"]
            raise AgentError(f"guest agent refused {command}: {err.get('class')}: {err.get('desc')}")
        return reply.get("return")
