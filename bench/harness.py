"""Small tools the benchmark cases share: a paused QEMU serving the dataset, timed subprocesses with peak RSS,
medians, and the machine's description."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20


@dataclass
class Timed:
    seconds: float
    rss_mib: float
    out: str
    code: int
    cpu: float = 0.0             # the child's own user + system CPU seconds (wait4)


def run(cmd: list[str], env: dict[str, str] | None = None, check: bool = True) -> Timed:
    """Run a command; report its wall time and its own peak RSS (from wait4's rusage of that child)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    out, err = _drain(p)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({p.returncode}): {err.decode()[-800:]}")
    return Timed(seconds, ru.ru_maxrss / 1024.0, out.decode(), p.returncode, ru.ru_utime + ru.ru_stime)


def _drain(p: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """Read stdout and stderr to their ends without reaping the child (wait4 must see it)."""
    import threading

    assert p.stdout is not None and p.stderr is not None
    err: list[bytes] = []
    t = threading.Thread(target=lambda: err.append(p.stderr.read()))  # type: ignore[union-attr]
    t.start()
    out = p.stdout.read()
    t.join()
    return out, err[0]


CUTPOINT = [sys.executable, "-m", "cutpoint.cli.main"]


def convert_durably(src: Path, dst: Path) -> None:
    """``qemu-img convert`` to a raw file, then fsync it: a restore is done when its image is durable (cutpoint's
    restore fsyncs before it renames the image into place), so the copy it is compared with pays the same."""
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(src), str(dst)], check=True)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cutpoint(*args: str, env: dict[str, str] | None = None) -> Timed:
    return run([*CUTPOINT, *args], env)


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process and its reaped children, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


@dataclass
class Bare:
    qmp: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextmanager
def bare_qemu(disks: dict[str, Path], fmt: str = "raw") -> Iterator[Bare]:
    """A paused QEMU with the given images as -blockdev disks (node = dict key): real block layer, real NBD."""
    d = Path(tempfile.mkdtemp(prefix="cpb-", dir="/tmp"))
    qmp = d / "qmp.sock"
    args = []
    for node, path in disks.items():
        f = fmt if not str(path).endswith(".qcow2") else "qcow2"
        args += ["-blockdev", f"driver=file,filename={path},node-name={node}-file",
                 "-blockdev", f"driver={f},file={node}-file,node-name={node}",
                 "-device", f"virtio-blk-pci,drive={node},id={node}-dev"]
    proc = subprocess.Popen(["qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-m", "64", "-display",
                             "none", "-S", "-nodefaults", "-qmp", f"unix:{qmp},server=on,wait=off", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    vm = Bare(qmp, proc)
    try:
        while not qmp.exists():
            if proc.poll() is not None:
                raise RuntimeError("benchmark QEMU exited at start")
            time.sleep(0.02)
        yield vm
    finally:
        vm.stop()
        subprocess.run(["rm", "-rf", str(d)])


def machine() -> dict[str, object]:
    def ver(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "not installed"
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
            "qemu": ver(["qemu-system-x86_64", "--version"]), "restic": ver(["restic", "version"]),
            "borg": ver(["borg", "--version"]), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str) + "\n")
