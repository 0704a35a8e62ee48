"""Guest file names are bytes a guest chose: shown escaped, taken back from the escaped form, checked before use.

The escaped form is the one a user sees and types. Valid UTF-8 stays as it is, except that every byte of an invalid
sequence, of a control or format character (C0, DEL, C1, bidi overrides, zero-width characters, line/paragraph
separators), and of ``\\`` and ``/`` becomes ``\\xNN``. So the form is printable, one line, and lossless:
``unescape(escape(b)) == b`` for every byte string. ``/`` is escaped because a name holding one is a single guest
name, not two path components.
"""

from __future__ import annotations

import re
import unicodedata

_ESCAPED = re.compile(r"\\x([0-9a-fA-F]{2})")
_UNSAFE_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def _hex(b: bytes) -> str:
    return "".join(f"\\x{c:02x}" for c in b)


def escape(raw: bytes, *, path: bool = False) -> str:
    """The printable, lossless form of a guest name (see the module's docstring); ``path``: keep ``/`` (a link
    target, a whole path)."""
    out: list[str] = []
    text = raw.decode("utf-8", "surrogateescape")
    for ch in text:
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:                       # an undecodable byte, kept by surrogateescape
            out.append(f"\\x{cp - 0xDC00:02x}")
        elif ch == "\\" or (ch == "/" and not path) or unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            out.append(_hex(ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out)


def unescape(text: str) -> bytes:
    """The guest bytes a typed name stands for: ``\\xNN`` is byte NN, everything else is its UTF-8."""
    out = bytearray()
    pos = 0
    for m in _ESCAPED.finditer(text):
        out += text[pos:m.start()].encode("utf-8", "surrogateescape")
        out.append(int(m.group(1), 16))
        pos = m.end()
    out += text[pos:].encode("utf-8", "surrogateescape")
    return bytes(out)


def terminal_safe(text: str) -> str:
    """Any message that may hold guest bytes, made safe for a terminal: control and format characters escaped."""
    out: list[str] = []
    for ch in text:
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:
            out.append(f"\\x{cp - 0xDC00:02x}")
        elif unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            out.append(_hex(ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


def split_path(path: str) -> list[bytes]:
    """A user's guest path (``/etc/caf\\xe9``) as raw components; ``..`` is refused, ``.`` and empty ones dropped."""
    parts = [unescape(p) for p in path.split("/") if p not in ("", ".")]
    if b".." in parts:
        from ..errors import UsageError
        raise UsageError(f"path {terminal_safe(path)!r} must not contain '..'")
    return parts


def unsafe_reason(raw: bytes) -> str | None:
    """Why ``raw`` cannot be created as one name in a host directory, or None when it can."""
    if raw in (b"", b".", b".."):
        return f"its name is {raw.decode()!r}" if raw else "its name is empty"
    if b"/" in raw:
        return "its name holds '/'"
    if b"\0" in raw:
        return "its name holds a NUL byte"
    return None
