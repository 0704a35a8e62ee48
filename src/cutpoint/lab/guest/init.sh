#!/bin/sh
# cutpoint lab guest /init: mount the basics, load the drivers, start the ordered-write workload, then idle.
# Modules are listed in dependency order in /etc/modules.order by the image builder (cutpoint.lab.image).
# With cutpoint.agent=1 (an initramfs that also carries qemu-ga) the disks hold ext4 filesystems made on the host:
# they are mounted at /mnt/vdX, qemu-ga serves the org.qemu.guest_agent.0 virtio-serial port, and the workload
# writes files through the filesystems (workload --fs) instead of raw blocks.
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /proc /sys /dev /tmp /mnt /run /var
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules.order); do
    insmod "/lib/modules/$m" 2>/dev/null || echo "CUTPOINT-INIT insmod $m failed"
done
param() {
    for w in $(cat /proc/cmdline); do
        case "$w" in "cutpoint.$1="*) echo "${w#*=}" ;; esac
    done
}
echo "CUTPOINT-BOOT-DONE"
if [ "$(param agent)" = "1" ]; then
    want=$(param ndisks)
    n=0
    while [ "$n" -lt 50 ] && [ "$(ls -d /sys/block/vd* 2>/dev/null | wc -l)" -lt "${want:-1}" ]; do
        sleep 0.1; n=$((n + 1))
    done
    dirs=""
    for b in /sys/block/vd*; do
        d=${b##*/}
        [ "$(cat "$b/ro")" = 1 ] && continue
        mkdir -p "/mnt/$d"
        if mount -t ext4 "/dev/$d" "/mnt/$d"; then dirs="$dirs /mnt/$d"; else echo "CUTPOINT-INIT mount /dev/$d failed"; fi
    done
    port=""
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port="/dev/${p##*/}"
    done
    if [ -n "$port" ] && [ -x /usr/sbin/qemu-ga ]; then
        ln -sf /run /var/run
        /usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run -F/etc/qemu/fsfreeze-hook &
        echo "CUTPOINT-AGENT-STARTED port=$port pid=$!"
    else
        echo "CUTPOINT-INIT no guest agent (port '${port}')"
    fi
    if [ "$(param workload)" != "0" ] && [ -n "$dirs" ]; then
        /bin/workload --fs $dirs &
    fi
elif [ "$(param workload)" != "0" ]; then
    /bin/workload &
fi
while true; do sleep 3600; done
