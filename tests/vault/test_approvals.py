"""Multi-user authorization (issue 16 item 6, docs/format.md §21) with the real CLI on real vaults: a guarded vault
refuses to reduce its protection, to delete a point early and to be deleted without a request its guard signed; with
one it proceeds once; an approval for another operation or vault, an expired one, a denied one, a forged one or one
whose request was edited afterwards is refused; the audit log shows every step; an unguarded vault is as before."""

from __future__ import annotations

import json
import re
import shutil
import stat
from datetime import timedelta
from pathlib import Path

from cutpoint.vault import approvals, audit, guard
from tests.helpers import cutpoint
from tests.vault.util import one_line_error, points, protected_vault, synthetic_points, tree, vault_dir

GUARDED = ("requests/", "audit/", "locks/")


def _state() -> dict[str, tuple[int, int]]:
    """The vault's files but the guard's own objects and the locks: 'nothing changed' means this is unchanged."""
    return {k: v for k, v in tree(vault_dir()).items() if not k.startswith(GUARDED)}


def _guarded(tmp_path: Path, *, immutable_days: int = 0, **prot: int) -> Path:
    """A guarded vault, made in the legitimate order: the guard first, then the immutability (an unguarded
    immutable vault cannot be given a guard)."""
    protected_vault(4, **prot)
    key = tmp_path / "guard.key"
    cutpoint("vault", "guard", "init", "--to", str(key), check=True)
    if immutable_days:
        cutpoint("vault", "protect", "--immutable-days", str(immutable_days), check=True)   # lengthening: nobody
    return key


def _info() -> dict:
    return json.loads(cutpoint("vault", "info", "--json", check=True).out)


def _requested(r, code: int = 14) -> str:
    line = one_line_error(r, code, "needs approval by the guard", "nothing was changed")
    m = re.search(r"request ([0-9a-f]{32}) (created|is pending)", line)
    assert m, line
    assert f"cutpoint approve {m.group(1)} --guard-key FILE" in line and f"--request {m.group(1)}" in line
    return m.group(1)


def _listed() -> dict[str, dict]:
    return {r["id"]: r for r in json.loads(cutpoint("approvals", "--json", check=True).out)}


def _events(*vault: str) -> list[tuple[str, str]]:
    return [(e["event"], e["request"]) for e in json.loads(cutpoint("approvals", "--audit", "--json", *vault,
                                                                    check=True).out)]


def test_guard_init_puts_the_public_key_in_the_authenticated_config_and_the_secret_only_in_a_new_file(
        tmp_path: Path) -> None:
    key = _guarded(tmp_path, immutable_days=7)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    secret = json.loads(key.read_text())["private_key"]
    cfg = json.loads((vault_dir() / "config.json").read_text())
    assert cfg["guard"]["algorithm"] == "ed25519" and cfg["guard"]["public_key"] == json.loads(key.read_text())[
        "public_key"]
    assert not any(secret in p.read_text(errors="replace") for p in vault_dir().rglob("*") if p.is_file())
    before = key.read_bytes()
    one_line_error(cutpoint("vault", "guard", "init", "--to", str(key)), 2, "already exists")
    assert key.read_bytes() == before
    # replacing the guard is itself guarded
    rid = _requested(cutpoint("vault", "guard", "init", "--to", str(tmp_path / "new.key")))
    assert not (tmp_path / "new.key").exists()
    assert _listed()[rid]["operation"] == "guard-replace"
    # an edit of the guard in config.json (a key the editor holds) is caught by the config MAC
    other = guard.generate(cfg["id"])
    cfg["guard"] = other.guard.to_config()
    (vault_dir() / "config.json").write_text(json.dumps(cfg))
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "1"), 6, "config.json was altered")


