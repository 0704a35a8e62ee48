"""The guard's audit log (docs/format.md §21.5): one object per event, ``audit/<time>-<random>.json``, created
conditionally and never rewritten; and the pieces every guard object shares: UTC times, principals, strict loading.
Objects come from the vault's storage and are parsed strictly: a malformed event is listed as ``invalid``."""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..errors import NotFoundError
from .backend import Backend

AUDIT = "audit"
MAX_OBJECT = 64 << 10
EVENT_FORMAT = "cutpoint-guard-event"
EVENTS = ("requested", "approved", "denied", "used", "refused")
RID = re.compile(r"[0-9a-f]{32}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z")
_WHO = re.compile(r"[\x21-\x7e]{1,200}")


@dataclass(frozen=True)
class Event:
    time: datetime
    event: str
    request: str
    what: str
    by: str

    def to_json(self) -> dict[str, Any]:
        return {"time": iso(self.time), "event": self.event, "request": self.request, "what": self.what,
                "by": self.by}


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.geteuid()}"
    out = re.sub(r"[^\x21-\x7e]", "_", f"{user}@{socket.gethostname()}")[:200]
    return out or "unknown"


def parse_time(v: object) -> datetime:
    if not isinstance(v, str) or not _TIME.fullmatch(v):
        raise ValueError(f"time {v!r} is not UTC ISO 8601")
    return datetime.fromisoformat(v.replace("Z", "+00:00"))


def parse_who(v: object) -> str:
    if not isinstance(v, str) or not _WHO.fullmatch(v):
        raise ValueError(f"principal {v!r} is not a printable name")
    return v


def load(data: bytes, keys: set[str], fmt: str) -> dict[str, Any]:
    if len(data) > MAX_OBJECT:
        raise ValueError("too large")
    doc = json.loads(data)
    if not isinstance(doc, dict) or set(doc) != keys or doc["format"] != fmt or doc["version"] != 1:
        raise ValueError(f"not a {fmt} object")
    return doc


def get(backend: Backend, name: str) -> bytes | None:
    try:
        return backend.get(name, 0, MAX_OBJECT + 1)
    except NotFoundError:
        return None


def record(backend: Backend, event: str, rid: str, what: str, by: str, at: datetime | None = None) -> None:
    """One audit event, one new object (never rewritten): ``audit/<time>-<random>.json``. ``what`` may quote a
    hostile object: kept printable and at most 500 characters, as ``events`` requires."""
    t = at or now()
    what = "".join(c if c.isprintable() else "?" for c in what)
    what = what if len(what) <= 500 else what[:497] + "..."
    doc = {"format": EVENT_FORMAT, "version": 1, "time": t.astimezone(timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"), "event": event, "request": rid, "what": what, "by": by}
    name = f"{AUDIT}/{t.astimezone(timezone.utc):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}.json"
    backend.create(name, json.dumps(doc, indent=1).encode())
    backend.sync()


def events(backend: Backend) -> list[Event]:
    """The audit log, oldest first. An object that does not parse is listed as such, not skipped silently."""
    out = []
    for o in backend.list(f"{AUDIT}/"):
        data = get(backend, o.name) or b""
        try:
            doc = load(data, {"format", "version", "time", "event", "request", "what", "by"}, EVENT_FORMAT)
            if doc["event"] not in EVENTS or not isinstance(doc["request"], str) \
                    or not RID.fullmatch(doc["request"]) or not isinstance(doc["what"], str) \
                    or len(doc["what"]) > 500 or not doc["what"].isprintable():
                raise ValueError("unknown event")
            out.append(Event(parse_time(doc["time"]), doc["event"], doc["request"], doc["what"], parse_who(doc["by"])))
        except (ValueError, TypeError, KeyError) as exc:
            out.append(Event(datetime.fromtimestamp(o.mtime, timezone.utc), "invalid", "-",
                             f"audit object {o.name} is malformed ({exc})", "-"))
    return sorted(out, key=lambda e: e.time)
