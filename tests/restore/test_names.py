"""Escaped guest names: lossless for any bytes, printable, one line, and what PATH takes back."""

from __future__ import annotations

import os
import unicodedata

import pytest

from cutpoint.errors import UsageError
from cutpoint.restore.names import escape, split_path, terminal_safe, unescape, unsafe_reason


def _printable(s: str) -> bool:
    return all(unicodedata.category(c)[0] != "C" and unicodedata.category(c) not in ("Zl", "Zp") for c in s)


def test_escape_is_lossless_and_printable_for_random_bytes() -> None:
    samples = [os.urandom(n) for n in range(0, 64)] + [b"\\x41", b"a/b", "caf\u00e9\u202e\u200b".encode(), b"\xc2\x85"]
    for raw in samples:
        shown = escape(raw)
        assert unescape(shown) == raw, raw
        assert _printable(shown) and "/" not in shown and "\n" not in shown, shown
        assert unescape(escape(raw, path=True)) == raw


def test_split_path_takes_the_escaped_form() -> None:
    assert split_path("/dir/caf\\xe9/./x\\x2fy/") == [b"dir", b"caf\xe9", b"x/y"]
    with pytest.raises(UsageError):
        split_path("/a/../b")


def test_terminal_safe_and_unsafe_names() -> None:
    assert terminal_safe("a\x1b[2Jb\x07") == "a\\x1b[2Jb\\x07"
    assert terminal_safe(b"\xff".decode("utf-8", "surrogateescape")) == "\\xff"
    assert [unsafe_reason(n) is None for n in (b"ok", b".", b"..", b"", b"a/b", b"a\0b", b"...")] == \
        [True, False, False, False, False, False, True]
