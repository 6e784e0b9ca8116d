"""The VM lifecycle on the soft CPU (docs/vm.md, Accelerators, "Lifecycle on the soft path"):
the control API, pause/resume, snapshot/restore (full and diff), live migration, the balloon
and the jail with `--accel soft`, on every machine: no /dev/kvm is needed. The KVM path's own
tests and helpers run again here with --accel soft (test_vm_api, test_vm_snapshot, test_vm_mem,
test_vm_migrate, test_vm_balloon, test_vm_jail); what is the soft path's alone is below: its
guest clock across a pause and a restore, its state sections refused by name when forged, and
the KVM <-> soft mismatch.

The guest is the multiboot test kernel's test=count, which on the soft CPU (no kvmclock)
prints "count N clock MS" every 100 ms of its TSC (1 GHz there)."""
import os
import struct
import zlib

import pytest

import test_vm_api as api
import test_vm_balloon as balloon
import test_vm_jail as jail
import test_vm_mem as mem
import test_vm_migrate as migrate
import test_vm_snapshot as snap
from test_vm_balloon import vms  # noqa: F401  (fixture)
from test_vm_jail import disk  # noqa: F401  (fixture)

SOFT = ("--accel", "soft")
needs_kvm = pytest.mark.skipif(not os.path.exists("/dev/kvm"),
                               reason="the KVM side needs /dev/kvm")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="--jail needs root")


@pytest.fixture(scope="module", autouse=True)
def guests(kapsel):
    if not os.path.exists(snap.MULTIBOOT):
        pytest.fail(f"test kernel {snap.MULTIBOOT} missing: build with meson/ninja first")


# ---- the control API, pause and resume ----

@pytest.fixture
def soft_vmroot(tmp_path):
    """test_vm_api's vmroot, its VMs on the soft CPU."""
    root = tmp_path / "root"
    started = []

    def start(**kw):
        v = api.VM(root, tmp_path, extra=SOFT, **kw)
        started.append(v)
        return v
    yield root, start
    for v in started:
        v.end()


def test_describe_and_socket(soft_vmroot):
    api.test_describe_and_socket(soft_vmroot)


def test_pause_resume(soft_vmroot):
    """Every soft vCPU parks; the guest's TSC clock stops for the pause (the line after the
    resume is under a second of guest time after the last one, though the pause took 1.5 s)."""
    api.test_pause_resume(soft_vmroot)


def test_vm_stop_of_a_paused_vm_does_not_wait(soft_vmroot):
    api.test_vm_stop_of_a_paused_vm_does_not_wait(soft_vmroot)


# ---- snapshot and restore ----

@pytest.fixture(scope="module")
def soft_snapshot(tmp_path_factory):
    return snap.make_snapshot(tmp_path_factory, *SOFT)


def test_restore_continues_the_count(soft_snapshot, tmp_path):
    """A restore without --accel takes the snapshot's accelerator; the count goes on from the
    snapshot's, and the guest clock from where the pause stopped it."""
    _, mfile, state, last = soft_snapshot
    proc, console = snap.start(tmp_path / "root", tmp_path, "dst", "vm", "restore", "--mem",
                               str(mfile), "--state", str(state))
    try:
        snap.wait_for(lambda: len(snap.counts(console)) >= 3 or proc.poll() is not None,
                      what="the restored guest's count")
        assert proc.poll() is None, proc.communicate()
        got = snap.counts(console)
        assert "multiboot guest" not in console.read_text()
        assert got[0][0] > last[0], (last, got)
        # The pause, the snapshot and the restore took seconds the guest does not see. (The
        # bound is loose: a starved host thread shows as guest time on the soft CPU.)
        assert 100 <= got[0][1] - last[1] < 1000, (last, got)
        assert all(b[0] > a[0] and b[1] > a[1] for a, b in zip(got, got[1:])), got
        r = snap.kap(tmp_path / "root", "vm", "inspect", "dst")
        assert r.returncode == 0 and '"Running"' in r.stdout, r
    finally:
        snap.stop(proc)


def test_truncated_state_file(soft_snapshot, tmp_path):
    snap.test_truncated_state_file(soft_snapshot, tmp_path)


def test_forged_state_file(soft_snapshot, tmp_path):
    snap.test_forged_state_file(soft_snapshot, tmp_path)


def test_changed_config(soft_snapshot, tmp_path):
    snap.test_changed_config(soft_snapshot, tmp_path)


def test_devices_the_snapshot_lacks(soft_snapshot, tmp_path):
    snap.test_devices_the_snapshot_lacks(soft_snapshot, tmp_path)


def sections(data):
    """[(type, index, payload offset, length)] of a state file's bytes."""
    out, off = [], 72
    while off < len(data) - 4:
        typ, idx, length = struct.unpack_from("<IIQ", data, off)
        out.append((typ, idx, off + 16, length))
        off += 16 + length
    return out


def reseal(data):
    """Fixes the header's total length and the CRC after an edit: only the content is bad."""
    data = bytearray(data[:-4])
    struct.pack_into("<Q", data, 16, len(data) + 4)
    return bytes(data) + struct.pack("<I", zlib.crc32(bytes(data)))


def forged(state, typ, edit):
    data = bytearray(state.read_bytes())
    (_, _, off, length), = [s for s in sections(data) if s[0] == typ and s[1] == 0]
    return reseal(edit(data, off, length))


CPU, FXSAVE, LAPIC, PIT = 80, 81, 82, 98


def cpl7(d, off, n):
    d[off + 512:off + 516] = struct.pack("<I", 7)  # soft_cpu_state.cpl
    return d


