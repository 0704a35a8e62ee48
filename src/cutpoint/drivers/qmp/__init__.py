"""The QMP driver: a QEMU process reached through its monitor socket; also the QMP transport libvirt's
pass-through shares (``qmp.Monitor``).
"""
