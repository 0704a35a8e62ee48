"""The one qemu-img module: a QEMU's image lock told by structure (not qemu-img's wording), failures as one-line
errors that say what cutpoint was doing."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutpoint import qemuimg
from tests.helpers import blockdev_args, make_image


def test_an_image_a_running_qemu_holds_is_locked(bare_qemu, tmp_path: Path) -> None:
    held = make_image(tmp_path / "held.qcow2", "8M")
    free = make_image(tmp_path / "free.qcow2", "8M")
    vm = bare_qemu(blockdev_args(held, "d0"))
    assert qemuimg.locked(held)
    assert not qemuimg.locked(free)
    vm.quit()
    assert not qemuimg.locked(held)


def test_a_file_qemu_img_cannot_read_is_not_reported_locked(tmp_path: Path) -> None:
    assert not qemuimg.locked(tmp_path / "missing.qcow2")
    unreadable = tmp_path / "dir.qcow2"
    unreadable.mkdir()
    assert not qemuimg.locked(unreadable)


def test_create_info_resize_convert_round_trip(tmp_path: Path) -> None:
    img = tmp_path / "a.qcow2"
    qemuimg.create(img, "qcow2", 4 << 20)
    assert qemuimg.virtual_size(img, "qcow2") == 4 << 20
    qemuimg.resize(img, "qcow2", 8 << 20)
    assert qemuimg.virtual_size(img, "qcow2") == 8 << 20
    raw = tmp_path / "a.raw"
    qemuimg.convert(img, raw, None, "raw")
    assert qemuimg.probe_format(raw) == "raw" and raw.stat().st_size == 8 << 20
    top = tmp_path / "top.qcow2"
    qemuimg.create(top, "qcow2", 8 << 20, backing=str(raw), backing_fmt="raw")
    assert qemuimg.info(top)["backing-filename"] == str(raw)


def test_a_failure_names_what_was_done_and_quotes_qemu_img(tmp_path: Path) -> None:
    target = tmp_path / "no-such-dir" / "x.qcow2"
    with pytest.raises(qemuimg.QemuImgError) as err:
        qemuimg.create(target, "qcow2", 1 << 20, what=f"cannot create fleecing overlay {target}")
    text = str(err.value)
    assert text.startswith(f"cannot create fleecing overlay {target}: ") and "\n" not in text
    assert len(text) > len(f"cannot create fleecing overlay {target}: ")   # qemu-img's own reason follows
