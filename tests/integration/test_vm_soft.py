"""kapsel vm run --accel soft: the freestanding test kernels of tests/guests/ on kapsel's own x86
CPU (src/libkapsel/vmm/soft/). No /dev/kvm is needed, so nothing here skips without one: these
tests run on every machine (scripts/test.sh runs them directly even where the other VM tests go
to nested SVM). What the soft CPU runs today: docs/vm.md, Accelerators."""
import fractions
import json
import math
import os
import socket
import struct
import subprocess
import time
import uuid

import pytest

from conftest import KAPSEL

BUILD = os.path.dirname(os.path.dirname(os.path.dirname(KAPSEL)))
GUESTS = os.environ.get("KAPSEL_GUESTS", os.path.join(BUILD, "tests", "guests"))
MULTIBOOT = os.path.join(GUESTS, "multiboot.elf")
MULTIBOOT_LOW = os.path.join(GUESTS, "multiboot-low.elf")
PVH = os.path.join(GUESTS, "pvh.elf")
BZIMAGE = os.path.join(GUESTS, "bzimage.bin")
PASS = 85  # (0x2a << 1) | 1


@pytest.fixture(scope="module", autouse=True)
def guests(kapsel):
    for g in (MULTIBOOT, MULTIBOOT_LOW, PVH, BZIMAGE):
        if not os.path.exists(g):
            pytest.fail(f"test kernel {g} missing: build with meson/ninja first")


def vm(*args, stdin=subprocess.DEVNULL, timeout=60, debug=False):
    return subprocess.run([KAPSEL] + (["--debug"] if debug else []) + ["vm", "run", *args],
                          stdin=stdin, capture_output=True, text=True, timeout=timeout)


def soft(test, *args, **kw):
    return vm("--accel", "soft", "--kernel", MULTIBOOT, "--cmdline", f"test={test}", *args,
              **kw)


def one_line_error(r, text):
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], r.stderr


@pytest.fixture
def initrd(tmp_path):
    p = tmp_path / "initrd.img"
    data = b"KAPSEL-INITRD" + bytes(range(256)) * 40
    p.write_bytes(data)
    return str(p), len(data)


# ---- the milestone: the test kernels' own checks pass on the soft CPU ----

@pytest.mark.parametrize("mem", [64, 5120])
def test_multiboot_boot_info(initrd, mem):
    path, size = initrd
    r = vm("--accel", "soft", "--kernel", MULTIBOOT, "--mem", f"{mem}M", "--initrd", path,
           "--cmdline", f"test=boot mem={mem} initrd={size}", debug=True)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "initrd ok" in r.stdout and "loader: kapsel" in r.stdout
    assert "vm: accelerator soft" in r.stderr


@pytest.mark.parametrize("mem", [96, 5120])
def test_bzimage_64bit_boot(initrd, mem):
    # The 64-bit boot protocol: long mode, 4-level identity paging, the LAPIC's version
    # register read through it, boot_params and the e820 map.
    path, size = initrd
    r = vm("--accel", "soft", "--kernel", BZIMAGE, "--mem", f"{mem}M", "--initrd", path,
           "--cmdline", f"mem={mem} initrd={size}")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "bzimage ok" in r.stdout and "initrd ok" in r.stdout


def test_syscall_sysret_64bit():
    # In the bzImage kernel (long mode): RDMSR/WRMSR of EFER, STAR, LSTAR and FMASK, SYSCALL
    # from CPL 0, SYSRET to a 64-bit CPL 3 routine (CS 0x3b), SYSCALL back. (This machine's
    # emulating KVM, nested PVM, does not run it: PVM takes SYSCALL for itself.)
    r = vm("--accel", "soft", "--kernel", BZIMAGE, "--mem", "96M", "--cmdline",
           "mem=96 syscall=1")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "syscall ok" in r.stdout


def test_rep_movs_stos_across_pages_and_overlapping():
    # In the bzImage kernel (long mode): REP MOVSB/MOVSQ/STOSQ across page ends, overlapping
    # forward copies against an element-by-element reference, the final RSI/RDI/RCX, and a
    # REP MOVSB over code that already ran (the soft CPU copies a page at a time).
    r = vm("--accel", "soft", "--kernel", BZIMAGE, "--mem", "96M", "--cmdline", "mem=96 rep=1")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "rep ok" in r.stdout


def test_multiboot_below_1mib():
    r = vm("--accel", "soft", "--kernel", MULTIBOOT_LOW, "--mem", "256M",
           "--cmdline", "test=boot mem=256")
    assert r.returncode == PASS, r.stdout + r.stderr


def test_pvh_boot(initrd):
    path, size = initrd
    r = vm("--accel", "soft", "--kernel", PVH, "--mem", "128M", "--initrd", path,
           "--cmdline", f"mem=128 initrd={size}")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "pvh ok" in r.stdout and "initrd ok" in r.stdout


@pytest.mark.parametrize("test,args,status", [
    ("unclaimed", [], PASS),
    ("rtc", [], PASS),
    ("cpuid", [], PASS),
    ("hypercall", [], 7),
    ("loop n=200000", [], PASS),
    ("fwcfg cpus=1 mem=256", ["--mem", "256M"], PASS),
    ("acpi", [], 0),
    ("acpifull", ["--acpi", "full"], 0),
    ("reset", [], 0),
])
def test_guest_checks_pass(test, args, status):
    r = soft(test, *args)
    assert r.returncode == status, r.stdout + r.stderr


