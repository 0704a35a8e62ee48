#!/bin/sh
# cutpoint lab guest /init: mount the basics, load the drivers, start the ordered-write workload, then idle.
# Modules are listed in dependency order in /etc/modules.order by the image builder (cutpoint.lab.image).
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /proc /sys /dev /tmp /mnt
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
if [ "$(param workload)" != "0" ]; then
    /bin/workload &
fi
while true; do sleep 3600; done
