"""One exception root for everything cutpoint reports to a user.

Each class carries the process exit code the CLI uses, so scripts can tell a bad argument (2) from an unreachable
hypervisor (4) or damaged vault data (6) without parsing messages. Messages name the thing that is wrong and, where
there is one, the fix.
"""

from __future__ import annotations


class CutpointError(Exception):
    """Root of all errors cutpoint reports; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(CutpointError):
    """The user asked for something malformed (bad size, bad option combination)."""

    exit_code = 2


class NotFoundError(CutpointError):
    """A named VM, point, disk or file does not exist."""

    exit_code = 3


class HypervisorError(CutpointError):
    """QEMU could not be reached or refused a command."""

    exit_code = 4


class MonitorBusyError(HypervisorError):
    """The QMP monitor accepted the connection but another client holds it."""


class QmpCommandError(HypervisorError):
    """QEMU answered a QMP command with an error."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"QMP command {command!r} failed: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


class VaultError(CutpointError):
    """The vault cannot be opened, written or read."""

    exit_code = 5


class IntegrityError(VaultError):
    """Vault data is damaged: a chunk or manifest fails its check."""

    exit_code = 6


class ConsistencyViolation(CutpointError):
    """The lab verifier found disks that are not a prefix of the ordered workload."""

    exit_code = 7


class LockedError(CutpointError):
    """Another cutpoint process holds a lock this operation needs."""

    exit_code = 8


class AuthError(VaultError):
    """The passphrase or key file does not unlock this vault (wrong passphrase, another vault's key)."""

    exit_code = 10


class UnsafePathError(CutpointError):
    """A directory cutpoint would create or delete in is not safely its own (a symlink, another owner, writable by
    others): refused rather than followed. Exit 5, like any other unusable file or directory."""

    exit_code = 5


class UnsupportedError(CutpointError):
    """The VM's setup cannot be backed up consistently as configured."""

    exit_code = 9


class StorageAuthError(VaultError):
    """Object storage refused the credentials (unknown key, bad secret, no permission): fix the AWS_* settings."""

    exit_code = 11


class RetentionError(VaultError):
    """Object storage refused to delete or shorten an object under Object Lock retention (immutability)."""

    exit_code = 12


class ImmutableError(RetentionError):
    """cutpoint refused to remove a point younger than the vault's immutability, or to reduce the vault's
    immutability or soft delete (exit 12, as a refusal by Object Lock)."""


class DrillFailedError(CutpointError):
    """A restore drill ran and its point failed it (did not boot, a signal missing, a filesystem damaged)."""

    exit_code = 13


class ApprovalRequiredError(CutpointError):
    """The vault is guarded (multi-user authorization): this operation needs a request approved by the holder of
    the guard key; the message names the request and how to approve it. Nothing was changed."""

    exit_code = 14


class ApprovalRefusedError(CutpointError):
    """An approval cannot be used: denied, expired, already used, for another operation or vault, or its signature
    does not verify against the vault's guard key (forged, or the request was edited). Nothing was changed."""

    exit_code = 15
