"""Debian's kernel on kapsel's virtio devices, over each transport: one boot checks them all
from the inside and the host checks the other side.
- virtio-blk: a raw ext4 image and a qcow2 whose backing chain is qcow2 -> raw ext4 (both made
  without mounting: `mke2fs -d`, `kapsel vm disk create -b`); the guest reads a marker from
  each and writes a file, which the host reads back after the guest exits (debugfs; the qcow2
  through `qemu-img convert`), the backing files unchanged;
- virtio-net through a tap in a network namespace the test makes: ping, and TCP both ways;
- virtio-console: a line written to /dev/hvc0; virtio-rng: /dev/hwrng is virtio_rng;
- virtio-vsock both directions (Firecracker's unix-socket protocol on the host side, a static
  AF_VSOCK program in the guest).
The pci variant boots the bzImage; the mmio one the vmlinux through PVH (on the soft CPU both
boot the vmlinux: test_vm_linux.kernel_for). Two columns: kvm runs
where KVM boots Linux (see test_vm_linux.py: on other machines scripts/vm-tests.sh runs it in
nested SVM); soft (--accel soft: kapsel's own CPU, userspace I/O APIC, irqfds and MSI) runs
directly on every machine, no /dev/kvm needed."""
import hashlib
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
import uuid

import pytest

from conftest import KAPSEL, REPO
from test_vm_linux import (ACCELS, CMDLINE, extract_vmlinux, kernel_for, kernel_root,
                           make_initramfs, mkinitramfs, need_accel, run_guest)

MARKER = "KAPSEL-VIRTIO-OK"
MODULES = ["virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_console",
           "virtio_rng", "vmw_vsock_virtio_transport", "ext4", "crc32c_generic"]
PROGS = os.path.join(REPO, "tests", "integration", "progs")

# Seconds a boot may take, per accelerator: the guest's run, and the host ends' waits for the
# guest. Soft on the ASan/UBSan build, 2 cores shared by 6 jobs (load 9-10): 277 s (pci) and
# 286 s (mmio); the release build 113 s (pci, load 17) and 46 s (mmio, load 7).
TIMEOUT = {"kvm": 300, "soft": 900}


def test_module_resolver_orders_dependencies():
    """insmod without depmod works only if every module comes after what it depends on and
    nothing it depends on is left out (the guest then lacks /dev/vda or eth0)."""
    mods = mkinitramfs.modules(kernel_root(), MODULES)
    names = [n for n, _ in mods]
    assert len(names) == len(set(names))
    for i, (name, data) in enumerate(mods):
        for dep in mkinitramfs.depends(data):
            assert dep in names[:i], f"{name} depends on {dep}, not loaded before it"
    for m in ("virtio_blk", "virtio_net", "vmw_vsock_virtio_transport", "ext4"):
        assert m in names, names


GUEST_SCRIPT = f"""echo "CPUS $(cat /sys/devices/system/cpu/online)"
mkdir -p /mnt/raw /mnt/qcow2
mount -t ext4 /dev/vda /mnt/raw && echo "RAW $(cat /mnt/raw/marker)" &&
  echo written-by-the-guest-raw >/mnt/raw/guest-out && umount /mnt/raw
mount -t ext4 /dev/vdb /mnt/qcow2 && echo "QCOW2 $(cat /mnt/qcow2/marker)" &&
  echo written-by-the-guest-qcow2 >/mnt/qcow2/guest-out && umount /mnt/qcow2
echo HVC-LINE-FROM-THE-GUEST >/dev/hvc0
echo "RNG $(cat /sys/class/misc/hw_random/rng_current) $(head -c 64 /dev/hwrng | wc -c)"
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ping -c 1 -W 10 10.0.2.1 >/dev/null && echo "PING ok"
nc -l -p 5000 >/tmp/tcp-in &
listener=$!
echo guest-to-host | nc 10.0.2.1 5001
wait $listener
echo "TCP-IN $(cat /tmp/tcp-in)"
/bin/vsock-peer listen 1234 >/dev/null &
vlistener=$!
echo "VSOCK-OUT $(/bin/vsock-peer connect 2 5000 'hello from the guest')"
wait $vlistener && echo "VSOCK-IN ok"
sync
echo {MARKER}
poweroff -f
"""