def test_lowering_protection_needs_the_guards_approval_and_it_works_once(tmp_path: Path) -> None:
    key = _guarded(tmp_path, immutable_days=7, soft_delete_days=14)
    before = _state()
    rid = _requested(cutpoint("vault", "protect", "--soft-delete-days", "3"))
    assert _state() == before and (_info()["immutable_days"], _info()["soft_delete_days"]) == (7, 14)
    assert _listed()[rid]["state"] == "pending" and _listed()[rid]["params"]["soft_delete_days"] == 3
    assert _requested(cutpoint("vault", "protect", "--soft-delete-days", "3")) == rid      # the same request again
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "3", "--request", rid), 14, "still pending")
    assert _state() == before

    out = cutpoint("approve", rid, "--guard-key", str(key), check=True).out
    assert "soft_delete_days 14 -> 3" in out and _listed()[rid]["state"] == "approved"
    one_line_error(cutpoint("approve", rid, "--guard-key", str(key)), 15, "is approved, not pending")
    cutpoint("vault", "protect", "--soft-delete-days", "3", "--request", rid, check=True)
    assert (_info()["immutable_days"], _info()["soft_delete_days"]) == (7, 3)
    assert _listed()[rid]["state"] == "used"
    cutpoint("points", check=True)                                    # the re-sealed config still opens

    # lengthening needs nobody; the used approval does not lower it again (replay)
    cutpoint("vault", "protect", "--soft-delete-days", "14", check=True)
    before = _state()
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "3", "--request", rid), 15, "it is used")
    assert _state() == before and _info()["soft_delete_days"] == 14

    # even immutability can go, with the guard's approval (an unguarded immutable vault refuses that outright)
    rid2 = _requested(cutpoint("vault", "protect", "--immutable-days", "0"))
    cutpoint("approve", rid2, "--guard-key", str(key), check=True)
    cutpoint("vault", "protect", "--immutable-days", "0", "--request", rid2, check=True)
    assert _info()["immutable_days"] == 0
    # guarded but no longer immutable: soft delete still shortens only with approval
    _requested(cutpoint("vault", "protect", "--soft-delete-days", "0"))
    assert [e for e, _ in _events()] == ["requested", "approved", "used", "refused", "requested", "approved", "used",
                                         "requested"]


def test_an_early_delete_needs_approval_and_an_old_enough_point_does_not(tmp_path: Path) -> None:
    key = _guarded(tmp_path, immutable_days=7, soft_delete_days=14)
    old, young, young2 = synthetic_points([9, 2, 1])
    before = _state()
    rid = _requested(cutpoint("delete", young))
    assert points() == [old, young, young2] and _state() == before
    cutpoint("delete", old, check=True)                              # past its immutability: no approval
    cutpoint("approve", rid, "--guard-key", str(key), check=True)
    one_line_error(cutpoint("delete", young2, "--request", rid), 15, f"not 'delete point {young2}")
    assert points() == [young, young2]
    cutpoint("delete", young, "--request", rid, check=True)
    assert points() == [young2]
    deleted = json.loads(cutpoint("points", "--deleted", "--json", check=True).out)
    assert {d["point"] for d in deleted} == {old, young}              # soft delete still applies
    cutpoint("undelete", young, check=True)                          # and undelete needs nobody
    one_line_error(cutpoint("delete", young, "--request", rid), 15, "it is used")
    assert points() == [young, young2]


