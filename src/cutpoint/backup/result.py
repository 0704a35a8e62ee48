"""What one backup produced: the typed result ``backup()`` returns, and its JSON (the ``backup --json`` contract).

The service, the CLI and the point's catalog summary all read this one object, so the JSON has exactly one source;
``to_json`` keeps the field order and names the CLI has always printed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class DiskResult:
    name: str
    size: int
    read_bytes: int
    stored_bytes: int
    dirty_bytes: int | None
    mode: str                                  # 'full' | 'incremental' (this disk)
    cache: dict[str, bool] = field(default_factory=dict)


@dataclass
class BackupResult:
    point: str
    vm: str
    created: str
    consistency: str
    requested: str
    fallback_reason: str | None
    pause_ms: float
    frozen_ms: float | None
    mode: str
    full_reason: str | None
    parent: str | None
    duration_s: float
    warnings: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    disks: list[DiskResult] = field(default_factory=list)

    @property
    def logical_bytes(self) -> int:
        return sum(d.size for d in self.disks)

    @property
    def read_bytes(self) -> int:
        return sum(d.read_bytes for d in self.disks)

    @property
    def stored_bytes(self) -> int:
        return sum(d.stored_bytes for d in self.disks)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
