"""Requests, the guard's decisions, their use, and the audit log: objects in the vault (docs/format.md §21).

An operation that a guarded vault protects creates ``requests/<id>.json`` (what, for which vault, by whom, when,
until when) and stops with ``ApprovalRequiredError``. The id is a digest of the request's content (``request_id``),
so the content cannot be rewritten under the id the guard was given: between the guard reviewing request R and
running ``approve R``, a swapped ``R.json`` no longer hashes to R and is refused as altered. The guard signs it
(``approve``/``deny``, with the guard key only: no vault key, no passphrase), which writes
``requests/<id>.decision``: the signature covers the whole request object as the guard read it, so an edit of the
request afterwards breaks it. Re-run with ``--request ID``, the
operation checks the signature against the config's guard key, that the request is for exactly this operation of
this vault, unexpired, and unused, and then creates ``requests/<id>.used`` (a conditional create: one use). Every
step adds one object under ``audit/``. Objects come from the vault's storage, which is untrusted: each is read with
a size bound and parsed strictly, and a bad one is listed as ``invalid``, never acted on.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ApprovalRefusedError, ApprovalRequiredError, NotFoundError, UsageError, VaultError
from . import guard as guardmod
from .audit import MAX_OBJECT, RID, get, iso, load, now, parse_time, parse_who, record, who
from .backend import Backend
from .guard import Guard, GuardKey

if TYPE_CHECKING:
    from .protection import Protection
    from .vault import Vault

REQUESTS = "requests"
TTL = timedelta(hours=24)
SKEW = timedelta(minutes=10)     # hosts' clocks may differ this much: a request from a little ahead is still pending
REQUEST_FORMAT, DECISION_FORMAT, USE_FORMAT = ("cutpoint-guard-request", "cutpoint-guard-decision",
                                               "cutpoint-guard-use")
SIGNED = b"cutpoint-guard-decision-v1\0"
REQUEST_ID = b"cutpoint-guard-request-v2\0"       # a version 2 request's id: a digest of the rest of it
REQUEST_VERSION = 2
_REQUEST_KEYS = {1: {"format", "version", "id", "vault", "operation", "params", "requested_by", "created",
                     "expires"}}
_REQUEST_KEYS[2] = _REQUEST_KEYS[1] | {"nonce"}
_NONCE = re.compile(r"[0-9a-f]{32}")
OLD_FORMAT = ("it is an old-format request (version 1: its id is random, not a digest of its content, so an "
              "approval could not be bound to what the guard reviewed); it cannot be approved: the operator makes "
              "a new one by running the operation again")
_VID = re.compile(r"[0-9a-f]{32}")
_POINT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
# operation -> its parameters and their types: a request must carry exactly these
OPERATIONS: dict[str, dict[str, type]] = {
    "protect": {"immutable_days": int, "soft_delete_days": int, "from_immutable_days": int,
                "from_soft_delete_days": int},
    "delete-point": {"point": str, "vm": str},
    "delete-vault": {},
    "guard-replace": {"guard": str},
}


@dataclass(frozen=True)
class Operation:
    kind: str
    params: dict[str, Any]

    def describe(self) -> str:
        p = self.params
        if self.kind == "protect":
            return (f"vault protect: immutable_days {p['from_immutable_days']} -> {p['immutable_days']}, "
                    f"soft_delete_days {p['from_soft_delete_days']} -> {p['soft_delete_days']}")
        if self.kind == "delete-point":
            return f"delete point {p['point']} of VM {p['vm']} before its immutability ends"
        if self.kind == "guard-replace":
            return f"replace the vault's guard {p['guard']}"
        return "delete the vault and every point in it"


def protect_operation(old: "Protection", new: "Protection") -> Operation:
    return Operation("protect", {"immutable_days": new.immutable_days, "soft_delete_days": new.soft_delete_days,
                                 "from_immutable_days": old.immutable_days,
                                 "from_soft_delete_days": old.soft_delete_days})


@dataclass(frozen=True)
class Request:
    id: str
    vault: str
    operation: Operation
    requested_by: str
    created: datetime
    expires: datetime
    doc: dict[str, Any]              # the object as read: what the guard signs
    version: int = REQUEST_VERSION   # 1: an old request, whose id does not bind its content (OLD_FORMAT)

    def expired(self, now: datetime) -> bool:
        return now >= self.expires


@dataclass(frozen=True)
class Decision:
    request: str
    decision: str                    # "approved" | "denied"
    decided: datetime
    by: str
    guard: str
    signature: bytes


@dataclass
class Status:
    """A request as listed: its state (pending, approved, denied, expired, used, invalid) and why if invalid."""
    id: str
    state: str
    request: Request | None
    decision: Decision | None
    used: str | None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        r, d = self.request, self.decision
        return {"id": self.id, "state": self.state, "vault": r.vault if r else None,
                "operation": r.operation.kind if r else None, "params": r.operation.params if r else None,
                "what": r.operation.describe() if r else None, "requested_by": r.requested_by if r else None,
                "created": iso(r.created) if r else None, "expires": iso(r.expires) if r else None,
                "decided": iso(d.decided) if d else None, "decided_by": d.by if d else None,
                "used": self.used, "problem": self.problem}


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def request_id(doc: dict[str, Any]) -> str:
    """A version 2 request's id: the first 32 hex digits of SHA-256 over a domain tag and the canonical JSON of
    the request object without its ``id`` (its random ``nonce`` included, so two identical requests differ)."""
    return hashlib.sha256(REQUEST_ID + canonical({k: v for k, v in doc.items() if k != "id"})).hexdigest()[:32]


def signed_message(request_doc: dict[str, Any], decision: str, decided: str, by: str, guard: str) -> bytes:
    """What the guard signs: the request object whole, and the decision about it."""
    return SIGNED + canonical({"request": request_doc, "decision": decision, "decided": decided, "by": by,
                               "guard": guard})


# -- strict parsing of untrusted objects ----------------------------------------------------------------------------

class AlteredRequest(ValueError):
    """A request whose content does not hash to its id: rewritten after it was made."""


def parse_request(data: bytes, rid: str) -> Request:
    """A request object, parsed strictly: version 2 (its id the digest of its content, ``request_id``, checked
    last: ``AlteredRequest``) or an old version 1 (random id; ``Request.version`` says so)."""
    if len(data) > MAX_OBJECT:
        raise ValueError("too large")
    doc = json.loads(data)
    ver = doc.get("version") if isinstance(doc, dict) else None
    version = ver if type(ver) is int else 0               # not a bool: True == 1
    keys = _REQUEST_KEYS.get(version)
    if keys is None or set(doc) != keys or doc["format"] != REQUEST_FORMAT:
        raise ValueError(f"not a {REQUEST_FORMAT} object")
    if doc["id"] != rid:
        raise ValueError(f"it names request {doc['id']!r}")
    if version >= 2 and (not isinstance(doc["nonce"], str) or not _NONCE.fullmatch(doc["nonce"])):
        raise ValueError(f"nonce {doc['nonce']!r} is not 32 hex digits")
    if not isinstance(doc["vault"], str) or not _VID.fullmatch(doc["vault"]):
        raise ValueError(f"vault {doc['vault']!r} is not a vault id")
    kinds = OPERATIONS.get(doc["operation"]) if isinstance(doc["operation"], str) else None
    params = doc["params"]
    if kinds is None or not isinstance(params, dict) or set(params) != set(kinds):
        raise ValueError(f"operation {doc['operation']!r} with {params!r} is unknown")
    for k, typ in kinds.items():
        v = params[k]
        if typ is int and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 36500):
            raise ValueError(f"parameter {k} {v!r} is not a number of days")
        if typ is str and (not isinstance(v, str) or not _POINT.fullmatch(v)):
            raise ValueError(f"parameter {k} {v!r} is not a name")
    created, expires = parse_time(doc["created"]), parse_time(doc["expires"])
    if not created < expires <= created + TTL:
        raise ValueError("its expiry is not within 24 hours of its creation")
    who_asked = parse_who(doc["requested_by"])
    if version >= 2 and request_id(doc) != rid:
        raise AlteredRequest("it was altered: its content does not hash to its id (it was rewritten under the "
                             "same id after it was made, so it is not the request of that id); it cannot be "
                             "decided or used: the operator makes a new one by running the operation again")
    return Request(rid, doc["vault"], Operation(doc["operation"], dict(params)), who_asked, created, expires, doc,
                   version)


def parse_decision(data: bytes, rid: str) -> Decision:
    doc = load(data, {"format", "version", "request", "decision", "decided", "by", "guard", "signature"},
                DECISION_FORMAT)
    if doc["request"] != rid or doc["decision"] not in ("approved", "denied"):
        raise ValueError("not a decision about this request")
    if not isinstance(doc["guard"], str) or not re.fullmatch(r"[0-9a-f]{16}", doc["guard"]) \
            or not isinstance(doc["signature"], str) or not re.fullmatch(r"[0-9a-f]{128}", doc["signature"]):
        raise ValueError("its guard or signature is malformed")
    return Decision(rid, doc["decision"], parse_time(doc["decided"]), parse_who(doc["by"]), doc["guard"],
                    bytes.fromhex(doc["signature"]))


def verify(guard: Guard, req: Request, dec: Decision) -> bool:
    return dec.guard == guard.fingerprint and guard.verify(
        dec.signature, signed_message(req.doc, dec.decision, iso(dec.decided), dec.by, dec.guard))


# -- the objects ----------------------------------------------------------------------------------------------------

def _name(rid: str, suffix: str) -> str:
    if not RID.fullmatch(rid):
        raise UsageError(f"{rid!r} is not a request id (32 hex digits; 'cutpoint approvals' lists them)")
    return f"{REQUESTS}/{rid}{suffix}"


def status(backend: Backend, rid: str, vault_id: str, guard: Guard | None, at: datetime) -> Status:
    """Everything known about request ``rid``, each object checked; the signature against ``guard``."""
    data = get(backend, _name(rid, ".json"))
    if data is None:
        raise NotFoundError(f"no request {rid} in this vault; 'cutpoint approvals' lists them")
    try:
        req = parse_request(data, rid)
    except AlteredRequest as exc:
        return Status(rid, "invalid", None, None, None, str(exc))
    except (ValueError, TypeError, KeyError) as exc:
        return Status(rid, "invalid", None, None, None, f"the request object is malformed ({exc})")
    st = Status(rid, "pending", req, None, None)
    if req.vault != vault_id:
        st.state, st.problem = "invalid", f"it is for vault {req.vault}, not this one ({vault_id})"
        return st
    if req.created > at + SKEW:
        # written by hand with a later 'created': its 24 hours would start then, not when it was made
        st.state, st.problem = "invalid", f"it says it was created {iso(req.created)}, which is still to come"
        return st
    used = get(backend, _name(rid, ".used"))
    if used is not None:
        try:
            doc = load(used, {"format", "version", "request", "used", "by"}, USE_FORMAT)
            st.used = f"{iso(parse_time(doc['used']))} by {parse_who(doc['by'])}"
        except (ValueError, TypeError, KeyError):
            st.used = "yes (its record is malformed)"
    dec_data = get(backend, _name(rid, ".decision"))
    if dec_data is not None:
        try:
            st.decision = parse_decision(dec_data, rid)
        except (ValueError, TypeError, KeyError) as exc:
            st.state, st.problem = "invalid", f"its decision object is malformed ({exc})"
            return st
        if guard is None or not verify(guard, req, st.decision):
            st.state = "invalid"
            st.problem = ("its decision is not signed by this vault's guard key (forged, or the request was "
                          "edited after it was decided)")
            return st
        st.state = st.decision.decision
    elif req.version < REQUEST_VERSION:
        st.state, st.problem = "invalid", OLD_FORMAT        # undecided: never to be signed (decided ones stand)
        return st
    if st.used is not None:
        st.state = "used"
    elif st.state in ("pending", "approved") and req.expired(at):
        st.state = "expired"
    return st


def listing(backend: Backend, vault_id: str, guard: Guard | None, at: datetime) -> list[Status]:
    """Every request of the vault, oldest first; names from the listing checked before they are read."""
    ids = sorted({o.name[len(REQUESTS) + 1:-len(".json")] for o in backend.list(f"{REQUESTS}/")
                  if o.name.endswith(".json") and RID.fullmatch(o.name[len(REQUESTS) + 1:-len(".json")])})
    out = [status(backend, rid, vault_id, guard, at) for rid in ids]
    return sorted(out, key=lambda s: (s.request.created if s.request else at, s.id))


def unopened(root: Path) -> tuple[Backend, dict[str, Any]]:
    """The storage and the config (as stored, validated, not authenticated) of the vault at ``root``: listing and
    deciding requests needs no vault key or passphrase, so the guard's host need not hold them."""
    from . import config as cfgmod
    from . import location, remote
    remote.fetch_meta(root)
    config = cfgmod.read_config(root)
    cfgmod.validate(config, root)
    return location.backend_for(root), config