def lma_real_mode(d, off, n):
    struct.pack_into("<Q", d, off + 360, 0x10)  # CR0: no PE, no PG
    struct.pack_into("<Q", d, off + 400, 0x500)  # EFER: LME | LMA
    return d


def no_fxsave(d, off, n):
    return d[:off - 16] + d[off + n:]


def short_lapic(d, off, n):
    struct.pack_into("<Q", d, off - 8, n - 8)
    return d[:off + n - 8] + d[off + n:]


def pit_reload0(d, off, n):
    struct.pack_into("<I", d, off + 8, 0)  # channel 0's reload
    d[off + 20] = 1  # armed
    return d


def bad_mxcsr(d, off, n):
    struct.pack_into("<I", d, off + 24, 0x10000)
    return d


@pytest.mark.parametrize("typ,edit,why", [
    (CPU, cpl7, "soft section CPU 0: CPL above 3"),
    (CPU, lma_real_mode, "soft section CPU 0: EFER.LMA without paging, PAE and LME"),
    (FXSAVE, no_fxsave, "soft section FXSAVE 0 missing"),
    (FXSAVE, bad_mxcsr, "soft section FXSAVE 0: reserved MXCSR bits set"),
    (LAPIC, short_lapic, "soft section LAPIC 0 of the wrong size (184 bytes, expected 192)"),
    (PIT, pit_reload0, "soft 8254 state out of range"),
])
def test_forged_soft_sections_refused_by_name(soft_snapshot, tmp_path, typ, edit, why):
    """A soft section that is missing, of the wrong size or holding a state no CPU or chip can
    be in is refused in one line naming it, under a valid checksum, before the guest runs."""
    _, mfile, state, _ = soft_snapshot
    bad = tmp_path / "state"
    bad.write_bytes(forged(state, typ, edit))
    err = snap.restore_fails(tmp_path, mfile, bad)
    assert why in err, err


def test_soft_snapshot_refused_on_kvm(soft_snapshot, tmp_path):
    """The two accelerators' states are not converted: --accel kvm with a soft snapshot is
    refused before KVM is opened (so without /dev/kvm too)."""
    _, mfile, state, _ = soft_snapshot
    err = snap.restore_fails(tmp_path, mfile, state, "--accel", "kvm")
    assert "--accel kvm, but the snapshot holds soft CPU state" in err, err
    assert "restore with --accel soft" in err, err


@needs_kvm
def test_kvm_snapshot_refused_on_soft(tmp_path_factory, tmp_path):
    _, mfile, state, _ = snap.make_snapshot(tmp_path_factory, "--accel", "kvm")
    err = snap.restore_fails(tmp_path, mfile, state, "--accel", "soft")
    assert "--accel soft, but the snapshot holds KVM state" in err, err


def test_diff_snapshot(tmp_path):
    """Diff snapshots on the soft path: the soft CPU's own store log (kap_soft_stored)."""
    mem.test_diff_snapshot_writes_only_dirty_pages_and_restores(tmp_path, accel=SOFT)


# ---- live migration ----

def test_migrate_continues_the_count(tmp_path):
    migrate.migrate_ok(tmp_path, f"unix:{tmp_path}/mig.sock", accel=SOFT)


def test_migrate_dirty_guest(tmp_path):
    """test=dirty rewrites 64 MiB as fast as the soft CPU runs: the store log finds pages dirty
    in every round, the round cap ends the pre-copy, and the destination goes on."""
    rounds, _ = migrate.migrate_ok(tmp_path, f"unix:{tmp_path}/mig.sock", "dirty dirty_mib=64",
                                   "128M", None, "--max-downtime", "1", "--max-iterations", "3",
                                   accel=SOFT)
    assert 2 <= rounds <= 4, rounds


@needs_kvm
def test_migrate_soft_to_kvm_refused(tmp_path):
    root = tmp_path / "root"
    src, con = migrate.source(root, tmp_path, "count", "64M", *SOFT)
    addr = f"unix:{tmp_path}/mig.sock"
    dst, _ = migrate.start(root, tmp_path, "dst", "vm", "run", "--incoming", addr, "--mem",
                           "64M", "--accel", "kvm")
    try:
        migrate.wait_for(lambda: os.path.exists(addr[5:]) or dst.poll() is not None,
                         what="socket")
        r = migrate.kap(root, "vm", "migrate", "src", addr)
        assert r.returncode != 0
        assert "the source has accel=soft, this VM accel=kvm" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        dst.communicate(timeout=60)
        assert dst.returncode != 0
        migrate.still_counting(src, con)
    finally:
        migrate.stop(src)
        migrate.stop(dst)


# ---- the balloon ----

@pytest.mark.parametrize("transport", ["mmio", "pci"])
def test_balloon_inflate_deflate_and_statistics(vms, transport):  # noqa: F811
    balloon.test_inflate_returns_memory_deflate_and_statistics(vms, transport, None,
                                                               accel=SOFT)


# ---- the jail ----

@needs_root
@pytest.mark.parametrize("test,args", [
    ("pass", []),
    ("blk mode=rw serial=jail", ["--transport", "mmio", "--disk", "{disk},serial=jail"]),
    ("pci-blk mode=rw irq=msix", ["--disk", "{disk}"]),
])
def test_guests_run_jailed(disk, test, args):  # noqa: F811
    jail.test_guests_run_jailed(disk, test, [*args, *SOFT])


@needs_root
def test_soft_vcpu_thread_is_filtered():
    """A soft vCPU thread runs under its own filter: the self-test's open() kills the VMM."""
    jail.test_forbidden_syscall_kills_with_one_line(accel=SOFT)


@needs_root
def test_api_sock_jailed(tmp_path):
    jail.test_api_sock_jailed(tmp_path, accel=SOFT)