def test_an_approval_for_another_operation_or_another_vault_is_refused(tmp_path: Path) -> None:
    key = _guarded(tmp_path, immutable_days=7)
    (young,) = synthetic_points([1])
    rid = _requested(cutpoint("vault", "protect", "--soft-delete-days", "0"))
    cutpoint("approve", rid, "--guard-key", str(key), check=True)
    before = _state()
    one_line_error(cutpoint("delete", young, "--request", rid), 15, "it is for 'vault protect")
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "1", "--request", rid), 15, "it is for")
    one_line_error(cutpoint("vault", "delete", "--confirm", _info()["id"], "--request", rid), 15, "it is for")
    assert _state() == before and points() == [young]

    # a second guarded vault: the first one's approved request, copied in, is not its approval
    other = tmp_path / "other"
    cutpoint("vault", "init", str(other), "--no-encrypt", check=True)
    key2 = tmp_path / "guard2.key"
    cutpoint("vault", "guard", "init", "--to", str(key2), "--vault", str(other), check=True)
    cutpoint("vault", "protect", "--immutable-days", "7", "--vault", str(other), check=True)
    (other / "requests").mkdir()
    for suffix in (".json", ".decision"):
        shutil.copy(vault_dir() / "requests" / f"{rid}{suffix}", other / "requests" / f"{rid}{suffix}")
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "0", "--request", rid, "--vault", str(other)),
                   15, "it is for vault")
    assert json.loads(cutpoint("vault", "info", "--json", "--vault", str(other), check=True).out)[
        "soft_delete_days"] == 14
    # nor does one vault's guard key decide the other's requests
    rid2 = _requested(cutpoint("vault", "protect", "--soft-delete-days", "0", "--vault", str(other)))
    one_line_error(cutpoint("approve", rid2, "--guard-key", str(key), "--vault", str(other)), 10,
                   "is not the guard of vault")


def test_an_expired_request_is_refused(tmp_path: Path) -> None:
    key = _guarded(tmp_path, immutable_days=7)
    backend, config = approvals.unopened(vault_dir())
    created = audit.now() - timedelta(hours=30)                 # made 30 hours ago (editing its times alters it)
    op = approvals.Operation("protect", {"immutable_days": 7, "soft_delete_days": 0, "from_immutable_days": 7,
                                         "from_soft_delete_days": 14})
    rid = approvals.create_request(backend, config["id"], op, created).id
    assert _listed()[rid]["state"] == "expired"
    one_line_error(cutpoint("approve", rid, "--guard-key", str(key)), 15, "is expired, not pending")
    # signed while it was valid (the guard decided in time), used after it expired
    backend, config = approvals.unopened(vault_dir())
    approvals.decide(backend, config, guard.load_key_file(key), key, rid, "approved", created + timedelta(hours=1))
    assert _listed()[rid]["state"] == "expired"
    before = _state()
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "0", "--request", rid), 15, "it is expired")
    assert _state() == before and _info()["soft_delete_days"] == 14


def test_a_request_dated_in_the_future_is_not_pending(tmp_path: Path) -> None:
    """A request written by hand with a far later 'created' (its id computed to match) would stay pending, and once
    approved usable, until 24 hours after that date."""
    key = _guarded(tmp_path, immutable_days=7)
    backend, config = approvals.unopened(vault_dir())
    op = approvals.Operation("protect", {"immutable_days": 7, "soft_delete_days": 0, "from_immutable_days": 7,
                                         "from_soft_delete_days": 14})
    ahead = approvals.create_request(backend, config["id"], op, audit.now() + timedelta(days=30)).id
    near = approvals.create_request(backend, config["id"], op, audit.now() + timedelta(minutes=2)).id
    listed = _listed()
    assert listed[ahead]["state"] == "invalid" and "still to come" in listed[ahead]["problem"], listed[ahead]
    assert listed[near]["state"] == "pending", listed[near]          # another host's clock, a little ahead
    one_line_error(cutpoint("approve", ahead, "--guard-key", str(key)), 15, "still to come")


