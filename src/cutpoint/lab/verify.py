"""Judge whether a set of disk images is a crash-consistent cut of the lab's ordered-write workload.

The guest workload (``lab/guest/workload.c``) issues writes with global sequence numbers 1, 2, 3, ... and each one
is durable before the next is issued, so at every instant the guest's disks hold exactly the effect of the first k
writes. A consistent multi-disk backup must hold that too, for some k: a backup that copied one disk before and
another after some write shows a later write while missing an earlier one, which this module reports.

Schedule, a pure function of (seed, seq)::

    r    = splitmix64(seed ^ seq)              one splitmix64 step from state seed ^ seq
    disk = r % ndisks
    slot = (r >> 32) % nslots
    offset of slot s on a disk of S bytes = s * stride,  stride = (S // nslots) & ~4095

Block, 4096 bytes, little endian::

    0   8  magic  b"CUTPTWL1"
    8   8  u64 seed
    16  8  u64 seq (first write is 1)
    24  4  u32 disk index (vda = 0, vdb = 1, ...)
    28  4  u32 ndisks
    32  4  u32 slot
    36  4  u32 nslots
    40  .. 507 u64 fill words: the splitmix64 stream from state seed ^ (seq * 0xD1B54A32D192ED03 mod 2**64)

The fill makes a torn or stale block detectable byte for byte. Verdict: with k the largest valid seq present, every
slot must hold the block of the last write <= k that targets it, or zeros if none does; the one write in flight at
the cut being present or absent is simply k vs k - 1.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import qemuimg
from ..errors import NotFoundError

BLOCK = 4096
MAGIC = b"CUTPTWL1"
_HDR = struct.Struct("<8sQQIIII")
_FILL = struct.Struct("<507Q")
_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_FILL_MUL = 0xD1B54A32D192ED03
_ZERO = bytes(BLOCK)
IMAGE_SUFFIXES = (".raw", ".img", ".qcow2")
MAX_REPORTED = 8


def _mix(z: int) -> int:
    """splitmix64's output function applied to an already advanced state."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def schedule(seed: int, seq: int, ndisks: int, nslots: int) -> tuple[int, int]:
    """(disk, slot) that write ``seq`` goes to."""
    r = _mix(((seed ^ seq) + _GOLDEN) & _M64)
    return r % ndisks, (r >> 32) % nslots


