"""VM fidelity (issue 17): what real guests expect of the machine. The freestanding test
kernels of tests/guests/ check each item from the inside; PASS is exit status 85."""
import os
import select
import signal
import subprocess
import time

import pytest

from conftest import KAPSEL

BUILD = os.path.dirname(os.path.dirname(os.path.dirname(KAPSEL)))
GUESTS = os.environ.get("KAPSEL_GUESTS", os.path.join(BUILD, "tests", "guests"))
MULTIBOOT = os.path.join(GUESTS, "multiboot.elf")
MULTIBOOT_LOW = os.path.join(GUESTS, "multiboot-low.elf")
PASS = 85  # (0x2a << 1) | 1

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]


def vm(*args, timeout=60):
    return subprocess.run([KAPSEL, "vm", "run", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


# ---- TSC-deadline timer (CPUID.1:ECX[24], KVM_CAP_TSC_DEADLINE_TIMER) ----

@pytest.mark.parametrize("feats", [[], ["--cpu-features", "+tsc-deadline"]])
def test_tsc_deadline_offered_and_fires(feats):
    r = vm("--kernel", MULTIBOOT, "--cmdline", "test=tscdl", *feats)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "cpuid: tsc-deadline 1 x2apic 1" in r.stdout
    assert "tsc-deadline: interrupt ok" in r.stdout


def test_tsc_deadline_can_be_masked():
    r = vm("--kernel", MULTIBOOT, "--cmdline", "test=tscdl", "--cpu-features", "-tsc-deadline")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "cpuid: tsc-deadline 0 x2apic 1" in r.stdout
    assert "interrupt ok" not in r.stdout


# ---- kernels below 1 MiB: boot data moves out of the way; only true overlaps are refused ----

def test_multiboot_kernel_below_1mib_boots(tmp_path):
    """multiboot-low.elf loads at 0x8000 (over the usual boot info, memory map and page
    tables at 0x7000-0xefff, and the command line at 0x20000); before, it was refused."""
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"KAPSEL-INITRD" + bytes(64))
    r = vm("--kernel", MULTIBOOT_LOW, "--mem", "64M", "--initrd", str(initrd),
           "--cmdline", f"test=boot mem=64 initrd={initrd.stat().st_size}")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "initrd ok" in r.stdout and "boot ok" in r.stdout


def test_multiboot_kernel_below_1mib_takes_interrupts():
    """The relocated GDT is the one the guest's interrupt gates use (selector 0x10)."""
    r = vm("--kernel", MULTIBOOT_LOW, "--cmdline", "test=timer")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "timer: lapic ok" in r.stdout


def aout_kernel(path, load, bss_end):
    """A multiboot a.out-kludge kernel (spec 3.1.3): the header, loaded at `load`, its bss to
    `bss_end`. It never runs: the load is refused first."""
    import struct
    magic, flags = 0x1BADB002, 0x00010000
    hdr = struct.pack("<8I", magic, flags, (-(magic + flags)) & 0xffffffff,
                      load, load, 0, bss_end, load)
    path.write_bytes(hdr + b"\xf4" * 32)
    return str(path)


def test_kernel_over_acpi_area_is_refused(tmp_path):
    k = aout_kernel(tmp_path / "k", 0x90000, 0xe8000)
    r = vm("--kernel", k)
    assert r.returncode != 0 and r.returncode != PASS
    msg = [l for l in r.stderr.splitlines() if "overlaps" in l]
    assert msg, r.stderr
    assert "[0x90000, 0xe8000)" in msg[0] and "[0x9fc00, 0x100000)" in msg[0], msg[0]


def test_kernel_covering_low_memory_is_refused(tmp_path):
    k = aout_kernel(tmp_path / "k", 0x1000, 0x9f000)
    r = vm("--kernel", k)
    assert r.returncode != 0 and r.returncode != PASS
    msg = [l for l in r.stderr.splitlines() if "no room" in l]
    assert msg, r.stderr
    assert "[0x1000, 0x9f000)" in msg[0] and "[0x500, 0xf000)" in msg[0], msg[0]


# ---- prompt exit on SIGTERM/SIGINT whatever the guest does ----

def time_to_exit(test, sig, wait_for=None, settle=1.5, cpus="2"):
    """Starts a guest, optionally waits for a line of its output, lets it run `settle` seconds,
    sends sig and returns (seconds from the signal to the exit, returncode, stderr)."""
    p = subprocess.Popen([KAPSEL, "vm", "run", "--kernel", MULTIBOOT, "--cmdline", f"test={test}",
                          "--cpus", cpus], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    try:
        out = b""
        deadline = time.time() + 30
        while wait_for and wait_for not in out and time.time() < deadline:
            if select.select([p.stdout], [], [], 0.5)[0]:
                out += os.read(p.stdout.fileno(), 4096)
        time.sleep(settle)
        assert p.poll() is None, p.stderr.read()
        t0 = time.monotonic()
        p.send_signal(sig)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"kapsel still running 10 s after signal {int(sig)} ({test} guest)")
        return time.monotonic() - t0, p.returncode, p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_busy_guest_exits_promptly(sig):
    dt, rc, err = time_to_exit("spin", sig, wait_for=b"spinning", cpus="4")
    assert rc == 128 + sig, err
    assert dt < 1.0, f"{dt:.3f} s from signal {int(sig)} to exit"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_guest_blocked_on_unread_console_exits_promptly(sig):
    """The guest writes its serial console into a pipe nobody reads: the vCPU waits for room
    in the pipe. Before, that write blocked for good and the signal never ended kapsel."""
    dt, rc, err = time_to_exit("flood", sig, settle=2.0)
    assert rc == 128 + sig, err
    assert f"stopped by signal {int(sig)}" in err
    assert dt < 1.0, f"{dt:.3f} s from signal {int(sig)} to exit"