def test_a_forged_approval_or_a_request_edited_after_approval_is_refused(tmp_path: Path) -> None:
    key = _guarded(tmp_path, immutable_days=7, soft_delete_days=14)
    cfg = json.loads((vault_dir() / "config.json").read_text())
    # signed by another key, under the real guard's fingerprint
    rid = _requested(cutpoint("vault", "protect", "--soft-delete-days", "0"))
    backend, config = approvals.unopened(vault_dir())
    forger = guard.generate(cfg["id"])
    req = approvals.status(backend, rid, cfg["id"], guard.of(cfg), audit.now()).request
    assert req is not None
    t, by, fp = audit.iso(audit.now()), "forger@host", cfg["guard"]["fingerprint"]
    sig = forger.sign(approvals.signed_message(req.doc, "approved", t, by, fp))
    (vault_dir() / "requests" / f"{rid}.decision").write_text(json.dumps(
        {"format": approvals.DECISION_FORMAT, "version": 1, "request": rid, "decision": "approved", "decided": t,
         "by": by, "guard": fp, "signature": sig.hex()}))
    assert _listed()[rid]["state"] == "invalid"
    before = _state()
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "0", "--request", rid), 15,
                   "not signed by this vault's guard key")
    assert _state() == before

    # approved for 14 -> 7, then the request object edited to say 14 -> 0
    rid = _requested(cutpoint("vault", "protect", "--soft-delete-days", "7"))
    cutpoint("approve", rid, "--guard-key", str(key), check=True)
    path = vault_dir() / "requests" / f"{rid}.json"
    doc = json.loads(path.read_text())
    doc["params"]["soft_delete_days"] = 0
    path.write_text(json.dumps(doc))
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "0", "--request", rid), 15,
                   f"request {rid} cannot be used: it was altered: its content does not hash to its id")
    assert _state() == before and _info()["soft_delete_days"] == 14
    # the guard key of a forger is not accepted by 'approve' either
    fkey = tmp_path / "forger.key"
    guard.write_key_file(forger, fkey)
    rid = _requested(cutpoint("vault", "protect", "--soft-delete-days", "1"))
    one_line_error(cutpoint("approve", rid, "--guard-key", str(fkey)), 10, "is not the guard of vault")
    assert _listed()[rid]["state"] == "pending"


def test_a_denied_request_is_refused_and_the_audit_log_lists_every_step(tmp_path: Path) -> None:
    key = _guarded(tmp_path, immutable_days=7)
    (young,) = synthetic_points([1])
    rid = _requested(cutpoint("delete", young))
    out = cutpoint("deny", rid, "--guard-key", str(key), check=True).out
    assert out.startswith(f"denied request {rid}")
    one_line_error(cutpoint("delete", young, "--request", rid), 15, "it is denied")
    rid2 = _requested(cutpoint("delete", young))
    assert rid2 != rid
    cutpoint("approve", rid2, "--guard-key", str(key), check=True)
    cutpoint("delete", young, "--request", rid2, check=True)
    assert _events() == [("requested", rid), ("denied", rid), ("refused", rid), ("requested", rid2),
                         ("approved", rid2), ("used", rid2)]
    text = cutpoint("approvals", "--audit", check=True).out
    assert f"delete point {young} of VM v before its immutability ends" in text
    states = {k: v["state"] for k, v in _listed().items()}
    assert states == {rid: "denied", rid2: "used"}


def test_hostile_request_objects_are_listed_as_invalid_and_never_acted_on(tmp_path: Path) -> None:
    key = _guarded(tmp_path, immutable_days=7)
    rid = _requested(cutpoint("vault", "protect", "--soft-delete-days", "0"))
    path = vault_dir() / "requests" / f"{rid}.json"
    good = json.loads(path.read_text())
    for bad in (b"\xff" * 10, b"[]", b"{" * 100000, json.dumps({**good, "extra": 1}).encode(),
                json.dumps({**good, "params": {"soft_delete_days": "0"}}).encode(),
                json.dumps({**good, "operation": "rm -rf"}).encode(),
                json.dumps({**good, "requested_by": "x\u001b[2Jy"}).encode(),
                json.dumps({**good, "expires": "2999-01-01T00:00:00Z"}).encode(),
                json.dumps({**good, "id": "0" * 32}).encode()):
        path.write_bytes(bad)
        assert _listed()[rid]["state"] == "invalid", bad[:80]
        one_line_error(cutpoint("approve", rid, "--guard-key", str(key)), 15, "cannot be decided")
        assert not (vault_dir() / "requests" / f"{rid}.decision").exists()
    one_line_error(cutpoint("approve", "../../config", "--guard-key", str(key)), 2, "is not a request id")
    path.write_text(json.dumps({**good, "operation": "x" * 2000 + "\u001b[2J"}))
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "0", "--request", rid), 15, "cannot be used")
    events = json.loads(cutpoint("approvals", "--audit", "--json", check=True).out)
    assert [e["event"] for e in events] == ["requested", "refused"]          # the refusal, quoted safely
    assert len(events[1]["what"]) <= 500 and "\u001b" not in events[1]["what"]
    assert _info()["soft_delete_days"] == 14


