"""The hypervisor drivers, one package per external system: ``qmp`` (a QEMU reached by its monitor socket) and
``libvirt`` (a domain, through libvirtd). ``registry`` picks one by a VM's kind.
"""
