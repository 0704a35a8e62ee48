"""The driver-neutral half of a cut: the interface every hypervisor driver implements (``driver``), the disks it
reports (``disks``), the guest-agent interface (``agent``), cutpoint's names for what it creates (``naming``), the
quiesce bracket around the atomic step (``quiesce``), the cleanup-step collector (``cleanup``) and the QMP cut's
plan (``plan``). Nothing here talks to a hypervisor; ``cutpoint.drivers`` does.
"""