def test_vault_delete_needs_a_typed_confirmation_and_in_a_guarded_vault_the_guard(tmp_path: Path) -> None:
    # unguarded, not immutable: the typed id is enough
    protected_vault(4)
    synthetic_points([1])
    vid = _info()["id"]
    one_line_error(cutpoint("vault", "delete"), 2, f"--confirm {vid}", "nothing was removed")
    one_line_error(cutpoint("vault", "delete", "--confirm", "0" * 32), 2, "nothing was removed")
    assert len(points()) == 1
    cutpoint("vault", "delete", "--confirm", vid, check=True)
    assert not vault_dir().exists()

    # unguarded and immutable with a young point: refused outright
    protected_vault(4, immutable_days=7)
    synthetic_points([1])
    one_line_error(cutpoint("vault", "delete", "--confirm", _info()["id"]), 12, "cannot be deleted")
    assert len(points()) == 1

    # guarded: only with the guard's approval; its requests and audit log stay
    key = _guarded(tmp_path, immutable_days=7)
    synthetic_points([1])
    vid = _info()["id"]
    before = _state()
    rid = _requested(cutpoint("vault", "delete", "--confirm", vid))
    assert _state() == before
    cutpoint("approve", rid, "--guard-key", str(key), check=True)
    res = json.loads(cutpoint("vault", "delete", "--confirm", vid, "--request", rid, "--json", check=True).out)
    assert res["id"] == vid and res["deleted_objects"] > 3
    left = sorted(tree(vault_dir()))
    assert left and all(k.startswith(("requests/", "audit/")) for k in left), left
    assert (vault_dir() / "requests" / f"{rid}.used").exists()
    one_line_error(cutpoint("points"), 3, "no cutpoint vault")


def test_an_unguarded_vault_behaves_as_before(tmp_path: Path) -> None:
    protected_vault(4, immutable_days=7, soft_delete_days=14)
    (young,) = synthetic_points([1])
    assert "has no guard: nothing needs approval" in cutpoint("approvals", check=True).out
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "3"), 12, "cannot be switched off")
    one_line_error(cutpoint("delete", young), 12, "is immutable until")
    assert not (vault_dir() / "requests").exists() and not (vault_dir() / "audit").exists()
    assert json.loads(cutpoint("approvals", "--json", check=True).out) == []
    protected_vault(4, immutable_days=0, soft_delete_days=14)
    cutpoint("vault", "protect", "--soft-delete-days", "0", check=True)
    assert _info()["soft_delete_days"] == 0
    one_line_error(cutpoint("approve", "0" * 32, "--guard-key", str(tmp_path / "none.key")), 2, "does not exist")


def test_the_guard_on_an_s3_vault_keeps_its_objects_in_the_bucket(tmp_path: Path, s3_bucket: str, s3_env) -> None:
    url = f"s3://{s3_bucket}/g"
    v = ("--vault", url)
    cutpoint("vault", "init", url, "--no-encrypt", check=True)
    key = tmp_path / "guard.key"
    cutpoint("vault", "guard", "init", "--to", str(key), *v, check=True)
    cutpoint("vault", "protect", "--immutable-days", "7", *v, check=True)
    rid = _requested(cutpoint("vault", "protect", "--soft-delete-days", "2", *v))
    client = s3_env.client()

    def keys() -> set[str]:
        return {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])}
    assert f"g/requests/{rid}.json" in keys()
    cutpoint("approve", rid, "--guard-key", str(key), *v, check=True)
    assert f"g/requests/{rid}.decision" in keys()
    cutpoint("vault", "protect", "--soft-delete-days", "2", "--request", rid, *v, check=True)
    cfg = json.loads(client.get_object(Bucket=s3_bucket, Key="g/config.json")["Body"].read())
    assert cfg["soft_delete_days"] == 2 and cfg["guard"]["public_key"]          # in the bucket, not only here
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "1", "--request", rid, *v), 15, "it is for")
    assert [e for e, _ in _events(*v)] == ["requested", "approved", "used", "refused"]

    vid = json.loads(cutpoint("vault", "info", "--json", *v, check=True).out)["id"]
    rid = _requested(cutpoint("vault", "delete", "--confirm", vid, *v))
    cutpoint("approve", rid, "--guard-key", str(key), *v, check=True)
    cutpoint("vault", "delete", "--confirm", vid, "--request", rid, *v, check=True)
    left = keys()
    assert left and all(k.startswith(("g/requests/", "g/audit/")) for k in left), left
    assert "g/config.json" not in left