# The host's end of the TCP checks, run inside the test's network namespace: accept the
# guest's line on 5001, then connect to the guest's listener on 5000 (retrying until it is up).
HOST_TCP = r"""
import socket, sys, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("10.0.2.1", 5001))
srv.listen(1)
srv.settimeout(float(sys.argv[1]))
c, _ = srv.accept()
c.settimeout(60)
data = b""
while not data.endswith(b"\n"):
    d = c.recv(100)
    if not d:
        break
    data += d
print("HOST-GOT", data.decode().strip(), flush=True)
c.close()
end = time.time() + 60
while True:
    try:
        s = socket.create_connection(("10.0.2.15", 5000), timeout=5)
        break
    except OSError:
        if time.time() > end:
            raise
        time.sleep(0.2)
s.sendall(b"host-to-guest\n")
s.close()
print("HOST-SENT", flush=True)
"""


class VsockHost:
    """The host side of vsock: a listener for the guest's connection to CID 2 port 5000
    (kapsel connects it to PATH_5000) and a client that connects to the guest's port 1234
    through PATH ("CONNECT 1234"), retrying until the guest listens."""

    def __init__(self, path, timeout):
        self.path = path
        self.got = None
        self.reply = None
        self.error = None
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path + "_5000")
        self.listener.listen(1)
        self.listener.settimeout(timeout)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True),
                        threading.Thread(target=self._connect, daemon=True)]
        for t in self.threads:
            t.start()

    def _accept(self):
        try:
            c, _ = self.listener.accept()
            c.settimeout(60)
            data = b""
            while not data.endswith(b"\n"):
                d = c.recv(100)
                if not d:
                    break
                data += d
            self.got = data
            c.sendall(b"reply from the host\n")
            c.close()
        except OSError as e:
            self.error = f"guest-to-host: {e}"

    def _connect(self):
        while not self.stop.is_set():
            try:
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(30)
                s.connect(self.path)
                s.sendall(b"CONNECT 1234\n")
                f = s.makefile("rb")
                ok = f.readline()
                if ok.startswith(b"OK "):
                    s.sendall(b"ping\n")
                    self.reply = f.readline()
                    f.close()
                    s.close()
                    return
                f.close()
                s.close()
            except OSError:
                pass  # not listening yet (a reset), or the socket not yet made
            self.stop.wait(0.2)

    def close(self):
        self.stop.set()
        self.listener.close()


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def debugfs_cat(image, name):
    r = subprocess.run(["debugfs", "-R", f"cat /{name}", str(image)], capture_output=True,
                       text=True)
    return r.stdout


