"""Offsite copies (issue 16 item 3): 'cutpoint copy --from VAULT --to VAULT2' into a vault made with 'vault init
--copy-of', through the real CLI, with real vaults (a directory, a real SeaweedFS) and a real paused QEMU."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cutpoint.vault.packgc import referenced
from cutpoint.vault.tree import ChunkTree
from cutpoint.vault.vault import Vault
from tests.helpers import blockdev_args, cutpoint, drive_args, guest_write, make_image, raw_bytes
from tests.vault.util import one_line_error

MiB = 1 << 20


def _vm(bare_qemu, tmp_path: Path, vault: str, random_mib: int = 6):
    """A paused VM 'web' registered in ``vault``: a qcow2 disk with patterns, a raw one with random bytes (which
    do not compress, so the copy has packs to write)."""
    sys_img = make_image(tmp_path / "sys.qcow2", "32M", writes=["write -P 0xab 1M 3M", "write -P 0x11 20M 1M"])
    data = tmp_path / "data.raw"
    with open(data, "wb") as f:
        f.write(os.urandom(random_mib * MiB))
        f.truncate(16 * MiB)
    vm = bare_qemu(blockdev_args(sys_img, "sys") + drive_args(data, "data", "raw"))
    cutpoint("vm", "add", "web", "--qmp", str(vm.qmp), "--vault", vault, check=True)
    return vm, {"sys": sys_img, "data": data}


def _now(images: dict[str, Path]) -> dict[str, bytes]:
    return {d: raw_bytes(p) for d, p in images.items()}


def _images(tmp_path: Path) -> dict[str, Path]:
    return {"sys": tmp_path / "sys.qcow2", "data": tmp_path / "data.raw"}


def _backup(vault: str) -> dict:
    return json.loads(cutpoint("backup", "web", "--json", "--vault", vault, check=True).out)


def _copy(src: str, dst: str, *extra: str) -> dict:
    r = cutpoint("copy", "web", "--from", src, "--to", dst, "--json", *extra)
    assert r.code == 0, r.err
    return json.loads(r.out)


def _restored(tmp_path: Path, vault: str, point: str) -> dict[str, bytes]:
    out = tmp_path / f"restore-{point}-{len(list(tmp_path.iterdir()))}"
    r = cutpoint("restore", "web", point, "--to", str(out), "--json", "--vault", vault, check=True)
    return {f["disk"]: raw_bytes(Path(f["path"])) for f in json.loads(r.out)["files"]}


def _to_s3_setup(bare_qemu, tmp_path: Path, s3_bucket: str,
                 random_mib: int) -> tuple[str, str, str, dict[str, bytes]]:
    """A local source with packs of 1 MiB and one point of the VM, and an empty copy target on S3 with its keys:
    (source, target, point, the point's disks)."""
    src, dst = str(tmp_path / "src"), f"s3://{s3_bucket}/off"
    Vault.create(Path(src), pack_size=MiB)
    vm, images = _vm(bare_qemu, tmp_path, src, random_mib=random_mib)
    point = _backup(src)["point"]
    at = _now(images)
    cutpoint("vault", "init", dst, "--copy-of", src, "--no-encrypt", check=True)
    return src, dst, point, at


def _refs(vault: Path, point: str) -> set[bytes]:
    """Ids of every node and chunk ``point`` references (read in-process from the source)."""
    v = Vault.open(vault)
    try:
        m = v.manifest(v.catalog.point("web", point))
        return referenced([d.chunks for d in m.disks if isinstance(d.chunks, ChunkTree)])
    finally:
        v.close()


def test_copy_local_to_local_restores_identical_copies_only_what_the_target_lacks(
        bare_qemu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = os.environ["CUTPOINT_VAULT"], str(tmp_path / "offsite")
    vm, images = _vm(bare_qemu, tmp_path, src)
    full = _backup(src)["point"]
    at_full = _now(images)
    cutpoint("vault", "init", dst, "--copy-of", src, "--no-encrypt", check=True)
    first = _copy(src, dst)
    assert first["copied"] == [full] and first["skipped"] == [] and first["reused"] == 0, first
    assert first["blobs"] == len(_refs(Path(src), full)) and first["bytes"] >= 6 * MiB, first
    again = _copy(src, dst)                                  # nothing left to transfer
    assert again["copied"] == [] and again["skipped"] == [full] and again["blobs"] == 0 and again["bytes"] == 0
    (Path(dst) / "points" / "web" / f"{full}.manifest").unlink()   # a row without its manifest is not complete
    healed = _copy(src, dst)
    assert healed["copied"] == [full] and healed["blobs"] == 0 and healed["reused"] == first["blobs"], healed

    guest_write(vm.qmp, "data", "write -P 0x5a 2M 256k")
    guest_write(vm.qmp, "sys-dev", "write -P 0x5b 8M 128k")
    inc = _backup(src)                                       # the source still opens: the shared key is its own
    assert inc["mode"] == "incremental", inc
    at_inc = _now(images)
    third = _copy(src, dst)
    new = _refs(Path(src), inc["point"]) - _refs(Path(src), full)
    assert third["copied"] == [inc["point"]] and third["skipped"] == [full], third
    assert third["blobs"] == len(new) and 0 < third["bytes"] < first["bytes"] // 10, third

    key = tmp_path / "offsite.key"
    cutpoint("vault", "key", "export", "--to", str(key), "--vault", dst, check=True)
    shutil.rmtree(src)                                       # the original vault and its catalog are gone
    monkeypatch.setenv("CUTPOINT_STATE", str(tmp_path / "host-b"))     # and a host that never saw either
    one_line_error(cutpoint("points", "--vault", dst), 10, "vault key import")
    cutpoint("vault", "key", "import", str(key), "--vault", dst, check=True)
    assert _restored(tmp_path, dst, full) == at_full
    assert _restored(tmp_path, dst, inc["point"]) == at_inc
    r = cutpoint("verify", "--read-data", "--json", "--vault", dst)
    assert r.code == 0, r.err
    assert {p["point"]: p["state"] for p in json.loads(r.out)["points"]} == {full: "ok", inc["point"]: "ok"}


def test_encrypted_copy_to_s3_restores_from_a_fresh_host_with_the_source_gone(
        bare_qemu, tmp_path: Path, s3_bucket: str, s3_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUTPOINT_PASSPHRASE", "correct horse")
    src, dst = str(tmp_path / "src"), f"s3://{s3_bucket}/offsite"
    cutpoint("vault", "init", src, check=True)
    vm, images = _vm(bare_qemu, tmp_path, src)
    point = _backup(src)["point"]
    at = _now(images)
    cutpoint("vault", "init", dst, "--copy-of", src, check=True)
    res = _copy(src, dst, "--verify")
    assert res["copied"] == [point] and res["verified"] == len(_refs(Path(src), point)) == res["blobs"], res
    keys = {o["Key"] for o in s3_env.client().list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert f"offsite/points/web/{point}.manifest" in keys and "offsite/key.json" in keys
    manifest = (Path(src) / "points" / "web" / f"{point}.manifest").read_bytes()
    got = s3_env.client().get_object(Bucket=s3_bucket, Key=f"offsite/points/web/{point}.manifest")["Body"].read()
    assert got == manifest                                   # the sealed manifest travelled as is
    assert _copy(src, dst)["blobs"] == 0

    shutil.rmtree(src)
    monkeypatch.setenv("CUTPOINT_STATE", str(tmp_path / "host-b"))     # a fresh host: no catalog, no key
    assert [p["point"] for p in json.loads(cutpoint("points", "web", "--json", "--vault", dst, check=True).out)] \
        == [point]
    assert _restored(tmp_path, dst, point) == at
    back = str(tmp_path / "back")                            # and from S3 (ranged reads of its packs) to a directory
    cutpoint("vault", "init", back, "--copy-of", dst, check=True)
    home = _copy(dst, back)
    assert home["copied"] == [point] and home["blobs"] == res["blobs"] and home["bytes"] == res["bytes"], home
    assert _restored(tmp_path, back, point) == at


@pytest.mark.parametrize("stage", ["pack-written@6", "copy-manifest"])
def test_a_killed_copy_shows_no_point_and_a_rerun_copies_only_the_rest(bare_qemu, tmp_path: Path,
                                                                       stage: str) -> None:
    """Packs of 1 MiB: killed after its 6th pack (an index object lists the first 4), or with every blob durable
    and indexed but no manifest yet. The point is not visible in the target; the rerun reuses what arrived."""
    src, dst, control = (str(tmp_path / n) for n in ("src", "dst", "control"))
    Vault.create(Path(src), pack_size=MiB)
    vm, images = _vm(bare_qemu, tmp_path, src, random_mib=10)
    point = _backup(src)["point"]
    at = _now(images)
    for d in (dst, control):
        cutpoint("vault", "init", d, "--copy-of", src, "--no-encrypt", check=True)
    whole = _copy(src, control)
    assert whole["packs"] >= 8, whole

    env = {**os.environ, "CUTPOINT_FAULT": stage}
    p = subprocess.run([sys.executable, "-m", "cutpoint.cli.main", "copy", "--from", src, "--to", dst],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr
    assert not (Path(dst) / "points" / "web").exists()
    assert json.loads(cutpoint("points", "--json", "--vault", dst, check=True).out) == []

    rerun = _copy(src, dst)
    assert rerun["copied"] == [point], rerun
    if stage == "copy-manifest":
        assert rerun["blobs"] == 0 and rerun["reused"] == whole["blobs"], rerun
    else:
        assert 0 < rerun["blobs"] < whole["blobs"] and rerun["reused"] + rerun["blobs"] == whole["blobs"], rerun
        assert rerun["bytes"] <= whole["bytes"] - 3 * MiB, rerun     # at least 4 packs (of about 1 MiB) reused
    assert _restored(tmp_path, dst, point) == at
    r = cutpoint("verify", "--read-data", "--vault", dst)
    assert r.code == 0, r.err


def test_copy_into_a_vault_with_other_keys_is_refused_naming_the_fix(bare_qemu, tmp_path: Path) -> None:
    src, other = os.environ["CUTPOINT_VAULT"], str(tmp_path / "other")
    _vm(bare_qemu, tmp_path, src)
    _backup(src)
    cutpoint("vault", "init", other, "--no-encrypt", check=True)
    r = cutpoint("copy", "--from", src, "--to", other)
    one_line_error(r, 2, "--copy-of", "key")
    assert not list((Path(other) / "data").iterdir()) and not list((Path(other) / "index").iterdir())
    assert not (Path(other) / "points" / "web").exists()


def test_limit_rate_limits_the_bytes_written_per_second(bare_qemu, tmp_path: Path) -> None:
    src, dst = os.environ["CUTPOINT_VAULT"], str(tmp_path / "offsite")
    _vm(bare_qemu, tmp_path, src, random_mib=8)
    _backup(src)
    cutpoint("vault", "init", dst, "--copy-of", src, "--no-encrypt", check=True)
    res = _copy(src, dst, "--limit-rate", "2M")
    assert res["bytes"] >= 8 * MiB, res
    assert res["duration_s"] >= 0.8 * res["bytes"] / (2 * MiB), res       # about 4 s for 8 MiB at 2 MiB/s


def test_bad_copy_input_gets_one_line_and_changes_nothing(tmp_path: Path) -> None:
    src, dst = os.environ["CUTPOINT_VAULT"], str(tmp_path / "offsite")
    cutpoint("vault", "init", dst, "--copy-of", src, "--no-encrypt", check=True)
    one_line_error(cutpoint("copy", "--from", src, "--to", str(tmp_path / "none")), 3, "no cutpoint vault",
                   "vault init")
    one_line_error(cutpoint("copy", "web", "--from", src, "--to", dst), 3, "VM 'web' has no points")
    one_line_error(cutpoint("copy", "--from", src, "--to", dst, "--points", "nosuch"), 3, "'nosuch' is not in")
    one_line_error(cutpoint("copy", "--from", src, "--to", dst, "--limit-rate", "fast"), 2, "'fast'")
    one_line_error(cutpoint("copy", "--from", src, "--to", src), 2, "same vault")
    one_line_error(cutpoint("vault", "init", str(tmp_path / "enc"), "--copy-of", src), 2, "--no-encrypt")
    assert not (tmp_path / "enc").exists()
    assert not list((Path(dst) / "data").iterdir()) and not list((Path(dst) / "index").iterdir())


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"



def _copy_stopped_at(src: str, dst: str, stage: str) -> subprocess.Popen[str]:
    """A real 'cutpoint copy' stopped (SIGSTOP, faults.py) at fault stage ``stage``; the caller resumes or kills it."""
    p = subprocess.Popen([sys.executable, "-m", "cutpoint.cli.main", "copy", "--from", src, "--to", dst, "--json"],
                         env={**os.environ, "CUTPOINT_FAULT": f"{stage}=stop"}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while not _stopped(p.pid):
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.stderr else ""
            time.sleep(0.05)
    except BaseException:
        p.kill()
        p.wait()
        raise
    return p

def test_a_running_copy_holds_off_source_prune_and_target_gc_keeps_its_packs(bare_qemu, tmp_path: Path) -> None:
    """The copy stopped with every blob written and indexed, before its manifest: prune of the source is refused
    (exit 8: the copy holds its points lock), gc of the target (grace 0) deletes none of the copy's packs, and the
    resumed copy completes a point that restores identical."""
    src, dst = os.environ["CUTPOINT_VAULT"], str(tmp_path / "offsite")
    _vm(bare_qemu, tmp_path, src)
    point = _backup(src)["point"]
    at = _now(_images(tmp_path))
    cutpoint("vault", "init", dst, "--copy-of", src, "--no-encrypt", check=True)
    p = _copy_stopped_at(src, dst, "copy-manifest")
    try:
        packs = {f.name for f in (Path(dst) / "data").rglob("*") if f.is_file()}
        assert packs
        one_line_error(cutpoint("prune", "web", "--keep-last", "1", "--vault", src), 8, "busy")
        r = cutpoint("gc", "--grace", "0", "--json", "--vault", dst)
        assert r.code == 0, r.err
        assert {f.name for f in (Path(dst) / "data").rglob("*") if f.is_file()} == packs
    finally:
        os.kill(p.pid, signal.SIGCONT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert json.loads(out)["copied"] == [point]
    assert _restored(tmp_path, dst, point) == at


def test_a_copy_to_s3_cut_off_by_a_network_failure_resumes(bare_qemu, tmp_path: Path, s3_bucket: str, s3_env,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The 6th pack PUT fails as an unreachable endpoint does (the fault seam: the S3 backend's put): the copy stops
    with the error, no manifest is in the bucket, and the rerun copies only what the index objects did not list."""
    from cutpoint.errors import VaultError
    from cutpoint.vault import copy as vault_copy
    from cutpoint.vault import location
    from cutpoint.vault.s3backend import S3Backend

    src, dst, point, at = _to_s3_setup(bare_qemu, tmp_path, s3_bucket, random_mib=10)
    real, packs = S3Backend.put, [0]

    def flaky(self: S3Backend, name: str, data: bytes | memoryview) -> None:
        if name.startswith("data/"):
            packs[0] += 1
            if packs[0] == 6:
                raise VaultError(f"cannot reach the endpoint for {name}: EndpointConnectionError (injected)")
        real(self, name, data)
    monkeypatch.setattr(S3Backend, "put", flaky)
    s, d = Vault.open(Path(src)), Vault.open(location.resolve(dst))
    try:
        with pytest.raises(VaultError, match="injected"):
            vault_copy.copy(s, d, "web")
    finally:
        s.close()
        d.close()
    monkeypatch.setattr(S3Backend, "put", real)
    listed = s3_env.client().list_objects_v2(Bucket=s3_bucket, Prefix="off/points/").get("Contents", [])
    assert listed == []
    rerun = _copy(src, dst)
    total = len(_refs(Path(src), point))
    assert rerun["copied"] == [point] and rerun["reused"] > 0 and rerun["blobs"] + rerun["reused"] == total, rerun
    assert _restored(tmp_path, dst, point) == at


def test_copy_verify_reads_back_and_refuses_a_damaged_blob_before_any_manifest(bare_qemu, tmp_path: Path) -> None:
    """A chunk damaged in the source travels as stored; --verify decodes every blob at the target, stops with
    exit 6 naming it, and the point is not made visible."""
    from cutpoint.vault.blob import DATA
    from cutpoint.vault.packfile import pack_name

    src, dst = os.environ["CUTPOINT_VAULT"], str(tmp_path / "offsite")
    _vm(bare_qemu, tmp_path, src)
    _backup(src)
    v = Vault.open(Path(src))
    try:
        bid, loc = next((b, loc) for b, loc in v.chunks.index().where.items() if loc.kind == DATA)
    finally:
        v.close()
    with open(Path(src) / pack_name(loc.pid), "r+b") as f:
        f.seek(loc.offset + loc.length // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    cutpoint("vault", "init", dst, "--copy-of", src, "--no-encrypt", check=True)
    one_line_error(cutpoint("copy", "--from", src, "--to", dst, "--verify"), 6, bid.hex())
    assert not (Path(dst) / "points" / "web").exists()
    assert json.loads(cutpoint("points", "--json", "--vault", dst, check=True).out) == []


def test_an_encrypted_copy_with_another_passphrase_opens_with_to_passphrase_file(tmp_path: Path) -> None:
    """The target's key file wraps the same keys under its own passphrase (as 'vault init --copy-of' does when the
    prompt is answered differently): copy unlocks it with --to-passphrase-file, and refuses (exit 10) without."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    a, b = tmp_path / "a.pass", tmp_path / "b.pass"
    a.write_text("passphrase of the source\n")
    b.write_text("passphrase of the copy\n")
    cutpoint("vault", "init", str(src), "--passphrase-file", str(a), check=True)
    s = Vault.open(src, passphrase=lambda what, confirm: a.read_text().strip().encode())
    try:
        Vault.create(dst, encrypt=True, copy_of=s, passphrase=lambda what, confirm: b.read_text().strip().encode())
    finally:
        s.close()
    r = cutpoint("copy", "--from", str(src), "--to", str(dst), "--passphrase-file", str(a))
    one_line_error(r, 10, "passphrase")
    r = cutpoint("copy", "--from", str(src), "--to", str(dst), "--passphrase-file", str(a),
                 "--to-passphrase-file", str(b), "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["copied"] == []
    d = json.loads((dst / "key.json").read_text())
    assert d["vault"] != json.loads((src / "key.json").read_text())["vault"]
    assert d["fingerprint"] == json.loads((src / "key.json").read_text())["fingerprint"]


def test_a_copy_reads_on_when_source_gc_repacks_its_packs_mid_way(bare_qemu, tmp_path: Path) -> None:
    """Source packs of 1 MiB, half of each dead once the first point is pruned. The copy of the second point is
    stopped after choosing where to read; gc of the source (grace 0) repacks those packs; the copy, resumed, finds
    them gone, reads the blobs from the reloaded index, and the copy restores identical."""
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    Vault.create(Path(src), pack_size=MiB)
    vm, images = _vm(bare_qemu, tmp_path, src, random_mib=8)
    _backup(src)
    guest_write(vm.qmp, "data", *(f"write -P 0x33 {k * 512}k 256k" for k in range(16)))
    second = _backup(src)["point"]
    at = _now(images)
    cutpoint("prune", "web", "--keep-last", "1", "--vault", src, check=True)
    cutpoint("vault", "init", dst, "--copy-of", src, "--no-encrypt", check=True)
    p = _copy_stopped_at(src, dst, "copy-read")
    try:
        r = cutpoint("gc", "--grace", "0", "--json", "--vault", src)
        assert r.code == 0, r.err
        gc = json.loads(r.out)
        assert gc["packs_repacked"] >= 2, gc
    finally:
        os.kill(p.pid, signal.SIGCONT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert json.loads(out)["copied"] == [second]
    assert _restored(tmp_path, dst, second) == at
    r = cutpoint("verify", "--read-data", "--vault", dst)
    assert r.code == 0, r.err
