"""The libvirt XML cutpoint writes and reads, and its support verdicts, without a daemon."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from cutpoint.drivers.libvirt.xml import (BackupDisk, backup_xml, checkpoint_xml, parse_backup, parse_checkpoint,
                                             parse_domain, support_facts, verdict)
from cutpoint.restore.libvirt_restore import new_domain_xml

DOMAIN = """<domain type='kvm'><name>web</name><uuid>0d1f7c1e-4b1a-4f43-9c55-0a6c7b2d7e11</uuid>
<os><type>hvm</type><nvram>/var/lib/libvirt/qemu/nvram/web_VARS.fd</nvram></os>
<devices>
 <disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/><source file='/img/web.qcow2'/>
   <backingStore/><target dev='vda' bus='virtio'/><alias name='virtio-disk0'/></disk>
 <disk type='block' device='disk'><driver name='qemu' type='raw' cache='unsafe'/><source dev='/dev/vg/data'/>
   <target dev='vdb' bus='virtio'/></disk>
 <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='sda' bus='sata'/><readonly/></disk>
 <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/img/shared.img'/>
   <target dev='vdc' bus='virtio'/><shareable/></disk>
 <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/img/ro.qcow2'/>
   <target dev='vdd' bus='virtio'/><readonly/></disk>
 <disk type='block' device='lun'><driver name='qemu' type='raw'/><source dev='/dev/sdx'/>
   <target dev='sdb' bus='scsi'/></disk>
 <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/img/t.qcow2'/>
   <target dev='vde' bus='virtio'/><transient/></disk>
 <disk type='network' device='disk'><driver name='qemu' type='raw'/><source protocol='rbd' name='pool/img'/>
   <target dev='vdf' bus='virtio'/></disk>
 <interface type='network'><mac address='52:54:00:12:34:56'/><source network='default'/></interface>
 <serial type='file'><source path='/var/log/web-console.log'/><target port='0'/></serial>
</devices>
<seclabel type='dynamic' model='dac' relabel='yes'><label>+64055:+64055</label></seclabel></domain>"""


def test_skips_and_support_facts_match_the_qmp_ones() -> None:
    info = parse_domain(DOMAIN)
    assert info.name == "web" and info.dac_owner == (64055, 64055)
    skipped = {d.target: verdict(d) for d in info.disks if verdict(d)}
    assert skipped == {"sda": "CD-ROM drive (empty)"}
    facts = {d.target: support_facts(d) for d in info.disks}
    assert facts["vdc"]["share_rw"] and facts["vdd"]["read_only"] and facts["vde"]["transient"]
    assert facts["sdb"]["protocol"] == "host_device" and facts["sdb"]["protocol_file"] == "/dev/sdx"
    for plain in ("vda", "vdb", "vdf"):          # an LVM volume as a virtio disk is not a pass-through
        assert not any(facts[plain].values()), (plain, facts[plain])
    disks = {d.target: d for d in info.disks}
    assert disks["vdb"].source == "/dev/vg/data" and disks["vdf"].source == "rbd:pool/img"
    assert disks["vda"].has_bitmaps and not disks["vdb"].has_bitmaps and disks["vdb"].cache == "unsafe"


def test_backup_and_checkpoint_requests() -> None:
    bx = ET.fromstring(backup_xml("/w/nbd.sock", [BackupDisk("vda", "/w/vda.scratch", "cutpoint-P"),
                                                  BackupDisk("vdb", "/w/vdb.scratch")], ["sda"]))
    assert bx.get("mode") == "pull" and bx.find("server").get("socket") == "/w/nbd.sock"
    disks = {d.get("name"): d for d in bx.iter("disk")}
    assert disks["vda"].get("incremental") == "cutpoint-P" and disks["vda"].get("backupmode") == "incremental"
    assert disks["vdb"].get("incremental") is None and disks["vdb"].find("scratch").get("file") == "/w/vdb.scratch"
    assert disks["sda"].get("backup") == "no"
    cx = ET.fromstring(checkpoint_xml("cutpoint-Q", ["vda"], ["vdb", "sda"]))
    assert cx.findtext("name") == "cutpoint-Q"
    assert {d.get("name"): d.get("checkpoint") for d in cx.iter("disk")} == {"vda": "bitmap", "vdb": "no", "sda": "no"}


def test_answers_are_parsed() -> None:
    cp = parse_checkpoint("<domaincheckpoint><name>cutpoint-P</name><parent><name>cutpoint-O</name></parent><disks>"
                          "<disk name='vda' checkpoint='bitmap' bitmap='cutpoint-P' size='65536'/>"
                          "<disk name='vdb' checkpoint='bitmap' bitmap='cutpoint-P'/>"
                          "<disk name='vdc' checkpoint='no'/></disks></domaincheckpoint>")
    assert cp.parent == "cutpoint-O" and cp.disks["vda"].size == 65536 and cp.disks["vdb"].size is None
    assert cp.disks["vdc"].mode == "no"
    job = parse_backup("<domainbackup mode='pull'><server transport='unix' socket='/w/s'/><disks>"
                       "<disk name='vda' backup='yes' exportname='vda' exportbitmap='backup-vda'/>"
                       "<disk name='sda' backup='no'/></disks></domainbackup>")
    assert job.socket == "/w/s" and set(job.exports) == {"vda"} and job.exports["vda"].bitmap == "backup-vda"


def test_new_domain_definition(tmp_path: Path) -> None:
    xml, dropped = new_domain_xml(DOMAIN, "web2", {"vda": "/r/vda.qcow2", "vdb": "/r/vdb.qcow2"}, "qcow2", tmp_path,
                                  "restored")
    root = ET.fromstring(xml)
    assert root.findtext("name") == "web2" and root.find("uuid") is None and root.find("os/nvram") is None
    disks = {d.find("target").get("dev"): d for d in root.iter("disk")}
    assert set(dropped) == {"vdc", "vdd", "sdb", "vde", "vdf"} and set(disks) == {"vda", "vdb", "sda"}
    vdb = disks["vdb"]
    assert vdb.get("type") == "file" and vdb.find("source").get("file") == "/r/vdb.qcow2"
    assert vdb.find("driver").get("type") == "qcow2" and vdb.find("driver").get("cache") == "unsafe"
    assert disks["vda"].find("backingStore") is None
    assert root.find("devices/interface/mac") is None
    assert root.find("devices/serial/source").get("path") == str(tmp_path / "web-console.log")