def create_request(backend: Backend, vault_id: str, op: Operation, at: datetime) -> Request:
    """A new request for ``op``, its id the digest of its content (``request_id``)."""
    by = who()
    body = {"format": REQUEST_FORMAT, "version": REQUEST_VERSION, "vault": vault_id, "operation": op.kind,
            "params": op.params, "requested_by": by, "created": iso(at), "expires": iso(at + TTL),
            "nonce": secrets.token_hex(16)}
    rid = request_id(body)
    doc = {"id": rid, **body}
    data = json.dumps(doc, indent=1).encode()
    if not backend.create(_name(rid, ".json"), data):
        raise VaultError(f"request {rid} already exists (its random nonce drawn twice?); try again")
    backend.sync()
    record(backend, "requested", rid, op.describe(), by, at)
    return parse_request(data, rid)


def decide(backend: Backend, config: dict[str, Any], key: GuardKey, key_path: Path, rid: str, decision: str,
           at: datetime | None = None) -> Request:
    """The guard approves or denies a pending request: its signature over the request as it is now, which is the
    request the guard reviewed under id ``rid``: its id is the digest of its content, and an object that does not
    hash to it is refused as altered (``status``), so nothing but that content can be signed as ``rid``."""
    if decision not in ("approved", "denied"):
        raise UsageError(f"a decision is 'approved' or 'denied', not {decision!r}")
    guard = guardmod.check_key_for(key, config, key_path)
    t = at or now()
    st = status(backend, rid, str(config["id"]), guard, t)
    if st.request is None or st.state == "invalid":
        raise ApprovalRefusedError(f"request {rid} cannot be decided: {st.problem}; nothing was signed")
    if st.state != "pending":
        raise ApprovalRefusedError(f"request {rid} is {st.state}, not pending; nothing was signed"
                                   + ("; the operator makes a new one by running the operation again"
                                      if st.state == "expired" else ""))
    by = who()
    sig = key.sign(signed_message(st.request.doc, decision, iso(t), by, guard.fingerprint))
    doc = {"format": DECISION_FORMAT, "version": 1, "request": rid, "decision": decision, "decided": iso(t),
           "by": by, "guard": guard.fingerprint, "signature": sig.hex()}
    if not backend.create(_name(rid, ".decision"), json.dumps(doc, indent=1).encode()):
        raise ApprovalRefusedError(f"request {rid} was decided meanwhile; nothing was signed")
    backend.sync()
    record(backend, decision, rid, st.request.operation.describe(), by, t)
    return st.request


