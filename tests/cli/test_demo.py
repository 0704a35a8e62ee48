"""`cutpoint demo --offsite VAULT` (what `make demo OFFSITE=…` runs): a lab VM backed up under load, every point
restored and judged, the points copied into a new offsite vault made with the same keys, and the newest restored
from that copy alone and judged too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cutpoint


@pytest.mark.vm
def test_demo_with_an_offsite_copy(tmp_path: Path) -> None:
    offsite = tmp_path / "offsite"
    r = cutpoint("demo", "--points", "2", "--disks", "2", "--size", "64M", "--interval", "0.5",
                 "--offsite", str(offsite))
    assert r.code == 0, (r.out, r.err)
    assert "creating the offsite vault" in r.out and "offsite copy" in r.out, r.out
    assert "restored from the copy: consistent" in r.out, r.out
    pts = json.loads(cutpoint("points", "cutpoint-demo", "--json", "--vault", str(offsite), check=True).out)
    assert len(pts) == 2
    v = cutpoint("verify", "--read-data", "--vault", str(offsite))
    assert v.code == 0, v.err
    again = cutpoint("demo", "--points", "1", "--disks", "2", "--size", "64M", "--interval", "0",
                     "--offsite", str(offsite))                       # idempotent: the offsite vault is reused
    assert again.code == 0, (again.out, again.err)
    assert "creating the offsite vault" not in again.out and "(2 already there)" in again.out, again.out
