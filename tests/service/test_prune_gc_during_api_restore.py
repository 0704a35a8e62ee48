"""Prune and gc while a restore started through the API is in flight: the restore holds the vault's points lock as
every restore does, so prune is refused (the point stays) and gc deletes none of the chunks the restore still needs.

A real ``cutpoint serve`` is stopped mid-restore (``CUTPOINT_FAULT=restore-progress=stop``: after the first disk
chunk was handled, its locks held), prune and gc run as CLI processes against the same vault, and when the service
is resumed its restore finishes byte-identical.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from cutpoint.vault.vault import Vault
from tests.helpers import cutpoint, guest_write
from tests.vault.util import _state, backup, change, one_line_error, open_vault, restored, two_disk_vm


def _api(url: str, token: str, path: str, body: dict | None = None, timeout: float = 10) -> dict:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def test_prune_is_refused_and_gc_keeps_chunks_while_an_api_restore_runs(bare_qemu, tmp_path: Path) -> None:
    vm, _ = two_disk_vm(bare_qemu, tmp_path)
    guest_write(vm.qmp, "db", "write -P 0x77 12M 4M")          # a chunk only the old point will have
    old = backup()["point"]
    change(vm, 0x40)
    guest_write(vm.qmp, "db", "write -P 0x78 12M 4M")
    new = backup()["point"]
    ref = restored(old, tmp_path / "ref")
    v = Vault.open(Path(os.environ["CUTPOINT_VAULT"]))
    needed = sorted(v.manifest(v.catalog.point("v", old)).referenced())
    only_old = set(needed) - v.manifest(v.catalog.point("v", new)).referenced()
    v.close()
    assert only_old                                    # gc would free these if the old point were pruned

    root = tmp_path / "restore-root"                   # made by serve, mode 0700
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "cutpoint.cli.main", "serve", "--port", "0", "--tick", "3600",
                             "--restore-root", str(root)], stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            env={**os.environ, "CUTPOINT_FAULT": "restore-progress=stop"})
    try:
        token = cutpoint("serve", "--show-token", check=True).out.strip()
        deadline = time.monotonic() + 30
        while not (m := re.search(r"API on (http://\S+)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        url = m.group(1)
        time.sleep(0.5)     # the first scheduling pass is over: no other thread is inside a catalog write when the
                            # whole process stops (SIGSTOP), which would keep the CLI's job records locked out
        assert root.stat().st_mode & 0o777 == 0o700
        # The whole server stops inside the restore, possibly before it has answered this request (more likely
        # under load): ask from a thread and take the answer once it runs again.
        answer: dict = {}
        asking = threading.Thread(target=lambda: answer.update(
            _api(url, token, "/vms/v/restore", {"point": old, "to": str(root / "out")}, timeout=300)))
        asking.start()
        deadline = time.monotonic() + 60
        while _state(proc.pid) != "T":                 # stopped inside the restore, locks held
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)

        one_line_error(cutpoint("prune", "v", "--keep-last", "1"), 8, "prune.lock")
        gone = json.loads(cutpoint("gc", "--grace", "0", "--json", check=True).out)
        still = open_vault()                         # a fresh reader: the index as gc left it
        assert [p for p in needed if still.chunks.state(p) != "ok"] == [], gone
        assert len(still.chunks.get_many(needed, [still.chunk_size] * len(needed))) == len(needed)   # readable
        still.close()
        assert [p["point"] for p in json.loads(cutpoint("points", "v", "--json", check=True).out)] == [old, new]

        os.kill(proc.pid, signal.SIGCONT)
        asking.join(120)
        job = answer["job"]
        deadline = time.monotonic() + 120
        while (j := _api(url, token, f"/jobs/{job}"))["state"] == "running":
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert j["state"] == "succeeded", j
        assert {d: (root / "out" / f"{d}.raw").read_bytes() for d in ref} == ref
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    assert json.loads(cutpoint("prune", "v", "--keep-last", "1", "--json", check=True).out)["remove"]  # now it may