def test_serial_echo():
    r = subprocess.run(
        [KAPSEL, "vm", "run", "--accel", "soft", "--kernel", MULTIBOOT, "--cmdline", "test=echo"],
        input="hello\nquit\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "echo: hello" in r.stdout


def test_pvpanic():
    r = soft("panic")
    assert r.returncode == 1
    assert "panicked (pvpanic)" in r.stderr


# ---- exact flags: the same answers as hardware ----

# test=alu's hash of results and SDM-defined flags, as hardware computes it (recorded under
# --accel kvm on an Intel host; the defined flags are architectural, so any x86 gives it).
ALU_HASH = "alu hash 3282715687 over 21720"


def test_alu_results_and_flags_match_hardware():
    r = soft("alu")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert ALU_HASH in r.stdout, r.stdout
    # Where KVM runs, compare with it directly as well (a differential check, not a constant).
    k = vm("--accel", "kvm", "--kernel", MULTIBOOT, "--cmdline", "test=alu")
    if k.returncode == PASS:
        assert ALU_HASH in k.stdout, k.stdout


# ---- interrupts: the soft path's 8259 pair and 8254 ----

def run_for(seconds, *args):
    """Runs kapsel for a while, then SIGTERM: (stdout, stderr, status)."""
    p = subprocess.Popen([KAPSEL, "vm", "run", *args], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        p.terminate()
        out, err = p.communicate(timeout=30)
    return out, err, p.returncode


def test_timer_interrupts_pit_then_lapic():
    # test=timer: the PIC initialised with vectors 0x20-0x2f, IRQ 0 alone unmasked, the PIT at
    # 100 Hz, through LINT0 in ExtINT mode; then the LAPIC timer, periodic at 1 ms. Five
    # interrupts of each reach the guest's IDT while it waits in "sti; hlt".
    r = soft("timer", timeout=30)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "timer: pit ok" in r.stdout and "timer: lapic ok" in r.stdout


def test_tsc_deadline_not_offered():
    # The baseline has no TSC-deadline timer and no x2APIC: the guest sees both bits clear.
    r = soft("tscdl")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "cpuid: tsc-deadline 0 x2apic 0" in r.stdout


def test_no_pit_means_no_timer_interrupts():
    out, err, status = run_for(1.5, "--accel", "soft", "--no-pit", "--kernel", MULTIBOOT,
                               "--cmdline", "test=timer")
    assert "multiboot guest: test=timer" in out and "pit ok" not in out, out + err
    assert status == 128 + 15, err


# ---- faults: the guest sees them, kapsel does not crash ----

def test_unknown_instruction_is_ud_logged_once():
    # UD2, then MOVBE twice: MOVBE is not in the soft CPU's CPUID, so it raises #UD in the
    # guest, which its IDT handles; kapsel warns once, not per instruction.
    r = soft("ud")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "ud: movbe twice" in r.stdout
    lines = [line for line in r.stderr.splitlines() if "not implemented" in line]
    assert len(lines) == 1, r.stderr
    assert "(bytes 0f 38 f0" in lines[0] and "#UD to the guest" in lines[0]


# ---- several vCPUs: one host thread each (docs/vm.md, Several vCPUs) ----

@pytest.mark.parametrize("cpus", [2, 4])
def test_smp_every_vcpu_checks_in(cpus):
    # INIT and two STARTUPs to all but self; each AP runs the real-mode trampoline, reads its
    # APIC id from CPUID and sets its bit with LOCK BTS, counts itself with LOCK INC.
    r = soft("smp", "--cpus", str(cpus))
    assert r.returncode == PASS, r.stdout + r.stderr
    mask = (1 << cpus) - 1
    assert f"smp: {cpus}/{cpus} cpus checked in, mask {mask:#x}" in r.stdout


@pytest.mark.parametrize("cpus", [2, 4])
def test_locked_counters_exact_across_vcpus(cpus):
    # 100000 increments per vCPU of each counter, all vCPUs at once: LOCK XADD, a LOCK
    # CMPXCHG loop, a plain increment under an XCHG spinlock, LOCK CMPXCHG8B (n/4) and LOCK ADD
    # on a counter that crosses a page (n/16, the split lock). Every total must be exact.
    n = 100000
    r = soft(f"smpcount n={n}", "--cpus", str(cpus), timeout=240)
    assert r.returncode == PASS, r.stdout + r.stderr
    t = cpus * n
    assert (f"smpcount: {cpus} cpus x {n}: xadd {t} cmpxchg {t} xchg-lock {t} "
            f"cmpxchg8b {cpus * (n // 4)} split {cpus * (n // 16)}") in r.stdout


@pytest.mark.parametrize("cpus,model", [(2, "flat"), (4, "flat"), (4, "cluster")])
def test_ipi_wakes_halted_vcpu(cpus, model):
    # The APs wait in "sti; hlt": a fixed IPI to APIC id 1 wakes that AP alone, a logical
    # (flat) one AP 2 alone, a lowest-priority one exactly one AP, the I/O APIC's pin 4 (the
    # UART) routed to APIC id 1 that AP alone, all-but-self every AP and not the sender; with
    # IF clear a fixed IPI stays pending and an NMI wakes AP 1. Cluster: the logical IPI goes
    # to cluster 2 member 0, which in the flat model would be every AP.
    r = soft(f"ipi model={model}", "--cpus", str(cpus))
    assert r.returncode == PASS, r.stdout + r.stderr
    assert ("ipi: fixed, logical, lowest priority, I/O APIC; all-but-self woke "
            f"{cpus - 1}/{cpus - 1} APs from hlt, nmi 1") in r.stdout


@pytest.mark.parametrize("cpus", [2, 4])
def test_cross_modified_code_seen_by_other_vcpu(cpus):
    # AP 1 keeps a function translated; the BSP rewrites its immediate, then tells the AP,
    # which must run the new bytes (its blocks from that page dropped at a block boundary).
    r = soft("xsmc n=200", "--cpus", str(cpus))
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "xsmc: 200 rounds, AP 1 ran the new code each time" in r.stdout


def test_sipi_to_missing_apic_id_is_dropped():
    # Then: a STARTUP alone to a running AP is ignored; INIT and STARTUP restart it.
    r = soft("sipibad", "--cpus", "2", debug=True)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert ("sipibad: 0 started by a SIPI to APIC id 0x20, 1 by one to id 1, 0 by a SIPI "
            "without INIT, 1 after INIT again") in r.stdout
    assert r.stderr.count("vm: soft vCPU 1: STARTUP at 0x10000") == 2, r.stderr


def test_lock_where_it_may_not_be_is_ud():
    # LOCK with a register destination, on MOV and on XCHG between registers: #UD (as the
    # KVM column shows hardware doing); LOCK INC on memory adds.
    r = soft("lockud")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "lockud: 3 #UD, v 8" in r.stdout


def test_cpus_above_the_limit_one_line():
    r = soft("pass", "--cpus", "65")
    one_line_error(r, "--cpus 65: kapsel supports at most 64 vCPUs")


def test_self_modifying_code():
    # A routine rewritten after it ran, and an instruction rewritten by the one before it
    # within the same translated block: both must run their new bytes.
    r = soft("smc")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "smc ok" in r.stdout


def test_paging_faults_and_accessed_dirty_bits():
    # 2-level paging with CR0.WP and a PSE page: #PF error codes and CR2 through the guest's
    # IDT, A on a read, D on a write. (This machine's emulating KVM cannot run the test: it
    # reports a triple fault at the MOV to CR0 that turns paging on.)
    r = soft("paging")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "paging ok" in r.stdout


def test_tlb_flushes_and_dirty_bits():
    # The software TLB: INVLPG (of a 4 KiB page, and of a 4 MiB page at another 4 KiB of it),
    # CR3 and CR4 writes show remapped pages; a write-protected page faults after INVLPG; D is
    # set again by the first write after the guest cleared it; a page made present needs no
    # flush. (Like test=paging, the emulating KVM here cannot run it.)
    r = soft("tlb")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "tlb ok" in r.stdout


# The sum QEMU TCG computes for bench/soft-mips's paged workload, 3 rounds (tests/guests/mips.h).
MIX3_SUM = 2919096468


def test_paged_memory_workload_matches_qemu():
    # 4 KiB paging over 0-64 MiB, 3 x (4 MiB fill + checksum + a page-strided read-modify-write):
    # every access goes through the TLB or fills it; the sum is QEMU TCG's.
    r = vm("--accel", "soft", "--kernel", MULTIBOOT, "--mem", "128M",
           "--cmdline", "test=mips kind=mix n=3")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert f"mips insns 37770240 sum {MIX3_SUM}" in r.stdout, r.stdout


def test_tlb_never_caches_mmio():
    # The same workload with 16 MiB of RAM: its buffer (16-20 MiB) is no RAM, so every store
    # goes to the MMIO bus (unclaimed: dropped) and every load reads all ones. Had the TLB
    # cached those pages as memory, the checksum would see the stored values.
    r = vm("--accel", "soft", "--kernel", MULTIBOOT, "--mem", "16M",
           "--cmdline", "test=mips kind=mix n=1")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "mips insns 12590080 sum 4294967295" in r.stdout, r.stdout


@pytest.fixture(scope="module")
def segs_out(kapsel):
    r = soft("segs")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "segs ok" in r.stdout
    return r


def test_segment_privilege_checks(segs_out):
    # At CPL 0: a far JMP to a DPL 3 code segment and MOV SS of a DPL 3 data segment are #GP
    # with the selector as error code; MOV DS of that data segment is allowed (as on KVM).
    # LFS/LGS/LES/LDS/LSS load offset and selector; LSS of the null selector or of a DPL 3
    # stack is #GP and leaves ESP alone; LFS with a register operand is #UD (the guest's
    # CHECKs, before "segs ok").
    assert "not implemented" not in segs_out.stderr, segs_out.stderr


# test=segs's GDT (multiboot.c, test_segs) above the loader's six entries: 0x30 DPL 3 code,
# 0x38 DPL 3 data (accessed: the guest loaded DS with it), 0x40 a 32-bit TSS, 0x48 an
# interrupt gate, 0x50 DPL 0 data with a byte-granular limit; 0x58 is past the GDT's limit.
SEGS_GDT = {0x30: 0x00cffa000000ffff, 0x38: 0x00cff3000000ffff, 0x40: 0x0000890000000067,
            0x48: 0x00008e0000100000, 0x50: 0x0000920000001234}


def lar_lsl(sel, cpl=0):
    """(rights, limit) as SDM vol. 2 LAR/LSL give them in 32-bit protected mode; None when
    ZF is clear."""
    desc = SEGS_GDT.get(sel & ~7) if sel & ~3 else None
    if desc is None:
        return None, None
    typ, s, dpl = desc >> 40 & 0xf, desc >> 44 & 1, desc >> 45 & 3
    conforming = s and typ & 0xc == 0xc
    if not conforming and (cpl > dpl or sel & 3 > dpl):
        return None, None
    lar_ok = s or typ in (1, 2, 3, 4, 5, 9, 0xb, 0xc)
    lsl_ok = s or typ in (1, 2, 3, 9, 0xb)
    limit = desc & 0xffff | desc >> 32 & 0xf0000
    if desc >> 55 & 1:
        limit = limit << 12 | 0xfff
    return (desc >> 32 & 0x00f0ff00 if lar_ok else None), (limit if lsl_ok else None)


def test_lar_lsl(segs_out):
    lines = [line.split()[2:] for line in segs_out.stdout.splitlines()
             if line.startswith("segs lar ")]
    assert len(lines) == 8, segs_out.stdout
    untouched = 0xdeadbeef
    for sel, ar, zl, ar16, lim, zs in ([int(v, 16) for v in line] for line in lines):
        rights, limit = lar_lsl(sel)
        if rights is None:
            assert (ar, zl, ar16) == (untouched, 0, untouched), hex(sel)
        else:
            assert (ar, zl, ar16) == (rights, 1, untouched & ~0xffff | rights & 0xff00), hex(sel)
        if limit is None:
            assert (lim, zs) == (untouched, 0), hex(sel)
        else:
            assert (lim, zs) == (limit, 1), hex(sel)


def test_triple_fault_reported_as_under_kvm():
    # #DE with an empty IDT: #GP delivering it, #DF, then shutdown. The message is the KVM
    # path's (vcpu.c), with where it happened.
    r = soft("triple")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "guest fault on vCPU 0: triple fault (shutdown) at RIP 0x" in lines[0]
    assert "(instruction bytes f7 f1" in lines[0]  # div %ecx


@pytest.mark.parametrize("seed", range(1, 9))
def test_random_guest_code_never_crashes_kapsel(seed):
    # test=chaos runs random code pieces, each exception resuming at the next. The guest may
    # finish, triple-fault (random stores reach its IDT and GDT) or loop forever (a random
    # backward jump; the soft path has no timer interrupt to break it): all fine. kapsel must
    # not crash, trip a sanitizer, or ignore SIGTERM.
    p = subprocess.Popen([KAPSEL, "vm", "run", "--accel", "soft", "--mem", "2M", "--kernel",
                          MULTIBOOT, "--cmdline", f"test=chaos seed={seed} n=300"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        p.terminate()
        out, err = p.communicate(timeout=30)
        assert p.returncode == 128 + 15 and "stopped by signal 15" in err, err
    assert p.returncode > 0, (p.returncode, err)
    assert "Sanitizer" not in err and "runtime error" not in err, err
    if p.returncode == PASS:
        assert "chaos done" in out
    elif "triple fault" in err:
        assert "guest fault on vCPU 0: triple fault (shutdown) at RIP 0x" in err


def sigterm_clean(p):
    out, err = p.communicate(timeout=60)
    assert "Sanitizer" not in err and "runtime error" not in err, err
    assert p.returncode == 128 + 15 and "stopped by signal 15" in err, (p.returncode, err)


@pytest.mark.parametrize("transport", ["mmio", "pci"])
def test_sigterm_while_a_device_interrupts(transport):
    # test=rngloop keeps virtio-rng busy: its thread completes a request and signals the
    # irqfd, whose poller raises the I/O APIC pin or sends the MSI to the local APIC. SIGTERM
    # at different points of that must end kapsel cleanly every time.
    pci = ["--transport", "pci", "--cmdline", "test=rngloop pci=1"] if transport == "pci" \
        else ["--transport", "mmio", "--cmdline", "test=rngloop"]
    for i in range(8):
        p = subprocess.Popen([KAPSEL, "vm", "run", "--accel", "soft", "--kernel", MULTIBOOT,
                              "--rng", *pci], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()  # the guest's banner
            while line and not line.startswith("rngloop "):
                line = p.stdout.readline()
            assert line.startswith("rngloop "), "the guest never reported entropy"
            time.sleep(0.013 * i)
            p.terminate()
            sigterm_clean(p)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_sigterm_while_the_host_floods_vsock(tmp_path):
    # Device work the guest did not ask for: the host streams small packets to test=vsockecho
    # before and during the teardown, so the vsock device thread is reading its socket,
    # filling the guest's receive buffer and signalling its irqfd when SIGTERM stops the VM.
    # kapsel must end with the signal's status and no sanitizer report. (It does not catch a
    # teardown that frees the local APICs before the irqfd thread: once the vCPUs stop, the
    # guest posts no more buffers and the level line stays asserted, so nothing reaches an
    # APIC late; docs/vm.md, Teardown, says why the order is right.)
    for i in range(6):
        path = str(tmp_path / f"v{i}.sock")
        p = subprocess.Popen([KAPSEL, "vm", "run", "--accel", "soft", "--kernel", MULTIBOOT,
                              "--transport", "mmio", "--cmdline", "test=vsockecho",
                              "--vsock", f"cid=3,socket={path}"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            while line and "vsockecho: ready" not in line:
                line = p.stdout.readline()
            assert "vsockecho: ready" in line, "the guest never listened"
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(path)
            s.sendall(b"CONNECT 1234\n")
            assert s.makefile("rb").readline().startswith(b"OK ")
            s.setblocking(False)
            # Small packets, a few ms apart (the guest's buffers are small), before and
            # during the teardown.
            deadline = time.monotonic() + 0.1 + 0.03 * i
            stop_at = None
            while time.monotonic() < (stop_at or deadline + 1):
                if stop_at is None and time.monotonic() >= deadline:
                    p.terminate()
                    stop_at = time.monotonic() + 0.3
                try:
                    s.send(b"flood\n")
                    s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    break  # kapsel has gone
                time.sleep(0.002)
            s.close()
            sigterm_clean(p)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_triple_fault_with_paging_shows_the_bytes():
    # The message reads the instruction through the guest's page tables, as KVM_TRANSLATE
    # does on the KVM path.
    r = soft("paging triple=1")
    assert r.returncode == 1
    assert "triple fault (shutdown) at RIP 0x" in r.stderr
    assert "(instruction bytes f7 f1" in r.stderr, r.stderr


def test_xgetbv_without_osxsave_is_ud():
    # CR4.OSXSAVE is clear, so XGETBV is #UD on any CPU; with no IDT that is a triple fault.
    r = soft("emufail")
    assert r.returncode == 1
    assert "triple fault (shutdown)" in r.stderr and "instruction bytes 0f 01 d0" in r.stderr


# ---- x87, MMX, SSE: test=fpu prints raw bit patterns; each is worked out here on its own ----

def f32(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def f32v(u):
    return struct.unpack("<f", struct.pack("<I", u))[0]


def f64(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def rne(m, drop):
    """m >> drop, rounded to nearest, ties to even."""
    q, r = m >> drop, m & ((1 << drop) - 1)
    half = 1 << (drop - 1)
    return q + (r > half or (r == half and q & 1))


def words(b):
    return [struct.unpack_from("<I", b, i)[0] for i in range(0, 16, 4)]


@pytest.fixture(scope="module")
def fpu_out(kapsel):
    r = soft("fpu", timeout=120)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "fpu ok" in r.stdout
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("fpu ") and line != "fpu ok":
            name, *vals = line.split()[1:]
            out[name] = [int(v, 16) for v in vals]
    return out


def test_cpuid_reports_the_x86_64_v2_baseline(fpu_out):
    ecx, edx = fpu_out["cpuid1"]
    for bit in (0, 23, 24, 25, 26):  # FPU MMX FXSR SSE SSE2
        assert edx >> bit & 1, (bit, hex(edx))
    for bit in (0, 9, 13, 19, 20, 23):  # SSE3 SSSE3 CX16 SSE4.1 SSE4.2 POPCNT
        assert ecx >> bit & 1, (bit, hex(ecx))
    for bit in (22, 26, 27, 28):  # no MOVBE, XSAVE, OSXSAVE, AVX
        assert not ecx >> bit & 1, (bit, hex(ecx))


def test_nm_and_ud_follow_cr0_and_cr4(fpu_out):
    # SSE without CR4.OSFXSR: #UD; with it: runs. CR0.EM: x87 #NM, SSE #UD. CR0.TS: x87,
    # SSE and (with MP) FWAIT are #NM; after CLTS FWAIT runs.
    assert fpu_out["traps"] == [6, 0, 7, 6, 7, 7, 7, 0]


def test_x87_results(fpu_out):
    assert fpu_out["init"] == [0x037f, 0]
    assert fpu_out["div-m32"] == [f32(7 / 2)]
    # sqrt(2) to 64 significant bits (FSQRT in extended precision), then to 53 (FSTP m64).
    m = math.isqrt(2 << 126)
    m = m + (2 << 126 > m * m + m)  # round to nearest (an irrational root never ties)
    lo, hi, mlo, mhi, exp = fpu_out["sqrt2"]
    assert (mhi << 32 | mlo) == m and exp == 0x3fff
    d = rne(m, 11)
    assert (hi << 32 | lo) == (0x3ff << 52) | (d & ((1 << 52) - 1))
    # FIST 2.5 nearest-even and rounding up; FISTTP -2.75 truncates.
    assert fpu_out["fist"] == [2, 3, (-2) & 0xffffffff]
    # FCOMI 2 vs 1 (all clear), 1 vs 2 (CF), FUCOMIP with a NaN (ZF PF CF).
    assert fpu_out["fcomi"] == [0, 0x01, 0x45]
    # A ninth push: masked stack overflow: IE, SF, C1; TOP 7.
    assert fpu_out["overflow"] == [(7 << 11) | 0x200 | 0x40 | 0x01]


def test_x87_unmasked_exception_is_mf_at_next_wait(fpu_out):
    no_trap, at_wait, fsw = fpu_out["mf"]
    assert no_trap == 0 and at_wait == 16
    # ZE, ES, B; TOP 6: 1 and 0 still on the stack (nothing popped). C0-C3 left out.
    assert fsw & ~0x4700 == 0x8000 | (6 << 11) | 0x80 | 0x04


def test_sse_float_results(fpu_out):
    a = [1.5, -2.0, 3.25, 1e10]
    b = [0.5, 0.25, -1.0, 3.0]
    a32 = [f32v(f32(x)) for x in a]
    assert fpu_out["mxcsr"] == [0x1f80]
    assert fpu_out["addps"] == [f32(x + y) for x, y in zip(a32, b)]
    assert fpu_out["mulps"] == [f32(x * y) for x, y in zip(a32, b)]
    assert fpu_out["divss"] == [f32(fractions.Fraction(1, 3))]
    s = f64(math.sqrt(2.0))  # IEEE sqrt is correctly rounded on the host too
    assert fpu_out["sqrtsd"] == [s & 0xffffffff, s >> 32]
    m7 = f64(-7.0)
    assert fpu_out["cvt"] == [m7 & 0xffffffff, m7 >> 32, (-2) & 0xffffffff, 2, 4, f32(0.1)]
    # UCOMISD 1 vs NaN: unordered (ZF PF CF); COMISD 2 vs 1: greater; 2 vs 2: ZF.
    assert fpu_out["comisd"] == [0x45, 0, 0x40]


def test_sse_exceptions_xm_ud_gp(fpu_out):
    inf, mx, xm, kept, mx2, ud, gp = fpu_out["xm"]
    assert inf == f32(math.inf)
    # ZE from 1/0, PE from the inexact conversions before it (sticky), masks as reset.
    assert mx == 0x1f80 | 0x20 | 0x04
    # Unmasked ZE: #XM, the destination keeps 1.0; without CR4.OSXMMEXCPT: #UD. LDMXCSR of a
    # reserved bit: #GP.
    assert (xm, kept, ud, gp) == (19, f32(1.0), 6, 13)
    assert mx2 == 0x1d80 | 0x04


def test_sse_integer_and_string_results(fpu_out):
    hello = b"hello world, hi!"
    bs = bytes(range(0, 256, 0x11))
    assert fpu_out["pcmpeqb"] == [sum(1 << i for i, c in enumerate(hello) if c == ord("l"))]
    assert fpu_out["pminub"] == words(bytes(min(x, y) for x, y in zip(hello, bs)))
    sd = words(bs)
    assert fpu_out["pshufd"] == [sd[3], sd[2], sd[1], sd[0]]
    assert fpu_out["punpcklbw"] == words(bytes(v for p in zip(hello[:8], bs[:8]) for v in p))
    assert fpu_out["psrldq"] == words(hello[3:] + bytes(3))
    assert fpu_out["pslldq"] == words(bytes(5) + hello[:11])
    assert fpu_out["palignr"] == words((bs + hello)[5:21])
    assert fpu_out["pxor"] == words(bytes(x ^ y for x, y in zip(hello, bs)))
    ha, hb = words(hello), words(bs)
    assert fpu_out["paddd"] == [(x + y) & 0xffffffff for x, y in zip(ha, hb)]
    assert fpu_out["pshufb"] == words(bytes(0 if i & 0x80 else hello[i & 15] for i in bs))
    # PCMPISTRI: index and CF ZF SF OF for equal-any {l,o} in "hello world" (2), equal-ordered
    # "wor" (6), ranges a-z in "ABcD" (2); all with a match, both strings shorter than 16.
    cf_zf_sf = 0x01 | 0x40 | 0x80
    assert fpu_out["pcmpistri"] == [2, cf_zf_sf, 6, cf_zf_sf, 2, cf_zf_sf]


def r32(x):
    """x rounded to single precision, and whether that was inexact."""
    y = f32v(f32(x))
    return y, y != x


def exact_sum(a, b):
    # The operands are singles (or doubles of nearby magnitude): the double sum is exact, so
    # rounding it once to single is the single-precision sum.
    assert fractions.Fraction(a) + fractions.Fraction(b) == fractions.Fraction(a + b)
    return a + b


def dpps(a, b, imm):
    """DPPS (SDM vol. 2): masked products, summed pairwise, broadcast; each step rounded."""
    pe = False
    t = []
    for i in range(4):
        if imm >> (4 + i) & 1:
            p, inexact = r32(a[i] * b[i])  # a product of singles is exact in a double
            pe |= inexact
            t.append(p)
        else:
            t.append(0.0)
    s1, e1 = r32(exact_sum(t[0], t[1]))
    s2, e2 = r32(exact_sum(t[2], t[3]))
    s, e3 = r32(exact_sum(s1, s2))
    pe |= e1 or e2 or e3
    return [f32(s) if imm >> i & 1 else 0 for i in range(4)], pe


def dppd(a, b, imm):
    F = fractions.Fraction
    t = [a[i] * b[i] if imm >> (4 + i) & 1 else 0.0 for i in range(2)]
    pe = any(F(t[i]) != F(a[i]) * F(b[i]) for i in range(2) if imm >> (4 + i) & 1)
    s = t[0] + t[1]
    pe |= F(s) != F(t[0]) + F(t[1])
    out = []
    for i in range(2):
        q = f64(s) if imm >> i & 1 else 0
        out += [q & 0xffffffff, q >> 32]
    return out, pe


def mpsadbw(dst, src, imm):
    o1, o2 = (imm >> 2 & 1) * 4, (imm & 3) * 4
    w = [sum(abs(dst[o1 + i + k] - src[o2 + k]) for k in range(4)) for i in range(8)]
    return words(struct.pack("<8H", *w))


def test_sse41_dot_products_and_mpsadbw(fpu_out):
    # DPPS/DPPD/MPSADBW results and MXCSR after each (cleared before): PE when any product
    # or sum was rounded.
    a = [1.5, -2.0, 3.25, f32v(0x3dcccccd)]  # the last is 0.1 as a single
    b = [0.5, 0.25, -1.0, 3.0]
    for name, imm in (("dpps-f1", 0xf1), ("dpps-7c", 0x7c)):
        res, pe = dpps(a, b, imm)
        assert fpu_out[name] == res + [0x1f80 | (0x20 if pe else 0)], name
    for name, imm in (("dppd-31", 0x31), ("dppd-12", 0x12)):
        res, pe = dppd([1.5, -2.0], [0.1, 3.0], imm)
        assert fpu_out[name] == res + [0x1f80 | (0x20 if pe else 0)], name
    hello, bs = b"hello world, hi!", bytes(range(0, 256, 0x11))
    for name, imm in (("mpsadbw-5", 5), ("mpsadbw-2", 2)):
        assert fpu_out[name] == mpsadbw(hello, bs, imm) + [0x1f80], name


def test_mmx_sse_conversions(fpu_out):
    # CVTPI2PS/PD, CVT(T)PS2PI, CVT(T)PD2PI: results, MXCSR (PE on rounding, IE and the
    # integer indefinite for 1e20), and the abridged tag word after FNINIT: the forms with an
    # MMX register go over to MMX (FF), CVTPI2PS/PD from memory do not (0). The upper half
    # of CVTPI2PS's destination keeps the pattern that was there.
    pat_hi = [0xdeadbeef, 0x0badf00d]
    pe, ie, mx = 0x20, 0x01, 0x1f80
    assert fpu_out["cvtpi2ps-m"] == [f32(-7.0), f32(16777216.0)] + pat_hi + [mx | pe, 0]
    assert fpu_out["cvtpi2ps-r"] == [f32(-7.0), f32(16777216.0)] + pat_hi + [mx | pe, 0xff]
    q1, q2 = f64(-7.0), f64(16777217.0)
    assert fpu_out["cvtpi2pd-m"] == [q1 & 0xffffffff, q1 >> 32, q2 & 0xffffffff, q2 >> 32,
                                     mx, 0]
    m = 0xffffffff
    # MOVQ2DQ brings each MMX result back: the upper quadword is zero.
    assert fpu_out["cvtps2pi"] == [2, -4 & m, 0, 0, mx | pe, 0xff]  # 2.5, -3.5: to even
    assert fpu_out["cvttps2pi"] == [2, -3 & m, 0, 0, mx | pe, 0xff]  # truncated
    assert fpu_out["cvtpd2pi"] == [2, 0x80000000, 0, 0, mx | pe | ie, 0xff]  # 2.5, 1e20
    assert fpu_out["cvttpd2pi"] == [-2 & m, 7, 0, 0, mx | pe, 0xff]  # -2.75, 7.9
    assert fpu_out["cvtpd2pi-misaligned"] == [13]


def test_fpu_results_match_kvm(fpu_out):
    # Where KVM runs test=fpu (a hardware-assisted host; the emulating /dev/kvm of some
    # machines stops at the first SSE instruction), every line must be the same but CPUID's
    # and FXSAVE's header, whose FOP a CPU stores only in its fopcode compatibility mode
    # (SDM vol. 1 §8.1.9.1; the soft CPU always does).
    k = vm("--accel", "kvm", "--kernel", MULTIBOOT, "--cmdline", "test=fpu", timeout=120)
    if k.returncode != PASS:
        pytest.skip("KVM does not run test=fpu here: " +
                    (k.stderr.strip().splitlines() or ["no message"])[-1][:200])
    for line in k.stdout.splitlines():
        if line.startswith("fpu ") and line != "fpu ok":
            name, *vals = line.split()[1:]
            if name not in ("cpuid1", "fxsave"):
                assert fpu_out[name] == [int(v, 16) for v in vals], name


def crc32c(data):
    crc = 0xffffffff
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    return crc ^ 0xffffffff


def test_popcnt_lzcnt_crc32(fpu_out):
    assert fpu_out["bits"] == [bin(0xf0f0f0f0).count("1"), 32 - (0x10000).bit_length(),
                               crc32c(b"123456789")]


def test_mmx_aliases_the_x87_tags(fpu_out):
    v = bytes((b * 2) & 0xff for b in struct.pack("<Q", 0x0102030405060708))
    lo, hi = struct.unpack("<II", v)
    # After an MMX instruction all eight tags are valid; EMMS empties them.
    assert fpu_out["mmx"] == [lo, hi, 0xff, 0x00]


def test_fxsave_layout_and_fxrstor(fpu_out):
    # SDM vol. 1 table 10-2: FCW, FSW (TOP 7 after one push), abridged FTW (physical register
    # 7), FOP of the last x87 instruction (FLD1, D9 E8), MXCSR, MXCSR_MASK, ST0 = 1.0.
    assert fpu_out["fxsave"] == [0x037f, 7 << 11, 0x80, 0x1e8, 0x1f80, 0xffff, 0x80000000,
                                 0x3fff]
    pat = [0x01234567, 0x89abcdef, 0xdeadbeef, 0x0badf00d]
    assert fpu_out["fxsave-xmm1"] == pat
    assert fpu_out["fxrstor-xmm2"] == [(pat[0] & ~0xff) | 0x42] + pat[1:]
    assert fpu_out["fxsave-misaligned"] == [13]


# ---- Linux ----

@pytest.mark.parametrize("cpus", [1, 2])
def test_soft_linux_boots_to_initramfs(tmp_path, cpus):
    """The Debian kernel test_vm_linux.py boots under KVM, on the soft CPU with 1 and with 2
    vCPUs (the AP brought up by INIT/SIPI: "Brought up 1 node, 2 CPUs"), to its busybox
    initramfs's marker; then poweroff. Measured with 1 vCPU: 202 s on the ASan/UBSan build;
    bench/soft-boot has the release build's time."""
    if not os.path.exists("/bin/busybox"):
        pytest.skip("needs busybox-static (/bin/busybox)")
    from test_vm_linux import CMDLINE, MARKER, fetch_kernel, make_initramfs, run_guest
    kernel = fetch_kernel()
    initrd = make_initramfs(tmp_path / "initrd.cpio", f"echo {MARKER}\npoweroff -f\n")
    start = time.monotonic()
    r = run_guest([KAPSEL, "--debug", "vm", "run", "--accel", "soft", "--kernel", kernel,
                   "--initrd", initrd, "--mem", "512M", "--cpus", str(cpus), "--cmdline",
                   CMDLINE], 3000)
    took = time.monotonic() - start
    assert MARKER in r.stdout, r.stdout[-3000:] + r.stderr
    assert r.returncode == 0, r.stderr
    assert "not implemented" not in r.stderr, r.stderr
    # The vmlinux was unpacked on the host and booted through PVH (docs/vm.md, Booting a
    # bzImage on the soft CPU); ARCH_CAPABILITIES spared it PTI and retpolines; the invariant
    # TSC kept the clocksource watchdog away.
    assert "unpacked on the host" in r.stderr, r.stderr[-3000:]
    assert "Kernel/User page tables isolation: enabled" not in r.stdout, r.stdout[-3000:]
    assert "Mitigation: Enhanced / Automatic IBRS" in r.stdout, r.stdout[-3000:]
    assert "Marking TSC unstable" not in r.stdout, r.stdout[-3000:]
    if cpus > 1:
        assert f"smp: Brought up 1 node, {cpus} CPUs" in r.stdout, r.stdout[-3000:]
    print(f"soft CPU: Linux with {cpus} vCPUs to the initramfs marker and poweroff in "
          f"{took:.0f} s")


def test_soft_bzimage_with_corrupt_payload_is_one_line(tmp_path):
    """The soft CPU unpacks a bzImage's xz payload on the host: one that does not decode is
    refused in one line, before any vCPU runs."""
    from test_vm_linux import fetch_kernel
    data = bytearray(open(fetch_kernel(), "rb").read())
    setup = (data[0x1f1] or 4) + 1
    off, length = struct.unpack_from("<II", data, 0x248)
    start = setup * 512 + off
    assert data[start:start + 6] == b"\xfd7zXZ\0", "the Debian kernel's payload is not xz"
    mid = start + length // 2
    data[mid:mid + 64] = bytes(b ^ 0x5a for b in data[mid:mid + 64])
    bad = tmp_path / "vmlinuz-corrupt"
    bad.write_bytes(bytes(data))
    r = subprocess.run([KAPSEL, "vm", "run", "--accel", "soft", "--kernel", str(bad), "--mem",
                        "256M"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "xz payload does not decode" in lines[0], r.stderr
    assert str(bad) in lines[0], r.stderr


# ---- virtio: the second column of the VM tests (test_vm_virtio.py, test_vm_pci.py,
# test_vm_devices.py, test_vm_net.py run these same guest drivers under KVM) ----
# The soft path's I/O APIC, userspace irqfds and MSI delivery stand in for KVM's (docs/vm.md,
# Accelerators: interrupts on the soft path).

@pytest.fixture
def disk(tmp_path):
    p = tmp_path / "disk.img"
    data = bytearray(1 << 20)
    data[0:11] = b"KAPSEL-DISK"
    data[9 * 512:10 * 512] = b"\xaa" * 512
    p.write_bytes(bytes(data))
    return p


def pattern_ok(data):
    return all(data[512 * (s + 1) + i] == (i * 7 + s + 1) & 0xff
               for s in range(8) for i in range(512))


def test_virtio_mmio_blk_write_read_back(disk):
    r = soft("blk mode=rw serial=soft-1", "--transport", "mmio", "--disk",
             f"{disk},serial=soft-1")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "blk: sector 0: KAPSEL-DISK" in r.stdout and "blk ok" in r.stdout
    data = disk.read_bytes()
    assert pattern_ok(data), "sectors 1-8 do not hold what the guest wrote"
    assert data[9 * 512:10 * 512] == bytes(512), "write-zeroes left data behind"


def test_virtio_mmio_blk_read_only_and_bad_descriptor(disk):
    before = disk.read_bytes()
    r = soft("blk mode=ro", "--transport", "mmio", "--disk", f"{disk},ro")
    assert r.returncode == PASS and "write refused" in r.stdout, r.stdout + r.stderr
    assert disk.read_bytes() == before
    r = soft("blk mode=bad", "--transport", "mmio", "--disk", str(disk))
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "buffer outside guest RAM; device needs reset" in r.stderr


def test_device_writes_drop_translated_code(disk):
    # The guest runs code in a page, has virtio-blk read other code over it, runs it again:
    # the soft CPU must not run what it translated before the device wrote the page.
    r = soft("blk mode=code", "--transport", "mmio", "--disk", str(disk))
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "blk: code read from the disk runs" in r.stdout


def test_virtio_mmio_rng_beside_two_disks(disk, tmp_path):
    other = tmp_path / "other.img"
    other.write_bytes(bytes(4096))
    r = soft("rng", "--transport", "mmio", "--disk", str(disk), "--disk", f"{other},ro", "--rng")
    assert r.returncode == PASS and "rng ok" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("irq", ["msix", "intx"])
def test_virtio_pci_blk(disk, irq):
    # MSI-X: each vector's MSI message to the soft local APIC; INTx: a level line through
    # the soft I/O APIC. Each completion must arrive as an interrupt of that kind.
    r = soft(f"pci-blk mode=rw irq={irq}", "--disk", str(disk))
    assert r.returncode == PASS, r.stdout + r.stderr
    assert f"irq {irq}" in r.stdout and "pci-blk ok" in r.stdout
    assert "pci-blk: 2 interrupts" in r.stdout
    assert pattern_ok(disk.read_bytes())


def test_virtio_pci_intx_is_level_triggered(disk):
    # EOI without reading ISR: the line comes back (the resample on EOI); after the ISR read
    # it stays down.
    r = soft("pci-blk mode=rw irq=level", "--disk", str(disk))
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "pci-blk: intx stays asserted while ISR is set" in r.stdout
    assert "pci-blk: intx drops once ISR is read" in r.stdout
    assert "pci-blk: 3 interrupts" in r.stdout


@pytest.mark.parametrize("irq", ["msix", "intx"])
def test_virtio_pci_rng(disk, irq):
    r = soft(f"pci-rng irq={irq}", "--disk", str(disk), "--rng")
    assert r.returncode == PASS and "pci-rng ok" in r.stdout, r.stdout + r.stderr


def test_virtio_console_echo():
    r = subprocess.run([KAPSEL, "vm", "run", "--accel", "soft", "--kernel", MULTIBOOT,
                        "--transport", "mmio", "--cmdline", "test=vcon", "--virtio-console"],
                       input="hello\nworld\nquit\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "hvc ready\nhvc: hello\nhvc: world\nhvc bye\n" in r.stdout, r.stdout


def test_vsock_both_directions(tmp_path):
    path = str(tmp_path / "v.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path + "_5000")
    listener.listen(1)
    listener.settimeout(30)
    p = subprocess.Popen([KAPSEL, "vm", "run", "--accel", "soft", "--kernel", MULTIBOOT,
                          "--transport", "mmio", "--cmdline", "test=vsock cid=7", "--vsock",
                          f"cid=7,socket={path}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(400):
            if os.path.exists(path) or p.poll() is not None:
                break
            time.sleep(0.05)
        # Until the guest listens on 1234 it answers with a reset: try again (as a client
        # of Firecracker's vsock does).
        deadline = time.monotonic() + 30
        while True:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(30)
            s.connect(path)
            s.sendall(b"CONNECT 1234\n")
            f = s.makefile("rb")
            try:
                ok = f.readline()
            except ConnectionResetError:
                ok = b""
            if ok or time.monotonic() > deadline or p.poll() is not None:
                break
            f.close()
            s.close()
            time.sleep(0.1)
        assert ok.startswith(b"OK "), ok
        s.sendall(b"ping\n")
        assert f.readline() == b"pong: ping\n"
        f.close()
        s.close()
        c, _ = listener.accept()
        c.settimeout(30)
        assert c.recv(100) == b"hello from the guest\n"
        c.sendall(b"hello from the host\n")
        assert c.recv(100) == b"", "the guest's SHUTDOWN did not reach the host"
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
        listener.close()
    assert p.returncode == PASS, out + err
    assert "vsock: host says hello from the host" in out


@pytest.mark.parametrize("transport", ["mmio", "pci"])
def test_virtio_fs_reads_share(tmp_path, transport):
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello.txt").write_text("hello from the host share\n")
    os.symlink("/etc", share / "etc")
    r = soft(f"virtiofs transport={transport}", "--transport", transport, "--fs",
             f"tag=share0,path={share}", timeout=120)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "virtiofs: read: hello from the host share" in r.stdout
    assert "virtiofs: readlink etc: /etc" in r.stdout and "virtiofs ok" in r.stdout


@pytest.fixture
def tap_ns():
    """A tap with 10.0.2.1/24 in a scratch network namespace (as test_vm_net.py's)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, taps)")
    name = "kapsel-soft-" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        for cmd in (["link", "set", "lo", "up"],
                    ["tuntap", "add", "dev", "ktap0", "mode", "tap"],
                    ["addr", "add", "10.0.2.1/24", "dev", "ktap0"],
                    ["link", "set", "ktap0", "up"]):
            subprocess.run(["ip", "-n", name, *cmd], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_virtio_net_arp_and_ping(tap_ns):
    r = subprocess.run(["ip", "netns", "exec", tap_ns, KAPSEL, "vm", "run", "--accel", "soft",
                        "--kernel", MULTIBOOT, "--transport", "mmio", "--cmdline",
                        "test=net ip=10.0.2.15 host=10.0.2.1", "--net",
                        "tap=ktap0,mac=52:54:00:12:34:56"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == PASS, r.stdout + r.stderr


# ---- choosing the accelerator ----

def test_auto_says_which(tmp_path):
    r = vm("--kernel", MULTIBOOT, "--cmdline", "test=pass", debug=True)
    assert r.returncode == PASS, r.stdout + r.stderr
    said = [line for line in r.stderr.splitlines() if "vm: accelerator" in line]
    assert len(said) == 1, r.stderr
    if not os.path.exists("/dev/kvm"):
        assert "accelerator soft (KVM is not usable" in said[0]


def test_vm_json_accel(tmp_path):
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"kernel": MULTIBOOT, "cmdline": "test=pass", "accel": "soft"}))
    r = vm("--config", str(cfg), debug=True)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "vm: accelerator soft" in r.stderr


def test_bad_accel_one_line(tmp_path):
    one_line_error(vm("--accel", "tcg", "--kernel", MULTIBOOT),
                   '--accel: expected kvm, soft or auto, got "tcg"')
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"kernel": MULTIBOOT, "accel": "hvf"}))
    one_line_error(vm("--config", str(cfg)), 'accel: expected kvm, soft or auto, got "hvf"')


@pytest.mark.parametrize("args,what", [
    (["--cpu-features", "+hv-relaxed"], "Hyper-V enlightenments"),
])
def test_what_soft_cannot_do_is_one_line(args, what):
    # The control API, snapshots, migration, the balloon and --jail work on the soft path:
    # test_vm_soft_lifecycle.py.
    r = soft("pass", *args)
    one_line_error(r, f"--accel soft: cannot run {what}")


def without_kvm(*args):
    """kapsel in a private mount namespace where /dev/kvm is /dev/null: a KVM that does not
    work, as on a machine without one (nothing outside the namespace changes)."""
    cmd = "mount --bind /dev/null /dev/kvm 2>/dev/null || true; exec \"$@\""
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", cmd, "sh",
                           KAPSEL, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)


def test_auto_without_kvm_falls_back_to_soft():
    if os.geteuid() != 0 and os.path.exists("/dev/kvm"):
        pytest.skip("hiding /dev/kvm needs root (a private mount namespace)")
    r = without_kvm("--debug", "vm", "run", "--kernel", MULTIBOOT, "--cmdline", "test=pass")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "vm: accelerator soft (KVM is not usable: " in r.stderr
    r = without_kvm("vm", "run", "--rng", "--transport", "mmio", "--kernel", MULTIBOOT,
                    "--cmdline", "test=rng")
    assert r.returncode == PASS and "rng ok" in r.stdout, r.stdout + r.stderr
    r = without_kvm("vm", "run", "--cpu-features", "+hv-relaxed", "--kernel", MULTIBOOT,
                    "--cmdline", "test=pass")
    one_line_error(r, "KVM is not usable (/dev/kvm")
    assert "the soft CPU cannot run Hyper-V enlightenments" in r.stderr


def test_kvm_access_denied_falls_back_with_warning():
    # A /dev/kvm this user may not open: auto runs on the soft CPU, and says so once with the
    # fix, since the user probably meant KVM.
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to nobody")
    if not os.path.exists("/dev/kvm") or os.stat("/dev/kvm").st_mode & 0o006:
        pytest.skip("/dev/kvm is missing or open to everyone here")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        KAPSEL, "vm", "run", "--kernel", MULTIBOOT, "--cmdline", "test=pass"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert r.returncode == PASS, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "open /dev/kvm" in lines[0], r.stderr
    assert "running on the soft CPU instead" in lines[0]


def test_kvm_requested_without_kvm_fails():
    # --accel kvm never falls back: the KVM error, in one line.
    if os.geteuid() != 0 and os.path.exists("/dev/kvm"):
        pytest.skip("hiding /dev/kvm needs root (a private mount namespace)")
    r = without_kvm("vm", "run", "--accel", "kvm", "--kernel", MULTIBOOT, "--cmdline",
                    "test=pass")
    one_line_error(r, "/dev/kvm")
