"""Parsing and printing of byte sizes as users write them (``128M``, ``1G``, ``4096``)."""

from __future__ import annotations

from .errors import UsageError

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    num, suffix = (s[:-1], s[-1]) if s and s[-1] in _SUFFIX else (s, "")
    try:
        value = int(num) * _SUFFIX[suffix]
    except ValueError:
        raise UsageError(f"size {text!r} is not a size; write e.g. 4096, 64M or 1G") from None
    if value <= 0:
        raise UsageError(f"size {text!r} must be positive")
    return value


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
