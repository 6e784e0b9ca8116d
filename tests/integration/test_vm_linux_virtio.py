"""Debian's cloud kernel on kapsel's virtio devices: an initramfs from busybox-static loads the
virtio modules (no depmod: in dependency order), mounts an ext4 disk made with `mke2fs -d`,
pings the host over a tap in a network namespace, prints a marker and powers off. Like the
core Linux test it first times a guest loop, and skips where KVM emulates every instruction."""
import glob
import lzma
import os
import shutil
import stat
import subprocess
import uuid

import pytest

from conftest import KAPSEL
from test_vm_linux import MIN_MIPS, cpio_newc, fetch_kernel, guest_mips, run_guest

MARKER = "KAPSEL-VIRTIO-OK"
# Loaded in this order when present as modules (built-in ones are simply absent): each after
# the modules its .modinfo `depends=` names (virtio needs virtio_ring). The generic
# linux-image-*-amd64 has all of virtio as modules, virtio_mmio included; the cloud one builds
# the core in.
MODULES = ["virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
           "virtio_pci", "virtio_mmio", "virtio_blk", "failover", "net_failover", "virtio_net",
           "crc16", "mbcache", "jbd2", "crc32c_generic", "libcrc32c", "ext4"]

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]


def module_files(kroot):
    """name -> bytes of each wanted module found in the unpacked kernel package."""
    found = {}
    for path in glob.glob(os.path.join(kroot, "lib", "modules", "*", "kernel", "**", "*.ko*"),
                          recursive=True):
        base = os.path.basename(path)
        name = base.split(".ko")[0].replace("-", "_")
        if name in MODULES and name not in found:
            data = open(path, "rb").read()
            found[name] = lzma.decompress(data) if base.endswith(".xz") else data
    return found


def modinfo_depends(data):
    """The modules a .ko names in its .modinfo `depends=` entry."""
    i = data.find(b"\0depends=")
    if i < 0:
        return []
    val = data[i + len(b"\0depends="):data.index(b"\0", i + 1)].decode()
    return [d.replace("-", "_") for d in val.split(",") if d]


def test_module_order_follows_depends(tmp_path):
    """insmod without depmod works only if every module comes after what it depends on, and
    nothing it depends on is left out (the guest then lacks /dev/vda or eth0)."""
    fetch_kernel(str(tmp_path))
    mods = module_files(os.path.join(str(tmp_path), "k"))
    assert mods, "no virtio modules found in the kernel package"
    everything = set()
    for path in glob.glob(os.path.join(str(tmp_path), "k", "lib", "modules", "*", "kernel",
                                       "**", "*.ko*"), recursive=True):
        everything.add(os.path.basename(path).split(".ko")[0].replace("-", "_"))
    order = [m for m in MODULES if m in mods]
    for i, m in enumerate(order):
        for dep in modinfo_depends(mods[m]):
            assert dep in order[:i] or dep not in everything, \
                f"{m} depends on {dep}, which MODULES does not load before it"
    if "virtio_pci" in mods:  # virtio as modules: the mmio transport is one too
        assert "virtio_mmio" in mods or "virtio_mmio" not in everything


@pytest.mark.parametrize("transport", ["pci", "mmio"])
def test_linux_virtio_blk_and_net(tmp_path, transport):
    mips = guest_mips()
    if mips < MIN_MIPS:
        pytest.skip(f"KVM here emulates guest instructions: measured {mips:.1f} M "
                    f"instructions/s in a guest loop (need >= {MIN_MIPS})")
    for tool in ("mke2fs", "ip"):
        if not shutil.which(tool):
            pytest.skip(f"needs {tool}")
    kernel = fetch_kernel(str(tmp_path))
    mods = module_files(os.path.join(str(tmp_path), "k"))

    # The disk: ext4 with a marker file, built from a directory without mounting anything.
    content = tmp_path / "content"
    content.mkdir()
    (content / "marker").write_text("from-the-disk\n")
    disk = tmp_path / "disk.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(content), str(disk), "16M"],
                   check=True)

    insmods = "".join(f"/bin/busybox insmod /lib/{m}.ko 2>/dev/null\n"
                      for m in MODULES if m in mods)
    init = f"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs dev /dev
{insmods}/bin/busybox mkdir -p /mnt
/bin/busybox mount -t ext4 /dev/vda /mnt && /bin/busybox cat /mnt/marker
/bin/busybox ip link set eth0 up
/bin/busybox ip addr add 10.0.2.15/24 dev eth0
/bin/busybox ping -c 1 -W 5 10.0.2.1 && /bin/busybox echo {MARKER}
/bin/busybox poweroff -f
"""
    entries = [("bin", stat.S_IFDIR | 0o755, b""), ("dev", stat.S_IFDIR | 0o755, b""),
               ("proc", stat.S_IFDIR | 0o755, b""), ("sys", stat.S_IFDIR | 0o755, b""),
               ("lib", stat.S_IFDIR | 0o755, b""),
               ("bin/busybox", stat.S_IFREG | 0o755, open("/bin/busybox", "rb").read()),
               ("init", stat.S_IFREG | 0o755, init.encode())]
    entries += [(f"lib/{m}.ko", stat.S_IFREG | 0o644, data) for m, data in mods.items()]
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(cpio_newc(entries))

    # The host end: a tap in a network namespace of our own, 10.0.2.1/24.
    ns = "kapsel-linux-" + uuid.uuid4().hex[:6]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        nsx = ["ip", "netns", "exec", ns]
        subprocess.run(nsx + ["ip", "tuntap", "add", "dev", "ktap0", "mode", "tap"], check=True)
        subprocess.run(nsx + ["ip", "addr", "add", "10.0.2.1/24", "dev", "ktap0"], check=True)
        subprocess.run(nsx + ["ip", "link", "set", "ktap0", "up"], check=True)
        r = run_guest(nsx + [KAPSEL, "vm", "run", "--kernel", kernel, "--initrd",
                             str(initrd), "--mem", "512M", "--cpus", "2",
                             "--transport", transport,
                             "--disk", f"{disk},format=raw", "--net", "tap=ktap0",
                             "--cmdline", "console=ttyS0 reboot=k panic=-1 rdinit=/init"], 180)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert "from-the-disk" in r.stdout, r.stdout[-3000:] + r.stderr
    assert MARKER in r.stdout, r.stdout[-3000:] + r.stderr
    assert r.returncode == 0, r.stderr