def authorize(vault: "Vault", config: dict[str, Any], op: Operation, request: str | None) -> None:
    """Let ``op`` proceed in a guarded vault (``config``: authenticated, read under the caller's locks) only with
    an approved, unexpired, unused request for exactly it; mark it used. Without ``request``: a pending request
    for it (an existing one, or a new one), and ``ApprovalRequiredError`` naming it."""
    guard = guardmod.of(config)
    assert guard is not None
    b, vid, t = vault.backend, str(config["id"]), now()
    if request is None:
        pending = [s for s in listing(b, vid, guard, t) if s.state == "pending" and s.request is not None
                   and s.request.operation == op]
        req = pending[0].request if pending else create_request(b, vid, op, t)
        assert req is not None
        raise ApprovalRequiredError(
            f"the vault is guarded: {op.describe()} needs approval by the guard; request {req.id} "
            f"{'is pending' if pending else 'created'} (expires {iso(req.expires)}); the guard approves it with "
            f"'cutpoint approve {req.id} --guard-key FILE', then run this again with --request {req.id}; "
            "nothing was changed")
    st = status(b, request, vid, guard, t)

    def refuse(why: str) -> ApprovalRefusedError:
        record(b, "refused", request, f"{op.describe()}: {why}", who(), t)
        return ApprovalRefusedError(f"request {request} cannot be used: {why}; nothing was changed")
    if st.state == "invalid" or st.request is None:
        raise refuse(str(st.problem))
    if st.request.operation != op:
        raise refuse(f"it is for '{st.request.operation.describe()}', not '{op.describe()}'")
    if st.state == "pending":
        raise ApprovalRequiredError(f"request {request} is still pending: the guard approves it with 'cutpoint "
                                    f"approve {request} --guard-key FILE'; nothing was changed")
    if st.state != "approved":
        raise refuse(f"it is {st.state}" + (f" ({st.used})" if st.used else ""))
    by = who()
    use = {"format": USE_FORMAT, "version": 1, "request": request, "used": iso(t), "by": by}
    if not b.create(_name(request, ".used"), json.dumps(use, indent=1).encode()):
        raise refuse("it was used meanwhile")
    b.sync()
    record(b, "used", request, op.describe(), by, t)