def test_a_config_resealed_without_its_guard_is_refused_by_a_host_that_saw_the_guard(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """The vault key holder can re-seal config.json without the guard (its MAC is the vault key's): this host
    remembers the guard and refuses writes; a host that never saw the guard cannot tell (docs/threat-model.md)."""
    from cutpoint.vault import config as cfgmod
    from tests.vault.util import open_vault

    _guarded(tmp_path, soft_delete_days=14)
    cutpoint("vault", "key", "export", "--to", str(tmp_path / "auth.key"), check=True)
    v = open_vault()
    try:
        cfg = {k: val for k, val in json.loads((vault_dir() / "config.json").read_text()).items()
               if k not in ("mac", "guard")}
        (vault_dir() / "config.json").write_text(json.dumps(cfgmod.seal(cfg, v.sealer.keys)))
    finally:
        v.close()
    before = _state()
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "1"), 6, "was unguarded",
                   "this host knew it guarded by key")
    assert _state() == before
    r = cutpoint("points", check=True)
    assert "was unguarded" in r.err                                     # reads warn
    # another host, which never saw the guard, takes the config as it is: the limit of a MAC the operator can make
    monkeypatch.setenv("CUTPOINT_STATE", str(tmp_path / "other-host"))
    cutpoint("vault", "key", "import", str(tmp_path / "auth.key"), check=True)
    cutpoint("vault", "protect", "--soft-delete-days", "1", check=True)
    assert _info()["soft_delete_days"] == 1


def test_the_guard_of_an_encrypted_vault_decides_without_its_passphrase(tmp_path: Path, monkeypatch) -> None:
    from tests.vault.util import encrypted_vault

    encrypted_vault(monkeypatch)
    key = tmp_path / "guard.key"
    cutpoint("vault", "guard", "init", "--to", str(key), check=True)
    assert "guarded by key" in cutpoint("vault", "info", check=True).out
    cutpoint("vault", "protect", "--soft-delete-days", "14", check=True)          # lengthening needs nobody
    rid = _requested(cutpoint("vault", "protect", "--soft-delete-days", "1"))
    monkeypatch.delenv("CUTPOINT_PASSPHRASE")                       # the guard's host: no passphrase
    assert _listed()[rid]["state"] == "pending"
    cutpoint("approve", rid, "--guard-key", str(key), check=True)
    monkeypatch.setenv("CUTPOINT_PASSPHRASE", "correct horse")
    cutpoint("vault", "protect", "--soft-delete-days", "1", "--request", rid, check=True)
    assert _info()["soft_delete_days"] == 1


