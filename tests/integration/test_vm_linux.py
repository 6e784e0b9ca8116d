"""Debian's Linux kernel (the generic linux-image-*-amd64: everything as modules, 9p and
pvpanic included) booted by kapsel to a busybox-static userspace: a bzImage on 4 vCPUs with its
ACPI tables and devices, the same kernel's vmlinux through PVH, and how a running Linux guest
ends: Ctrl-A x on the console, SIGTERM, a kernel panic. The virtio devices under Linux are
test_vm_linux_virtio.py.

These need KVM that runs guest code at hardware speed. Where /dev/kvm emulates every
instruction (a stock kernel takes hours there) or is absent, scripts/vm-tests.sh runs them
inside an outer guest under QEMU TCG, whose emulated AMD SVM gives a real /dev/kvm
(KAPSEL_NESTED_SVM=1 there); run directly on such a machine they skip with the measured rate.
Ctrl-A x and SIGTERM also have a soft column (--accel soft: kapsel's own CPU, no /dev/kvm), as
the virtio test has; the bzImage and PVH boots on the soft CPU are test_vm_soft.py's and the
virtio test's, and the panic test has none (a third soft boot to userspace, minutes on ASan)."""
import glob
import lzma
import os
import pty
import re
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import termios
import time

import pytest

from conftest import KAPSEL, REPO

# The project's one newc writer and module resolver, the nested runner's (tested below).
sys.path.insert(0, os.path.join(REPO, "scripts", "nested"))
import mkinitramfs  # noqa: E402
from mkinitramfs import cpio_newc  # noqa: E402
from test_vm import MULTIBOOT, PASS  # noqa: E402

# Hardware virtualization runs the loop at > 1000 M instructions/s; the emulating CI KVM at
# ~1.5 M/s. Below this, booting Linux is hopeless within a test's time.
MIN_MIPS = 200
MARKER = "KAPSEL-LINUX-BOOTED"
# console on the UART; reboot=k: a reboot resets through the i8042 (kapsel then exits).
CMDLINE = "console=ttyS0 reboot=k panic=-1 rdinit=/init"

# The VM test matrix's two columns for a Linux-guest test: KVM, and kapsel's soft CPU
# (--accel soft), which needs no /dev/kvm and runs directly on every machine.
ACCELS = [pytest.param("kvm", marks=pytest.mark.kvm), "soft"]


