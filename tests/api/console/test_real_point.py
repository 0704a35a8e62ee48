"""The console over points with real filesystems (a bare QEMU backed up by the CLI): the file browser's partition
picker, and hostile input on every form, query and path parameter, including the file browser's."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.api.console.helpers import login, wait_idle
from tests.helpers import blockdev_args, cutpoint

pytestmark = pytest.mark.vm


@pytest.fixture
def two_partitions(bare_qemu, tmp_path: Path):
    """A real point of VM 'parts': disk d0 holds a GPT with two ext4 partitions with different files (the second
    labelled with markup, as a guest may), disk sw is swap; returns (point id, {partition of d0: {name: bytes}})."""
    files = {1: {"only-in-one.txt": b"partition one\n"},
             2: {"only-in-two.txt": os.urandom(70_000), "sub/deeper.txt": b"two, nested\n"}}
    disk = tmp_path / "parts.raw"
    subprocess.run(["truncate", "-s", "40M", str(disk)], check=True)
    subprocess.run(["sfdisk", "-q", str(disk)], input=b"label: gpt\nstart=2048, size=32768, type=L\n"
                   b"start=36864, size=32768, type=L\n", check=True)
    for num, sector, label in ((1, 2048, "one"), (2, 36864, "<b>two</b>")):
        src = tmp_path / f"src{num}"
        for name, data in files[num].items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(data)
        img = tmp_path / f"p{num}.img"
        subprocess.run(["mkfs.ext4", "-q", "-L", label, "-d", str(src), str(img), "16M"], check=True)
        subprocess.run(["dd", f"if={img}", f"of={disk}", "bs=512", f"seek={sector}", "conv=notrunc,sparse",
                        "status=none"], check=True)
    swap = tmp_path / "swap.raw"
    subprocess.run(["truncate", "-s", "8M", str(swap)], check=True)
    subprocess.run(["mkswap", str(swap)], check=True, capture_output=True)
    vm = bare_qemu(blockdev_args(disk, "d0", "raw") + blockdev_args(swap, "sw", "raw"))
    cutpoint("vm", "add", "parts", "--qmp", str(vm.qmp), check=True)
    point = json.loads(cutpoint("backup", "parts", "--json", check=True).out)["point"]
    return point, files


def test_file_browser_lets_the_user_pick_a_partition(two_partitions, env) -> None:
    point, files = two_partitions
    client, tokens, _, _ = env
    login(client, tokens["read-only"])
    over = client.get(f"/ui/vms/parts/points/{point}/files")                 # two disks: every filesystem
    assert over.status_code == 200, over.text
    rows = re.findall(r"<tr><td>(d0|sw)</td><td>([^<]*)</td><td>([^<]*)</td>.*?</tr>", over.text)
    assert rows == [("d0", "partition 1", "ext4"), ("d0", "partition 2", "ext4"), ("sw", "whole disk", "swap")]
    links = re.findall(r'href="([^"]*disk=(\w+)&amp;part=(\d+))"', over.text)
    assert [(d, n) for _, d, n in links] == [("d0", "1"), ("d0", "2")], over.text   # swap: nothing to browse
    assert "not readable here" in over.text
    page = client.get(html.unescape(links[1][0]))
    assert page.status_code == 200, page.text
    assert "<caption>filesystems on disk d0" in page.text, page.text          # the disk's filesystems, to pick
    picker = page.text[page.text.index("<caption>filesystems"):]
    picker = picker[:picker.index("</table>")]
    assert "&lt;b" in picker and "two" in picker and "<b>" not in picker      # a guest's label is text
    hrefs = re.findall(r'href="([^"]*part=(\d+)[^"]*)"', picker)
    assert sorted(n for _, n in hrefs) == ["1", "2"], picker                 # both partitions offered
    assert re.search(r'part=2"[^>]*aria-current="page"', picker), picker     # the one listed below
    for href, num in hrefs:
        listing = client.get(html.unescape(href))
        assert listing.status_code == 200, listing.text
        names = set(re.findall(r'<span class="fname">([^<]*)</span>', listing.text))
        dirs = set(re.findall(r'>([^<>/]+)/</a>', listing.text))
        want = {n.split("/")[0] for n in files[int(num)]} | {"lost+found"}
        assert names | dirs == want, (num, names, dirs)
        assert f"partition {num}" in listing.text
        for name, data in files[int(num)].items():             # every link below keeps the partition
            if "/" in name:
                sub = re.search(rf'href="([^"]+)">{name.split("/")[0]}/</a>', listing.text)
                assert sub and f"part={num}" in sub.group(1), listing.text
                inner = client.get(html.unescape(sub.group(1))).text
                dl = re.search(rf'href="([^"]+)" aria-label="download {name.split("/")[1]}"', inner)
            else:
                dl = re.search(rf'href="([^"]+)" aria-label="download {name}"', listing.text)
            assert dl and f"part={num}" in dl.group(1), listing.text
            got = client.get(html.unescape(dl.group(1)))
            assert got.status_code == 200 and got.content == data, (num, name)


def test_hostile_input_on_every_console_form_and_query_is_a_page(two_partitions, env) -> None:
    """Every form field and query parameter of the console, and every path parameter, given values a hand or a
    script might send (empty, NUL, newline, huge numbers, 5000 characters, traversal, markup, undecodable bytes):
    a 4xx HTML page or an ordinary answer, never a 500 or a stack trace; no restore starts from a bad form."""
    point, _ = two_partitions
    client, tokens, svc, _ = env
    csrf = login(client, tokens["operator"])
    bad = ["", " ", "\x00", "\n", "-1", "-99999999999999999999999", "a" * 5000, "../../etc/passwd", "/",
           "/\x00/x", "<b>x</b>"]
    pt = f"/ui/vms/parts/points/{point}"
    seen = []

    def ok(r, path: str, may_download: bool = False) -> None:
        seen.append(r.status_code)
        assert r.status_code < 500 and "Traceback" not in r.text, (path, r.status_code, r.text[-500:])
        assert "text/html" in r.headers["content-type"] or (may_download and r.status_code == 200), (path, r.text)

    for b in bad + ["99999999999999999999999", "\udcff"]:
        q = quote(b.encode("utf-8", "surrogateescape"), safe="")
        paths = [f"/ui/vms/{q}", f"/ui/vms/parts/points/{q}", f"/ui/vms/parts/points/{q}/files", f"/ui/jobs/{q}",
                 f"/ui/policies/{q}", f"/ui/jobs?vm={q}&state={q}&kind={q}", f"/ui/alerts?all={q}",
                 f"{pt}/files?disk=d0&part={q}", f"{pt}/files?disk={q}",
                 f"{pt}/download?disk=d0&part={q}&path=/only-in-one.txt", f"{pt}/download?disk={q}&path=/lost%2Bfound"]
        if b not in (" ", "\n", "-1", "<b>x</b>"):         # each listing serves the disk: the telling paths only
            paths += [f"{pt}/files?disk=d0&path={q}", f"{pt}/download?disk=d0&path={q}", f"{pt}/files?path={q}"]
        for path in paths:
            ok(client.get(path), path, may_download=True)
            ok(client.post(path, data={"csrf": csrf}), path)
    forms = {"/ui/vms/web/backup": {"consistency": "", "full": "no"}, "/ui/vms/web/policy": {"policy": ""},
             f"{pt}/restore": {"to": "/nonexistent/x", "format": "raw"},
             f"{pt}/restore/new-vm": {"new_name": "-x", "new_format": "qcow2", "start": "no"},
             f"{pt}/restore/replace": {"confirm": ""}, f"{pt}/restore/instant": {"instant_name": "-x"},
             "/ui/alerts/ack": {"key": ""},
             "/ui/policies": {"name": "p", "timezone": "UTC", "schedule.frequency": "weekly", "schedule.time": "02:00",
                              "schedule.days": "mon", "schedule.every": "2", "schedule.window_start": "01:00",
                              "schedule.window_hours": "4", "retention.last": "3", "retention.daily": "2",
                              "retention.weekly": "1", "retention.monthly": "1", "retention.yearly": "1",
                              "consistency": "crash", "rpo_grace_minutes": "5"}}
    forms["/ui/policies/p"] = forms["/ui/policies"]
    assert client.post("/ui/policies", data={"csrf": csrf, **forms["/ui/policies"]}).status_code == 200
    for path, good in forms.items():
        for fld in good:
            for b in bad:
                ok(client.post(path, data={"csrf": csrf, **good, fld: b}), f"{path} {fld}={b!r}")
            ok(client.post(path, data={"csrf": csrf, **{k: v for k, v in good.items() if k != fld}}), path)
    wait_idle(svc)
    assert {j.kind for j in svc.jobs.list()} <= {"backup"}                      # no restore from a bad form
    assert 200 in seen and 404 in seen and 422 in seen and 400 in seen