def test_an_immutable_vault_without_a_guard_cannot_be_given_one(tmp_path: Path) -> None:
    """A guard is a second principal: added to an unguarded immutable vault by the operator alone, it would let the
    operator lower protection that nobody may lower (the guard key being their own). Refused, exit 12; the legitimate
    order (guard first, then immutability) works."""
    protected_vault(4, immutable_days=30, soft_delete_days=14)
    (young,) = synthetic_points([1])
    one_line_error(cutpoint("vault", "protect", "--immutable-days", "0", "--soft-delete-days", "0"), 12)
    mine = tmp_path / "mine.key"
    before = _state()
    line = one_line_error(cutpoint("vault", "guard", "init", "--to", str(mine)), 12, str(vault_dir()),
                          "is immutable", "holds points", "has no guard", "before", "nothing was changed")
    assert "vault guard init" in line
    assert not mine.exists() and _state() == before and "guard" not in json.loads(
        (vault_dir() / "config.json").read_text())
    # so the route around the refusal is closed: no request can be made, nothing lowered, nothing deleted early
    one_line_error(cutpoint("vault", "protect", "--immutable-days", "0", "--soft-delete-days", "0"), 12)
    one_line_error(cutpoint("delete", young), 12, "is immutable until")
    one_line_error(cutpoint("vault", "delete", "--confirm", _info()["id"]), 12, "cannot be deleted")
    assert (_info()["immutable_days"], _info()["soft_delete_days"]) == (30, 14) and points() == [young]
    assert "nobody can lower its immutability" in cutpoint("vault", "info", check=True).out
    assert not (vault_dir() / "requests").exists()

    # the legitimate order: the guard first (a vault that is not immutable), then the immutability
    protected_vault(4, soft_delete_days=14)
    key = tmp_path / "guard.key"
    cutpoint("vault", "guard", "init", "--to", str(key), check=True)
    cutpoint("vault", "protect", "--immutable-days", "30", check=True)          # lengthening needs nobody
    rid = _requested(cutpoint("vault", "protect", "--immutable-days", "0"))
    cutpoint("approve", rid, "--guard-key", str(key), check=True)
    cutpoint("vault", "protect", "--immutable-days", "0", "--request", rid, check=True)
    assert _info()["immutable_days"] == 0

    # immutable from its init (an S3 Object Lock vault can only be made so), but holding no point yet: nothing is
    # protected that a guard could lift, so it may get one
    protected_vault(4, immutable_days=30, soft_delete_days=14)
    cutpoint("vault", "guard", "init", "--to", str(tmp_path / "first.key"), check=True)
    assert "guard" in json.loads((vault_dir() / "config.json").read_text())


def _rewrite(rid: str, **changes) -> None:
    path = vault_dir() / "requests" / f"{rid}.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc, indent=1))


def test_a_request_rewritten_under_its_id_before_the_guard_approves_it_is_refused(tmp_path: Path) -> None:
    """The guard reviews request R (a harmless change); before they run 'approve R', whoever can write the vault
    rewrites requests/R.json to a dangerous operation under the same id. The id is a digest of the request's content,
    so 'approve R' refuses the rewritten one as altered and signs nothing; the listing shows it invalid."""
    key = _guarded(tmp_path, immutable_days=7, soft_delete_days=14)
    (young,) = synthetic_points([1])
    rid = _requested(cutpoint("vault", "protect", "--soft-delete-days", "7"))          # harmless: 14 -> 7
    assert _listed()[rid]["what"] == "vault protect: immutable_days 7 -> 7, soft_delete_days 14 -> 7"
    for swap in ({"params": {"immutable_days": 0, "soft_delete_days": 0, "from_immutable_days": 7,
                             "from_soft_delete_days": 14}},
                 {"operation": "delete-vault", "params": {}},
                 {"operation": "delete-point", "params": {"point": young, "vm": "v"}},
                 {"requested_by": "someone-else@host"}):
        good = (vault_dir() / "requests" / f"{rid}.json").read_bytes()
        _rewrite(rid, **swap)
        assert _listed()[rid]["state"] == "invalid" and "altered" in _listed()[rid]["problem"]
        one_line_error(cutpoint("approve", rid, "--guard-key", str(key)), 15,
                       f"request {rid} cannot be decided: it was altered", "nothing was signed")
        assert not (vault_dir() / "requests" / f"{rid}.decision").exists()
        (vault_dir() / "requests" / f"{rid}.json").write_bytes(good)
    before = _state()
    one_line_error(cutpoint("vault", "protect", "--immutable-days", "0", "--soft-delete-days", "0", "--request", rid),
                   15)
    assert _state() == before and points() == [young]
    # the request as made (content that hashes to its id) is approved, and 'approve' says what it signed
    assert approvals.request_id(json.loads((vault_dir() / "requests" / f"{rid}.json").read_text())) == rid
    out = json.loads(cutpoint("approve", rid, "--guard-key", str(key), "--json", check=True).out)
    assert (out["request"], out["decision"], out["operation"]) == (rid, "approved", "protect")
    assert out["params"] == {"immutable_days": 7, "soft_delete_days": 7, "from_immutable_days": 7,
                             "from_soft_delete_days": 14}
    assert out["what"] == "vault protect: immutable_days 7 -> 7, soft_delete_days 14 -> 7"
    cutpoint("vault", "protect", "--soft-delete-days", "7", "--request", rid, check=True)
    assert (_info()["immutable_days"], _info()["soft_delete_days"]) == (7, 7)
    cutpoint("vault", "protect", "--soft-delete-days", "14", check=True)
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "7", "--request", rid), 15, "it is used")


