"""RPO breach: a VM with a policy that has had no successful backup within its policy's interval plus the grace
(``rpo_grace_minutes``, default 60) raises one alert (log line and webhook event ``rpo.breach``), not one per pass
and not again after a restart; a successful backup clears it (``rpo.recovered``) and re-arms it for the next breach.
Driven by the service's fake clock over a real catalog (the fake backup commits real, diskless points)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from cutpoint.policy.model import PolicyError
from tests.service.fakes import harness, policy

UTC = timezone.utc
MIN = timedelta(minutes=1)


def _day(d: int, h: int = 0, m: int = 0) -> datetime:
    return datetime(2024, 6, d, h, m, tzinfo=UTC)


def _rpo(sent: list[dict]) -> list[tuple[str, str]]:
    return [(a["event"], a["vm"]) for a in sent if a["event"].startswith("rpo.")]


def test_rpo_breach_alerts_once_and_clears_on_success(caplog: pytest.LogCaptureFixture) -> None:
    down = [(_day(4), _day(7, 12)), (_day(9), _day(30))]
    h = harness(_day(1, 12), fail=lambda t: any(a <= t < b for a, b in down))
    sent: list[dict] = []
    h.svc.alerter.send = sent.append                   # type: ignore[method-assign]
    h.add_vm("web", policy({"frequency": "daily", "time": "03:00"}))
    h.add_vm("db", policy({"frequency": "daily", "time": "03:00"}, name="q", rpo_grace_minutes=180))
    h.svc.tick()
    h.run_until(_day(4, 3, 59), MIN)                 # last success 3 Jun 03:00: due by 4 Jun 03:00 + 60 min
    assert _rpo(sent) == []
    with caplog.at_level(logging.ERROR):
        h.run_until(_day(4, 4, 1), MIN)
    assert _rpo(sent) == [("rpo.breach", "web")]
    breach = [a for a in sent if a["event"] == "rpo.breach"][0]
    assert breach["last_success"] == "2024-06-03T03:00:00.000Z" and breach["policy"] == "p"
    assert breach["deadline"] == "2024-06-04T04:00:00.000Z" and breach["grace_minutes"] == 60
    assert any("web" in r.getMessage() and "RPO" in r.getMessage() for r in caplog.records)
    h.run_until(_day(4, 6, 1), MIN)                  # db's own grace: 180 min
    assert _rpo(sent) == [("rpo.breach", "web"), ("rpo.breach", "db")]
    h.run_until(_day(7, 23), 5 * MIN)                # days more in breach, failed slots: no repeat
    assert _rpo(sent) == [("rpo.breach", "web"), ("rpo.breach", "db")]
    h.run_until(_day(8, 3, 10), MIN)                 # 8 Jun 03:00 succeeds: cleared, re-armed
    assert sorted(_rpo(sent)[2:]) == [("rpo.recovered", "db"), ("rpo.recovered", "web")]
    h.run_until(_day(9, 3, 59), MIN)
    assert len(_rpo(sent)) == 4
    h.run_until(_day(9, 4, 1), MIN)                  # the next breach alerts again
    assert _rpo(sent)[4:] == [("rpo.breach", "web")]
    assert [a["last_success"] for a in sent if a["event"] == "rpo.breach"][-1] == "2024-06-08T03:00:00.000Z"


def test_rpo_breach_is_not_repeated_after_a_restart() -> None:
    h = harness(_day(1, 12), fail=lambda t: t >= _day(3))
    sent: list[dict] = []
    h.svc.alerter.send = sent.append                   # type: ignore[method-assign]
    h.add_vm("web", policy({"frequency": "daily", "time": "03:00"}))
    h.svc.tick()
    h.run_until(_day(3, 5), MIN)
    assert _rpo(sent) == [("rpo.breach", "web")]
    h.svc.close()
    h2 = harness(_day(3, 6), fail=lambda t: True)
    sent2: list[dict] = []
    h2.svc.alerter.send = sent2.append                 # type: ignore[method-assign]
    h2.run_until(_day(5), 10 * MIN)
    assert _rpo(sent2) == []
    assert h2.svc.rpo.open_breach("web") == "2024-06-03T04:00:00.000Z"    # still open, its deadline kept


def test_a_vm_never_backed_up_breaches_one_interval_after_it_got_its_policy() -> None:
    h = harness(_day(1, 12), fail=lambda t: True)
    sent: list[dict] = []
    h.svc.alerter.send = sent.append                   # type: ignore[method-assign]
    h.add_vm("web", policy({"frequency": "hourly", "every": 6}, rpo_grace_minutes=0))
    h.svc.tick()                                     # assigned at 12:00: due within 6 h
    h.run_until(_day(1, 17, 59), MIN)
    assert _rpo(sent) == []
    h.run_until(_day(1, 18, 1), MIN)
    rpo = [a for a in sent if a["event"] == "rpo.breach"]
    assert len(rpo) == 1 and rpo[0]["last_success"] is None and rpo[0]["deadline"] == "2024-06-01T18:00:00.000Z"


def test_rpo_grace_is_validated() -> None:
    with pytest.raises(PolicyError, match="rpo_grace_minutes"):
        policy({"frequency": "daily", "time": "03:00"}, rpo_grace_minutes=-5)
    assert policy({"frequency": "daily", "time": "03:00"}, rpo_grace_minutes=30).to_dict()["rpo_grace_minutes"] == 30
    assert "rpo_grace_minutes" not in policy({"frequency": "daily", "time": "03:00"}).to_dict()


def test_a_point_dated_in_the_future_does_not_silence_the_alert() -> None:
    """Whoever can write the vault can plant a catalog row dated next year; the watch must not take it as fresh."""
    from cutpoint.backup.run import BackupOptions

    h = harness(_day(1, 12), fail=lambda t: t >= _day(2, 12))
    sent: list[dict] = []
    h.svc.alerter.send = sent.append                   # type: ignore[method-assign]
    h.add_vm("web", policy({"frequency": "daily", "time": "03:00"}))
    h.svc.tick()
    h.run_until(_day(2, 4), MIN)                     # a real success on 2 Jun 03:00
    h.clock.set(datetime(2025, 6, 1, tzinfo=UTC))
    h.backup.fail = lambda t: False
    h.backup(h.vault, "web", BackupOptions())        # a point "cut" a year ahead
    h.backup.fail = lambda t: True
    h.clock.set(_day(2, 4))
    h.run_until(_day(3, 4, 1), MIN)
    rpo = [a for a in sent if a["event"] == "rpo.breach"]
    assert len(rpo) == 1 and rpo[0]["last_success"] == "2024-06-02T03:00:00.000Z"
