"""JSON shapes of points and VMs in the API; a VM's summary and the reports are computed in ``service/report.py``."""

from __future__ import annotations

from typing import Any

from ..catalog.db import DrillRecord, PointRecord, VmRecord
from ..service.daemon import Service
from ..service.report import vm_summary


def point_json(p: PointRecord, drill: DrillRecord | None = None) -> dict[str, Any]:
    return {"id": p.id, "vm": p.vm, "created": p.created, "consistency": p.consistency, "mode": p.mode,
            "pause_ms": p.pause_ms, "logical_bytes": p.logical_bytes, "read_bytes": p.read_bytes,
            "stored_bytes": p.stored_bytes, "drill": drill.result if drill else None}


def vm_json(svc: Service, vm: VmRecord) -> dict[str, Any]:
    return vm_summary(svc, vm).to_json()