def run_guest(cmd, timeout, **kw):
    """Run a Linux guest; on timeout, fail with the end of its console, which says where the
    boot stopped (a bare TimeoutExpired shows only the first bytes)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, **kw)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) \
            else (e.stdout or "")
        tail = "\n".join(out.splitlines()[-40:])
        pytest.fail(f"the guest did not finish within {timeout} s; its console ended:\n{tail}")


def guest_mips():
    """Times 2 * n instructions (dec; jnz) inside a guest with the get-time hypercall."""
    n = 2_000_000
    r = subprocess.run([KAPSEL, "vm", "run", "--kernel", MULTIBOOT, "--console", "stdio",
                        "--cmdline", f"test=loop n={n}"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == PASS, r.stdout + r.stderr
    ns = int(re.search(r"loop ns (\d+)", r.stdout).group(1))
    return 2 * n / ns * 1000  # million instructions per second


def need_linux_speed():
    """Skip unless this KVM can boot Linux: the nested runner's is real SVM; elsewhere the
    measured guest-loop rate decides."""
    if not os.path.exists("/dev/kvm"):
        pytest.skip("needs /dev/kvm")
    if os.environ.get("KAPSEL_NESTED_SVM") == "1":
        return
    mips = guest_mips()
    if mips < MIN_MIPS:
        pytest.skip(f"KVM here emulates guest instructions: measured {mips:.1f} M "
                    f"instructions/s in a guest loop (need >= {MIN_MIPS}; hardware "
                    f"virtualization runs > 1000); scripts/vm-tests.sh runs this test in "
                    f"nested SVM under QEMU TCG")
    if not os.path.exists("/bin/busybox"):
        pytest.skip("needs busybox-static (/bin/busybox)")


def need_accel(accel):
    """Skip unless a Linux guest can run on accel here. kvm: /dev/kvm at hardware speed (or
    the nested runner's SVM), as need_linux_speed. soft: anywhere, directly; not inside the
    nested runner's outer guest, where kapsel's CPU would itself run on QEMU TCG's (the host
    runs that column: scripts/test.sh)."""
    if accel == "kvm":
        need_linux_speed()
        return
    if os.environ.get("KAPSEL_NESTED_SVM") == "1":
        pytest.skip("the soft column runs on the host, not in nested SVM under QEMU TCG")
    if not os.path.exists("/bin/busybox"):
        pytest.skip("needs busybox-static (/bin/busybox)")


_KROOT = []


def kernel_root():
    """An unpacked linux-image-*-amd64 (boot/vmlinuz-*, lib/modules/*): KAPSEL_LINUX_ROOT,
    else KAPSEL_LINUX_DEB or the package apt names for linux-image-amd64 (apt-get download,
    never installed) unpacked once into KAPSEL_NESTED_CACHE, shared with scripts/vm-tests.sh."""
    if _KROOT:
        return _KROOT[0]
    root = os.environ.get("KAPSEL_LINUX_ROOT")
    if not root:
        cache = os.environ.get("KAPSEL_NESTED_CACHE", "/var/cache/kapsel-nested")
        os.makedirs(cache, exist_ok=True)
        deb = os.environ.get("KAPSEL_LINUX_DEB")
        if not deb:
            dep = subprocess.run(["apt-cache", "depends", "linux-image-amd64"],
                                 capture_output=True, text=True)
            m = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)", dep.stdout)
            if not m:
                pytest.fail("linux-image-amd64 not known to apt (run apt-get update, or set "
                            "KAPSEL_LINUX_DEB to a linux-image-*-amd64 .deb)")
            debs = sorted(glob.glob(os.path.join(cache, m.group(1) + "_*_amd64.deb")))
            if not debs:
                r = subprocess.run(["apt-get", "download", m.group(1)], cwd=cache,
                                   capture_output=True, text=True)
                debs = sorted(glob.glob(os.path.join(cache, m.group(1) + "_*_amd64.deb")))
                if r.returncode != 0 or not debs:
                    pytest.fail(f"apt-get download {m.group(1)} failed: "
                                f"{r.stderr.strip()[-300:]}")
            deb = debs[-1]
        root = os.path.join(cache, os.path.basename(deb)[:-len(".deb")])
        if not os.path.exists(os.path.join(root, ".unpacked")):
            shutil.rmtree(root, ignore_errors=True)
            subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
            open(os.path.join(root, ".unpacked"), "w").close()
    _KROOT.append(root)
    return root


def fetch_kernel():
    """The bzImage (vmlinuz) of kernel_root()."""
    found = glob.glob(os.path.join(kernel_root(), "boot", "vmlinuz-*"))
    assert found, f"{kernel_root()}: no boot/vmlinuz-*"
    return found[0]


def extract_vmlinux(bzimage, out):
    """The ELF vmlinux inside a bzImage (boot protocol 2.08+: payload_offset/_length at
    0x248; Debian compresses it with xz). Its XEN_ELFNOTE_PHYS32_ENTRY makes it PVH-bootable."""
    data = open(bzimage, "rb").read()
    setup = (data[0x1f1] or 4) + 1
    off, length = struct.unpack_from("<II", data, 0x248)
    payload = data[setup * 512 + off:setup * 512 + off + length]
    assert payload[:6] == b"\xfd7zXZ\0", "payload is not xz: only Debian's xz kernels handled"
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    assert elf[:4] == b"\x7fELF"
    with open(out, "wb") as f:
        f.write(elf)
    return str(out)


def kernel_for(accel, tmp_path):
    """What a test's column boots: the bzImage under KVM; on the soft CPU the same kernel's
    vmlinux through PVH, which skips the bzImage's xz decompressor (on the soft CPU that alone
    takes 40 s of a 110 s boot on the release build; test_vm_soft.py's boot tests run it)."""
    if accel == "soft":
        return extract_vmlinux(fetch_kernel(), tmp_path / "vmlinux")
    return fetch_kernel()


def make_initramfs(path, script, modules=(), files=()):
    """busybox-static, the modules named (with what they depend on, insmod'ed in order) and an
    /init that mounts /proc, /sys, /dev and then runs script. files: (name, mode, bytes)."""
    try:
        mods = mkinitramfs.modules(kernel_root(), list(modules)) if modules else []
    except SystemExit as e:
        pytest.fail(str(e))
    init = ("#!/bin/busybox sh\nexport PATH=/bin\n/bin/busybox --install -s /bin\n"
            "mount -t proc proc /proc\nmount -t sysfs sysfs /sys\n"
            "mount -t devtmpfs dev /dev\n")
    init += "".join(f"insmod /lib/{name}.ko || echo 'insmod {name} failed'\n"
                    for name, _ in mods)
    init += script
    d = stat.S_IFDIR | 0o755
    entries = [(n, d, b"") for n in ("bin", "dev", "proc", "sys", "lib", "mnt", "tmp")]
    entries += [("bin/busybox", stat.S_IFREG | 0o755, open("/bin/busybox", "rb").read()),
                ("init", stat.S_IFREG | 0o755, init.encode())]
    entries += [(f"lib/{name}.ko", stat.S_IFREG | 0o644, data) for name, data in mods]
    entries += list(files)
    with open(path, "wb") as f:
        f.write(cpio_newc(entries))
    return str(path)


@pytest.mark.kvm
def test_linux_boots_to_initramfs(tmp_path):
    """bzImage on 4 vCPUs: all online, ACPI's MADT/FADT/DSDT read by Linux, the DSDT's
    devices bound (COM1, RTC, i8042, pvpanic), and poweroff through the FADT's S5."""
    need_linux_speed()
    kernel = fetch_kernel()
    script = f"""echo "CPUS $(cat /sys/devices/system/cpu/online)"
echo "TABLES $(ls /sys/firmware/acpi/tables | tr '\\n' ' ')"
echo "ACPIDEVS $(ls /sys/bus/acpi/devices | tr '\\n' ' ')"
echo "BOOTPROTO $(cat /sys/kernel/boot_params/version)"
echo {MARKER}
poweroff -f
"""
    initrd = make_initramfs(tmp_path / "initrd.cpio", script)
    r = run_guest([KAPSEL, "vm", "run", "--kernel", kernel, "--initrd", initrd,
                   "--mem", "512M", "--cpus", "4", "--cmdline", CMDLINE], 240)
    out = r.stdout
    assert MARKER in out, out[-3000:] + r.stderr
    assert r.returncode == 0, r.stderr
    assert "CPUS 0-3" in out, out[-3000:]
    # Entered through the bzImage's 64-bit boot protocol: boot_params carry its own header
    # version (PVH would show 2.12, filled in by Linux).
    version = struct.unpack_from("<H", open(kernel, "rb").read(), 0x206)[0]
    assert f"BOOTPROTO 0x{version:04x}" in out, out[-3000:]
    tables = re.search(r"TABLES (.*)", out).group(1).split()
    for t in ("APIC", "FACP", "DSDT"):
        assert t in tables, tables
    devs = re.search(r"ACPIDEVS (.*)", out).group(1)
    for hid in ("PNP0501", "PNP0B00", "PNP0303", "QEMU0001", "QEMU0002"):
        assert hid + ":" in devs, devs
    assert "unclaimed" not in r.stderr and "warning" not in r.stderr, r.stderr


@pytest.mark.parametrize("accel", ACCELS)
def test_linux_pvh_boot(tmp_path, accel):
    """The same kernel's vmlinux (an ELF with the PVH entry note) entered through PVH on 2
    vCPUs: Linux fills boot_params itself from hvm_start_info (version 2.12)."""
    need_accel(accel)
    vmlinux = extract_vmlinux(fetch_kernel(), tmp_path / "vmlinux")
    script = f"""echo "CPUS $(cat /sys/devices/system/cpu/online)"
echo "BOOTPROTO $(cat /sys/kernel/boot_params/version)"
echo {MARKER}
poweroff -f
"""
    initrd = make_initramfs(tmp_path / "initrd.cpio", script)
    r = run_guest([KAPSEL, "vm", "run", "--accel", accel, "--kernel", vmlinux, "--initrd",
                   initrd, "--mem", "512M", "--cpus", "2", "--cmdline", CMDLINE], 240)
    assert MARKER in r.stdout, r.stdout[-3000:] + r.stderr
    assert r.returncode == 0, r.stderr
    assert "CPUS 0-1" in r.stdout
    # arch/x86/platform/pvh/enlighten.c: init_pvh_bootparams sets version 2.12 (0x020c).
    assert "BOOTPROTO 0x020c" in r.stdout, r.stdout[-2000:]


def spin_init(tmp_path, modules=(), script="echo KAPSEL-GUEST-READY\nwhile :; do sleep 1; done\n"):
    return make_initramfs(tmp_path / "initrd.cpio", script, modules)


def wait_for_output(fd, proc, marker, timeout):
    """Reads fd until marker appears; returns what was read."""
    buf = b""
    end = time.monotonic() + timeout
    while marker.encode() not in buf:
        left = end - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            tail = buf.decode(errors="replace")[-3000:]
            pytest.fail(f"no {marker!r} from the guest within {timeout} s "
                        f"(kapsel {'exited ' + str(proc.returncode) if proc.poll() is not None else 'running'}); "
                        f"console:\n{tail}")
        ready, _, _ = select.select([fd], [], [], min(left, 1))
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            buf += chunk
    return buf


# Where the soft column of the lifecycle tests acts: the kernel's first console line, seconds
# into a soft boot (PVH: kernel_for), with the kernel running but without the minutes a soft
# boot to userspace costs on the ASan build. The kvm column waits for init.
RUNNING = {"kvm": ("KAPSEL-GUEST-READY", 240), "soft": ("Linux version", 120)}


@pytest.mark.parametrize("accel", ACCELS)
def test_linux_ctrl_a_x_quits(tmp_path, accel):
    """On a terminal, Ctrl-A x ends a running Linux guest: kapsel exits 0 at once and leaves
    the terminal's modes as it found them."""
    need_accel(accel)
    initrd = spin_init(tmp_path)
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    p = subprocess.Popen([KAPSEL, "vm", "run", "--accel", accel, "--kernel",
                          kernel_for(accel, tmp_path), "--initrd", initrd, "--mem", "256M",
                          "--cmdline", CMDLINE],
                         stdin=slave, stdout=slave, stderr=subprocess.PIPE)
    try:
        wait_for_output(master, p, *RUNNING[accel])
        os.write(master, b"\x01x")
        rc = p.wait(timeout=30)
        err = p.stderr.read().decode()
    finally:
        p.kill()
        p.wait()
    assert rc == 0, err
    assert "quit from the console" in err, err
    assert termios.tcgetattr(slave) == before, "the terminal's modes were not restored"
    os.close(master)
    os.close(slave)


@pytest.mark.parametrize("accel", ACCELS)
def test_linux_sigterm_stops_guest(tmp_path, accel):
    """SIGTERM to kapsel ends a running Linux guest: status 128 + 15 and one line saying so."""
    need_accel(accel)
    initrd = spin_init(tmp_path)
    master, slave = pty.openpty()
    p = subprocess.Popen([KAPSEL, "vm", "run", "--accel", accel, "--kernel",
                          kernel_for(accel, tmp_path), "--initrd", initrd, "--mem", "256M",
                          "--cpus", "2", "--cmdline", CMDLINE],
                         stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE)
    try:
        wait_for_output(master, p, *RUNNING[accel])
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=30)
        err = p.stderr.read().decode()
    finally:
        p.kill()
        p.wait()
        os.close(master)
        os.close(slave)
    assert rc == 128 + signal.SIGTERM, err
    assert "stopped by signal 15" in err, err


@pytest.mark.parametrize("accel", ACCELS)
def test_linux_panic_is_a_clear_exit(tmp_path, accel):
    """A guest kernel panic (sysrq c) ends the VM through pvpanic: status 1, one line naming
    the panic, the panic's own message on the console."""
    need_accel(accel)
    initrd = make_initramfs(tmp_path / "initrd.cpio",
                            "echo c >/proc/sysrq-trigger\necho still-running\n",
                            modules=["pvpanic_mmio"])
    r = run_guest([KAPSEL, "vm", "run", "--accel", accel, "--kernel",
                   kernel_for(accel, tmp_path), "--initrd", initrd, "--mem", "256M",
                   "--cmdline", CMDLINE], 240)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr
    assert r.stderr.strip() == "kapsel: vm: the guest kernel panicked (pvpanic); " \
        "its console says why", r.stderr
    assert "Kernel panic - not syncing" in r.stdout, r.stdout[-3000:]
    assert "still-running" not in r.stdout


def test_cpio_writer_roundtrip(tmp_path):
    """The initramfs writer produces what cpio(1) reads (runs everywhere)."""
    if not shutil.which("cpio"):
        pytest.skip("needs cpio")
    data = cpio_newc([("a", stat.S_IFREG | 0o644, b"hello")])
    r = subprocess.run(["cpio", "-t"], input=data, capture_output=True)
    assert r.stdout.decode().split() == ["a"]