def stride(size: int, nslots: int) -> int:
    return (size // nslots) & ~(BLOCK - 1)


def make_block(seed: int, seq: int, disk: int, ndisks: int, slot: int, nslots: int) -> bytes:
    """The exact 4096 bytes the workload writes for ``seq``."""
    st = (seed ^ (seq * _FILL_MUL)) & _M64
    words = []
    for _ in range(507):
        st = (st + _GOLDEN) & _M64
        words.append(_mix(st))
    return _HDR.pack(MAGIC, seed, seq, disk, ndisks, slot, nslots) + _FILL.pack(*words)


@dataclass
class Verdict:
    ok: bool
    k: int
    ndisks: int
    violations: list[str]
    disks: list[str]  # image path per disk index ("" when no image holds that disk)
    seed: int | None = None
    nslots: int | None = None
    violation_count: int = 0  # all violations; ``violations`` lists at most a few
    first_missing: int | None = None  # smallest seq <= k whose effect is absent
    ignored: list[str] = field(default_factory=list)  # images holding no workload blocks beyond ndisks

    def summary(self) -> str:
        if self.ok:
            disks = f"{self.ndisks} disk" + "s" * (self.ndisks != 1)
            return f"consistent: prefix of the first k={self.k} writes across {disks}"
        head = f"VIOLATION: {self.violation_count} problem(s)"
        if self.first_missing is not None:
            head += f"; write {self.first_missing} is missing although later writes up to {self.k} are present"
        return head + "\n" + "\n".join("  " + v for v in self.violations)

    def to_json(self) -> dict:
        d = asdict(self)
        d["summary"] = self.summary()
        return d


@dataclass
class _Slot:
    kind: str  # "zero" | "valid" | "bad"
    seq: int = 0
    disk: int = -1
    note: str = ""


class _Report:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.count = 0

    def add(self, msg: str) -> None:
        self.count += 1
        if len(self.lines) < MAX_REPORTED:
            self.lines.append(msg)


def _find_header(f, size: int) -> tuple[tuple[int, int, int] | None, int | None]:
    """(seed, ndisks, nslots) of the first workload header in a raw image, and the first non-zero offset if there
    is none; holes are skipped."""
    pos = 0
    chunk = 1 << 20
    nonzero = None
    while pos < size:
        try:
            pos = os.lseek(f.fileno(), pos, os.SEEK_DATA)
        except OSError:
            break  # only a hole remains
        end = min(os.lseek(f.fileno(), pos, os.SEEK_HOLE), size)
        while pos < end:
            f.seek(pos)
            data = f.read(min(chunk, end - pos))
            if nonzero is None and data.count(0) != len(data):
                nonzero = pos + len(data) - len(data.lstrip(b"\0"))
            i = data.find(MAGIC)
            while i >= 0:
                if (pos + i) % BLOCK == 0 and i + _HDR.size <= len(data):
                    _, seed, seq, disk, nd, slot, ns = _HDR.unpack_from(data, i)
                    if seq > 0 and 0 < nd and disk < nd and 0 < ns and slot < ns:
                        return (seed, nd, ns), None
                i = data.find(MAGIC, i + 1)
            pos += len(data)
    return None, nonzero


def _classify(block: bytes, seed: int, nd: int, ns: int, slot: int) -> _Slot:
    if block == _ZERO:
        return _Slot("zero")
    if len(block) < BLOCK or block[:8] != MAGIC:
        return _Slot("bad", note="garbage (no workload header)")
    _, bseed, seq, disk, bnd, bslot, bns = _HDR.unpack_from(block)
    if (bseed, bnd, bns) != (seed, nd, ns):
        return _Slot("bad", seq=seq, note=f"foreign block (seed {bseed}, {bnd} disks, {bns} slots)")
    if bslot != slot or disk >= nd or seq == 0:
        return _Slot("bad", seq=seq, note=f"misplaced block (says disk {disk} slot {bslot} seq {seq})")
    if block != make_block(seed, seq, disk, nd, slot, ns):
        return _Slot("bad", seq=seq, note=f"torn block (header seq {seq}, fill does not match)")
    return _Slot("valid", seq=seq, disk=disk)


def _last_writers(seed: int, k: int, nd: int, ns: int) -> dict[tuple[int, int], int]:
    """Last write <= k per (disk, slot), walking down from k until every slot has one (usually a few thousand)."""
    last: dict[tuple[int, int], int] = {}
    need = nd * ns
    for seq in range(k, 0, -1):
        key = schedule(seed, seq, nd, ns)
        if key not in last:
            last[key] = seq
            if len(last) == need:
                break
    return last


def _judge(raws: list[Path], names: list[str], strict_order: bool) -> Verdict:
    header = None
    rep = _Report()
    sizes = [p.stat().st_size for p in raws]
    for p, size, name in zip(raws, sizes, names):
        with open(p, "rb") as f:
            header, nonzero = _find_header(f, size)
        if header:
            break
        if nonzero is not None:
            rep.add(f"{name}: no workload block anywhere, but non-zero data at offset {nonzero}")
    if header is None:  # nothing was ever written (the prefix of zero writes), unless there is foreign data
        return Verdict(rep.count == 0, 0, len(raws), rep.lines, names, violation_count=rep.count)
    rep = _Report()
    seed, nd, ns = header
    slots: list[list[_Slot]] = []
    for p, size, name in zip(raws, sizes, names):
        st = stride(size, ns)
        row: list[_Slot] = []
        if st < BLOCK:
            rep.add(f"{name}: {size} bytes is too small for {ns} slots")
        else:
            with open(p, "rb") as f:
                for s in range(ns):
                    f.seek(s * st)
                    row.append(_classify(f.read(BLOCK), seed, nd, ns, s))
        slots.append(row)

    # Which image holds which disk index: the headers say; images without valid blocks take the remaining indices.
    owner: dict[int, int] = {}
    unclaimed: list[int] = []
    for i, row in enumerate(slots):
        claims = sorted({c.disk for c in row if c.kind == "valid"})
        if len(claims) > 1:
            rep.add(f"{names[i]}: mixes blocks of disks {claims}")
        if not claims:
            unclaimed.append(i)
        elif claims[0] in owner:
            rep.add(f"{names[i]} and {names[owner[claims[0]]]} both hold disk {claims[0]}")
        else:
            owner[claims[0]] = i
            if strict_order and claims[0] != i:
                rep.add(f"{names[i]} is image {i} but holds disk {claims[0]}'s blocks (disks swapped?)")
    ignored: list[str] = []
    for d in range(nd):
        if d not in owner and unclaimed:
            owner[d] = unclaimed.pop(0)
    for i in unclaimed:
        bad = [(s, c) for s, c in enumerate(slots[i]) if c.kind == "bad"]
        if bad and any(c.seq for _, c in bad):  # workload-looking blocks, but of no disk that is left
            s, c = bad[0]
            rep.add(f"{names[i]}: {len(bad)} bad block(s) (slot {s}: {c.note}) and no disk index left for it")
        else:
            ignored.append(names[i])  # e.g. a read-only disk the workload skipped, or an unrelated disk

    k = max((c.seq for row in slots for c in row if c.kind == "valid"), default=0)
    last = _last_writers(seed, k, nd, ns)
    missing: list[int] = []
    for d in range(nd):
        if d not in owner:
            rep.add(f"disk{d}: no image holds it ({len(raws)} image(s) for {nd} disks)")
            missing.extend(seq for (dd, _), seq in last.items() if dd == d)
            continue
        i = owner[d]
        for s, c in enumerate(slots[i]):
            want = last.get((d, s))
            where = f"disk{d} slot {s} ({names[i]})"
            if c.kind == "bad":
                rep.add(f"{where}: {c.note}")
                if want:
                    missing.append(want)
            elif c.kind == "zero":
                if want:
                    rep.add(f"{where}: empty, expected seq {want} (missing write {want})")
                    missing.append(want)
            elif c.disk != d:
                pass  # already reported as a mixed image
            elif want is None or c.seq > want or schedule(seed, c.seq, nd, ns) != (d, s):
                rep.add(f"{where}: holds seq {c.seq}, which the schedule does not put there as of k={k}")
            elif c.seq < want:
                rep.add(f"{where}: holds seq {c.seq}, expected seq {want} (missing writes {c.seq + 1}..{want})")
                missing.append(want)
    disks = [names[owner[d]] if d in owner else "" for d in range(nd)]
    return Verdict(
        ok=rep.count == 0, k=k, ndisks=nd, violations=rep.lines, disks=disks, seed=seed, nslots=ns,
        violation_count=rep.count, first_missing=min(missing) if missing else None, ignored=ignored,
    )


def _is_qcow2(p: Path) -> bool:
    with open(p, "rb") as f:
        return f.read(4) == b"QFI\xfb"


def verify_images(paths: list[Path], *, strict_order: bool = False) -> Verdict:
    """Verify images (raw or qcow2, any backing chain); ``strict_order`` also demands paths[i] hold disk i."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise NotFoundError("no disk images to verify")
    for p in paths:
        if not p.is_file():
            raise NotFoundError(f"disk image {p} does not exist")
    with tempfile.TemporaryDirectory(prefix="cutpoint-verify-") as tmp:
        raws = []
        for i, p in enumerate(paths):
            if not _is_qcow2(p):
                raws.append(p)
                continue
            out = Path(tmp) / f"{i}.raw"
            qemuimg.convert(p, out, None, "raw", what=f"cannot read {p}")
            raws.append(out)
        return _judge(raws, [str(p) for p in paths], strict_order)


def _natural(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def images_in(d: Path) -> list[Path]:
    return sorted((p for p in Path(d).iterdir() if p.is_file() and p.suffix in IMAGE_SUFFIXES), key=_natural)


def verify_dir(d: Path, *, strict_order: bool = False) -> Verdict:
    """Verify the images (*.raw, *.img, *.qcow2) in ``d``, in natural name order (disk2 before disk10)."""
    d = Path(d)
    if not d.is_dir():
        raise NotFoundError(f"{d} is not a directory")
    paths = images_in(d)
    if not paths:
        raise NotFoundError(f"no disk images (*.raw, *.img, *.qcow2) in {d}")
    return verify_images(paths, strict_order=strict_order)
