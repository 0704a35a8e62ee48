"""QEMU command-line syntax, parsed losslessly so that a rewrite changes only what it means to change.

A command line is the binary and a list of options; an option is ``-name`` with zero or one argument. Arguments in
QEMU's option syntax (``key=value,key2=value2``, a comma inside a value doubled, a first bare word being the implied
key such as a ``-device`` driver) are kept as ordered ``(key, value)`` pairs, a bare word having value ``None``.
Parsing and rendering them back gives the same string, so untouched options stay byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

# Options that take no argument (QEMU 7.x, with and without a second leading dash).
FLAGS = {
    "S", "s", "daemonize", "nodefaults", "no-user-config", "nographic", "no-reboot", "no-shutdown", "enable-kvm",
    "snapshot", "no-hpet", "no-acpi", "full-screen", "no-fd-bootchk", "no-quit", "only-migratable", "win2k-hack",
    "rtc-td-hack", "usb", "localtime", "enable-fips", "preconfig", "alt-grab", "ctrl-grab", "no-frame",
    "semihosting", "singlestep", "enable-sync-profile", "nodefconfig", "old-param", "no-kvm", "no-kvm-irqchip",
    "no-kvm-pit", "no-kvm-pit-reinjection", "mem-prealloc", "curses", "sdl", "help", "version", "watchdog-action-none",
}


@dataclass
class Opt:
    """One option: ``name`` without leading dashes, ``arg`` its argument (None for a flag or a bare image)."""

    name: str
    arg: str | None = None
    dashes: str = "-"

    def tokens(self) -> list[str]:
        if self.name == "":          # a bare image path (legacy -hda)
            return [self.arg or ""]
        return [self.dashes + self.name] + ([] if self.arg is None else [self.arg])


def split_argv(argv: list[str]) -> tuple[str, list[Opt]]:
    """(binary, options) of a QEMU command line."""
    if not argv:
        return "", []
    opts: list[Opt] = []
    i = 1
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("-") and len(tok) > 1:
            dashes = "--" if tok.startswith("--") else "-"
            name = tok[len(dashes):]
            if name in FLAGS or i + 1 >= len(argv):
                opts.append(Opt(name, None, dashes))
                i += 1
            else:
                opts.append(Opt(name, argv[i + 1], dashes))
                i += 2
        else:
            opts.append(Opt("", tok))
            i += 1
    return argv[0], opts


def join_argv(binary: str, opts: list[Opt]) -> list[str]:
    return [binary] + [t for o in opts for t in o.tokens()]


Items = list[tuple[str, str | None]]


def parse_kv(s: str) -> Items:
    """``a=1,b=x,,y,flag`` -> [("a", "1"), ("b", "x,y"), ("flag", None)] (``,,`` is a literal comma)."""
    items: Items = []
    buf: list[str] = []
    i = 0
    parts: list[str] = []
    while i < len(s):
        c = s[i]
        if c == ",":
            if i + 1 < len(s) and s[i + 1] == ",":
                buf.append(",")
                i += 2
                continue
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(c)
        i += 1
    parts.append("".join(buf))
    for p in parts:
        key, eq, value = p.partition("=")
        items.append((key, value) if eq else (p, None))
    return items


def render_kv(items: Items) -> str:
    out = []
    for k, v in items:
        if v is None:
            out.append(k.replace(",", ",,"))
        else:
            out.append(f"{k}={v.replace(',', ',,')}")
    return ",".join(out)


def kv_get(items: Items, key: str) -> str | None:
    for k, v in items:
        if k == key:
            return v
    return None


def kv_set(items: Items, key: str, value: str) -> None:
    """Set ``key`` in place (first occurrence), or append it."""
    for i, (k, _) in enumerate(items):
        if k == key:
            items[i] = (key, value)
            return
    items.append((key, value))


def kv_drop(items: Items, pred: "object") -> list[str]:
    """Remove items whose key satisfies ``pred`` (a callable); returns the removed keys."""
    gone = [k for k, v in items if pred(k)]  # type: ignore[operator]
    items[:] = [(k, v) for k, v in items if not pred(k)]  # type: ignore[operator]
    return gone


def split_first(s: str) -> tuple[str, str, str]:
    """Split at the first comma that is not doubled: (head, ",", rest) or (s, "", ""); the head has QEMU's ``,,``
    escapes undone."""
    i = 0
    while i < len(s):
        if s[i] == ",":
            if i + 1 < len(s) and s[i + 1] == ",":
                i += 2
                continue
            return s[:i].replace(",,", ","), ",", s[i + 1:]
        i += 1
    return s.replace(",,", ","), "", ""
