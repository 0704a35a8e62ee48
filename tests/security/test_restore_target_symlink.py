"""A symlink planted where a restore writes (its partial file, its target) is never followed: the file it points
to is untouched and the restore stops with one line naming the path."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import cutpoint
from tests.security.util import backed_up_vm


def _refused(r, *needles: str) -> None:
    assert r.code == 2, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cutpoint: error: "), r.err
    for n in needles:
        assert n in lines[0], lines[0]


def test_symlink_at_partial_or_target_is_not_followed(bare_qemu, tmp_path: Path) -> None:
    _, point = backed_up_vm(bare_qemu, tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    for fmt in ("raw", "qcow2"):
        for planted in (f".da.{fmt}.partial", f"da.{fmt}") + ((f".da.{fmt}.convert",) if fmt == "qcow2" else ()):
            to = tmp_path / f"to-{fmt}-{planted.strip('.')}"
            to.mkdir()
            link = to / planted
            link.symlink_to(victim)
            r = cutpoint("restore", "v", point, "--to", str(to), "--format", fmt)
            assert victim.read_bytes() == b"precious", (fmt, planted)
            _refused(r, str(link))
            assert link.is_symlink() and sorted(p.name for p in to.iterdir()) == [planted], (fmt, planted)
    dangling = tmp_path / "to-dangling"                 # a link to a file that does not exist yet
    dangling.mkdir()
    (dangling / "da.raw").symlink_to(tmp_path / "created-by-attacker")
    _refused(cutpoint("restore", "v", point, "--to", str(dangling), "--format", "raw"), "da.raw")
    assert not (tmp_path / "created-by-attacker").exists()