@pytest.mark.parametrize("accel", ACCELS)
@pytest.mark.parametrize("transport", ["pci", "mmio"])
def test_linux_virtio_devices(tmp_path, transport, accel):
    need_accel(accel)
    timeout = TIMEOUT[accel]
    for tool in ("mke2fs", "debugfs", "ip", "gcc", "qemu-img"):
        if not shutil.which(tool):
            pytest.skip(f"needs {tool}")
    kernel = kernel_for(accel, tmp_path)
    if transport == "mmio" and accel == "kvm":
        kernel = extract_vmlinux(kernel, tmp_path / "vmlinux")

    peer = tmp_path / "vsock-peer"
    r = subprocess.run(["gcc", "-O2", "-static", "-o", str(peer),
                        os.path.join(PROGS, "vsock-peer.c")], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot build a static vsock-peer: {r.stderr}"

    # The disks: ext4 made from directories, without mounting anything.
    for name in ("raw", "base"):
        content = tmp_path / f"content-{name}"
        content.mkdir()
        (content / "marker").write_text(f"from-the-{name}-disk\n")
        subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(content),
                        str(tmp_path / f"{name}.img"), "16M"], check=True)
    raw, base = tmp_path / "raw.img", tmp_path / "base.img"
    mid, top = tmp_path / "mid.qcow2", tmp_path / "top.qcow2"
    for img, backing, fmt in ((mid, base, "raw"), (top, mid, "qcow2")):
        r = subprocess.run([KAPSEL, "vm", "disk", "create", "--backing", backing.name,
                            "--backing-format", fmt,
                            str(img), "16M"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    base_sum, mid_sum = sha(base), sha(mid)

    initrd = make_initramfs(
        tmp_path / "initrd.cpio", GUEST_SCRIPT, MODULES,
        files=[("bin/vsock-peer", stat.S_IFREG | 0o755, peer.read_bytes())])

    ns = "kapsel-linux-" + uuid.uuid4().hex[:6]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    vsock = None
    host_tcp = None
    try:
        nsx = ["ip", "netns", "exec", ns]
        subprocess.run(nsx + ["ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(nsx + ["ip", "tuntap", "add", "dev", "ktap0", "mode", "tap"], check=True)
        subprocess.run(nsx + ["ip", "addr", "add", "10.0.2.1/24", "dev", "ktap0"], check=True)
        subprocess.run(nsx + ["ip", "link", "set", "ktap0", "up"], check=True)
        host_tcp = subprocess.Popen(nsx + ["/usr/bin/python3", "-c", HOST_TCP, str(timeout)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        vpath = str(tmp_path / "v.sock")
        vsock = VsockHost(vpath, timeout)
        start = time.monotonic()
        r = run_guest(nsx + [KAPSEL, "vm", "run", "--accel", accel, "--kernel", kernel,
                             "--initrd", initrd,
                             "--mem", "512M", "--cpus", "2", "--transport", transport,
                             "--disk", f"{raw},format=raw", "--disk", f"{top},format=qcow2",
                             "--net", "tap=ktap0", "--virtio-console", "--rng",
                             "--vsock", f"cid=3,socket={vpath}",
                             "--cmdline", CMDLINE], timeout)
        took = time.monotonic() - start
        try:
            tcp_out, tcp_err = host_tcp.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            host_tcp.kill()
            tcp_out, tcp_err = host_tcp.communicate()
    finally:
        if vsock:
            vsock.close()
        if host_tcp and host_tcp.poll() is None:
            host_tcp.kill()
            host_tcp.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False)
    out = r.stdout
    ctx = out[-4000:] + r.stderr
    assert MARKER in out, ctx
    assert r.returncode == 0, ctx
    assert "warning" not in r.stderr, r.stderr
    assert "not implemented" not in r.stderr, r.stderr
    assert "CPUS 0-1" in out, ctx
    # virtio-blk, raw and qcow2 over a chain, read in the guest and written back.
    assert "RAW from-the-raw-disk" in out, ctx
    assert "QCOW2 from-the-base-disk" in out, ctx
    assert debugfs_cat(raw, "guest-out") == "written-by-the-guest-raw\n"
    flat = tmp_path / "top-flat.img"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(top), str(flat)], check=True)
    assert debugfs_cat(flat, "guest-out") == "written-by-the-guest-qcow2\n"
    assert debugfs_cat(flat, "marker") == "from-the-base-disk\n"
    chk = subprocess.run(["qemu-img", "check", str(top)], capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    assert sha(base) == base_sum and sha(mid) == mid_sum, "a backing file was written"
    # virtio-console and virtio-rng.
    assert "HVC-LINE-FROM-THE-GUEST" in out, ctx
    assert "RNG virtio_rng.0 64" in out, ctx
    # virtio-net: ping and TCP both ways.
    assert "PING ok" in out, ctx
    assert "HOST-GOT guest-to-host" in tcp_out, tcp_out + tcp_err
    assert "TCP-IN host-to-guest" in out, ctx + tcp_out + tcp_err
    # virtio-vsock both ways.
    assert vsock.got == b"hello from the guest\n", (vsock.got, vsock.error, ctx)
    assert "VSOCK-OUT reply from the host" in out, ctx
    assert vsock.reply == b"pong: ping\n", (vsock.reply, ctx)
    assert "VSOCK-IN ok" in out, ctx
    print(f"{accel}: Linux over virtio-{transport}, every device checked, in {took:.0f} s")
