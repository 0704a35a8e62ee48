"""cutpoint: agentless, multi-disk, crash-consistent backup for QEMU/KVM virtual machines."""

__version__ = "0.1.0"
