"""What a restored VM may be started with: the emulator binary and the allowlists of QEMU options, keys, devices
and backends that ``argcheck.py`` applies to a saved (hostile) command line. Policy as data, kept apart from the
checking code so that a reviewer can read what is allowed in one place."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ..errors import NotFoundError, UsageError
from .qemuopts import FLAGS

BINARY_RE = re.compile(r"qemu-system-[a-z0-9_]{1,32}")
READ_ROOTS = ("/usr/share", "/usr/lib", "/usr/local/share", "/boot")
FIX = "restore the disks with --to DIR and start the VM yourself"

ALLOWED_FLAGS = {
    "S", "daemonize", "nodefaults", "no-user-config", "nographic", "no-reboot", "no-shutdown", "enable-kvm",
    "snapshot", "no-hpet", "no-acpi", "full-screen", "no-fd-bootchk", "no-quit", "only-migratable", "usb",
    "localtime", "rtc-td-hack", "win2k-hack", "alt-grab", "ctrl-grab", "no-frame", "nodefconfig", "no-kvm",
    "no-kvm-irqchip", "no-kvm-pit", "no-kvm-pit-reinjection", "mem-prealloc", "enable-fips",
}
assert ALLOWED_FLAGS <= FLAGS            # the parser must read a flag as QEMU does, or the next token slips past
# Options whose argument is plain data: checked only for path-valued keys (``PATH_KEYS``) and absolute paths.
DATA_OPTS = {"m", "smp", "cpu", "accel", "boot", "k", "vga", "rtc", "msg", "overcommit", "sandbox", "icount",
             "watchdog", "watchdog-action", "action", "numa", "global", "machine", "M", "compat", "smbios", "fw_cfg",
             "d", "display"}
# Keys whose value QEMU opens as a host file or directory.
PATH_KEYS = {"file", "filename", "path", "romfile", "config", "dir", "x509-dir", "x509", "x509verify", "input-path",
             "logfile", "mem-path", "splash", "rootdir", "x-root", "kernel", "initrd", "dtb", "firmware", "bios",
             "events", "sysfsdev", "evdev", "rendernode", "sock", "socket", "fd", "fds", "vhostfd", "vhostfds"}
# Keys whose value is text that may hold a '/' (everything else with a '/' is checked as a path).
TEXT_KEYS = {"name", "id", "serial", "manufacturer", "product", "version", "vendor", "string", "mount_tag",
             "bootfile", "family", "sku", "asset", "location", "part", "uuid"}
# Keys that run a host program, pass host resources, or write host files whatever their value.
DENY_KEYS = {"dumpdtb", "helper", "smb", "guestfwd", "tftp", "fd", "fds", "vhostfd", "vhostfds", "data-file",
             "memory-backend-file", "websocket", "reverse"}
DENY_DEVICES = ("vfio-", "usb-host", "vhost-scsi", "vhost-vdpa", "pci-assign", "u2f-passthru", "usb-mtp", "xen-",
                "virtio-9p", "virtfs", "tpm-", "spapr-vty")
OBJECT_TYPES = {"memory-backend-ram", "memory-backend-memfd", "iothread", "main-loop", "thread-context",
                "rng-builtin", "rng-random", "rng-egd", "throttle-group", "secret", "authz-simple", "can-bus",
                "cryptodev-backend-builtin", "filter-buffer", "filter-mirror", "filter-redirector", "filter-rewriter",
                "filter-dump", "tls-creds-anon", "tls-creds-psk", "tls-creds-x509"}
RNG_DEVICES = {"/dev/urandom", "/dev/random", "/dev/hwrng"}
CHARDEV_BACKENDS = {"null", "socket", "file", "ringbuf", "memory", "stdio", "pty", "vc", "msmouse", "wctablet",
                    "testdev", "spicevmc", "spiceport", "qemu-vdagent", "dbus"}
LEGACY_CHARDEV = {"none", "null", "vc", "pty", "stdio", "msmouse", "braille"}
NET_TYPES = {"user", "tap", "socket", "stream", "dgram", "hubport", "vhost-user", "nic", "none"}
DRIVE_KEYS = {"file", "format", "if", "id", "index", "media", "bus", "unit", "cyls", "heads", "secs", "trans",
              "readonly", "read-only", "cache", "cache.direct", "cache.no-flush", "aio", "discard", "detect-zeroes",
              "snapshot", "werror", "rerror", "copy-on-read", "serial", "addr", "node-name", "auto-read-only",
              "force-share", "locking", "group", "bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr",
              "iops_size", "bps_max", "iops_max"}
IMAGE_FORMATS = {"raw", "qcow2"}
NODE_COMMON = {"driver", "node-name", "read-only", "auto-read-only", "force-share", "discard", "detect-zeroes",
               "cache"}
NODE_KEYS = {
    "file": {"filename", "locking", "aio", "aio-max-batch", "drop-cache", "x-check-cache-dropped"},
    "raw": {"file", "offset", "size"},
    "qcow2": {"file", "backing", "lazy-refcounts", "pass-discard-request", "pass-discard-snapshot",
              "pass-discard-other", "overlap-check", "cache-size", "l2-cache-size", "l2-cache-entry-size",
              "refcount-cache-size", "cache-clean-interval", "discard-no-unref"},
    "throttle": {"file", "throttle-group"},
    "copy-on-read": {"file", "bottom"},
    "preallocate": {"file", "prealloc-align", "prealloc-size"},
    "compress": {"file"},
    "null-co": {"size", "latency-ns", "read-zeroes"},
    "null-aio": {"size", "latency-ns", "read-zeroes"},
}
AUDIO_BACKENDS = {"none", "wav", "spice", "dbus"}
USB_DEVICES = {"tablet", "mouse", "keyboard", "wacom-tablet", "braille"}
ON = ("on", "true", "yes", None)


def qemu_dir() -> Path:
    """Where the emulator is taken from: ``$CUTPOINT_QEMU_DIR`` (the restoring user's choice) or /usr/bin."""
    return Path(os.environ.get("CUTPOINT_QEMU_DIR") or "/usr/bin")


def binary(saved: str) -> str:
    """The trusted emulator for a saved ``argv[0]``: only its base name counts, and it must be qemu-system-*."""
    base = os.path.basename(saved or "")
    if not BINARY_RE.fullmatch(base):
        raise UsageError(f"the saved VM configuration runs {saved!r}, not a qemu-system-* emulator; refusing to run "
                         f"it ({FIX})")
    path = qemu_dir() / base
    try:
        st = path.stat()
    except OSError:
        raise NotFoundError(f"{path} is not installed; the restored VM needs it (install the QEMU package for "
                            f"{base.removeprefix('qemu-system-')})") from None
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o022 or st.st_uid not in (0, os.geteuid()):
        raise UsageError(f"{path} is writable by others or not owned by root; refusing to run it")
    return str(path)


def is_trusted_binary(path: str) -> bool:
    return os.path.dirname(path) == str(qemu_dir()) and bool(BINARY_RE.fullmatch(os.path.basename(path)))