def test_an_old_format_request_is_not_approved_and_an_approved_one_still_works(tmp_path: Path) -> None:
    """Requests made before ids were content digests (version 1, a random id): a pending one cannot be bound to what
    the guard reviewed, so it is listed invalid, saying why, and 'approve' refuses it; the operation makes a new one.
    One the guard approved before (its signature covers its content) is still used once."""
    import secrets

    key = _guarded(tmp_path, immutable_days=7, soft_delete_days=14)
    vid = _info()["id"]
    t = audit.now()

    def old_request(soft_delete_days: int) -> tuple[str, dict]:
        rid = secrets.token_hex(16)
        doc = {"format": approvals.REQUEST_FORMAT, "version": 1, "id": rid, "vault": vid, "operation": "protect",
               "params": {"immutable_days": 7, "soft_delete_days": soft_delete_days, "from_immutable_days": 7,
                          "from_soft_delete_days": 14},
               "requested_by": "op@host", "created": audit.iso(t), "expires": audit.iso(t + approvals.TTL)}
        (vault_dir() / "requests").mkdir(exist_ok=True)
        (vault_dir() / "requests" / f"{rid}.json").write_text(json.dumps(doc, indent=1))
        return rid, doc

    pending, _ = old_request(3)
    st = _listed()[pending]
    assert st["state"] == "invalid" and "old-format request" in st["problem"]
    one_line_error(cutpoint("approve", pending, "--guard-key", str(key)), 15, "old-format request",
                   "running the operation again", "nothing was signed")
    assert not (vault_dir() / "requests" / f"{pending}.decision").exists()
    one_line_error(cutpoint("vault", "protect", "--soft-delete-days", "3", "--request", pending), 15,
                   "old-format request")
    fresh = _requested(cutpoint("vault", "protect", "--soft-delete-days", "3"))      # a new one, not the old one
    assert fresh != pending and json.loads((vault_dir() / "requests" / f"{fresh}.json").read_text())["version"] == 2

    # approved by the guard before the upgrade: its decision signs its whole content, so it stands
    approved, doc = old_request(5)
    g = guard.load_key_file(key)
    d = audit.iso(t)
    sig = g.sign(approvals.signed_message(doc, "approved", d, "guard@host", g.guard.fingerprint))
    (vault_dir() / "requests" / f"{approved}.decision").write_text(json.dumps(
        {"format": approvals.DECISION_FORMAT, "version": 1, "request": approved, "decision": "approved",
         "decided": d, "by": "guard@host", "guard": g.guard.fingerprint, "signature": sig.hex()}))
    assert _listed()[approved]["state"] == "approved"
    cutpoint("vault", "protect", "--soft-delete-days", "5", "--request", approved, check=True)
    assert _info()["soft_delete_days"] == 5 and _listed()[approved]["state"] == "used"
