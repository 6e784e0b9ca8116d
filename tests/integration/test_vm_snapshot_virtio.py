"""Snapshot, restore and migration of VMs with virtio devices (docs/vm.md, Snapshot format,
format version 2). The guests are the multiboot test kernel's I/O loops: test=rngloop reads
entropy forever ("rngloop N" every 16 reads), test=blkloop writes a sector, reads it back and
checks the previous round's sector ("blkloop N" every 8 rounds), over virtio-mmio or, with
pci=1, virtio-pci with MSI-X (each completion must also interrupt). Paused mid-work, saved,
restored with the same devices (or migrated), the loop goes on counting without an error.
test=vsockreset waits for VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, which a restored vsock device
sends when the guest's CID changed (and not otherwise); a balloon keeps its target and counters, a console its unread input, and a Diff
snapshot holds the pages a device wrote. A different device set, a virtio-fs share and a truncated or forged device section are
refused with one line and leave no VM behind."""
import json
import os
import re
import struct
import subprocess
import time
import zlib

import pytest

import test_vm_migrate as mig
from test_vm_mem import merge
from test_vm_snapshot import KAPSEL, MULTIBOOT, counts, kap, start, stop, wait_for

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]

LOOP = re.compile(r"(rngloop|blkloop) (\d+)\n")
SEC_VIRTIO = 64
HEADER = 72


def loop_counts(path):
    try:
        return [int(n) for _, n in LOOP.findall(path.read_text())]
    except FileNotFoundError:
        return []


def text(path):
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def no_failure(console):
    t = text(console)
    assert "FAIL" not in t and "differs" not in t, t[-2000:]


def stop_clean(proc):
    """Stops proc; the sanitizers found nothing in it."""
    _, err = stop(proc)
    assert "AddressSanitizer" not in err and "runtime error" not in err, err
    return err


def devices(kind, tmp, transport):
    """The device flags of a guest: kind is rng or blk."""
    if kind == "rng":
        dev = ["--rng"]
    else:
        disk = tmp / "disk.img"
        if not disk.exists():
            with open(disk, "wb") as f:
                f.truncate(1 << 20)
        dev = ["--disk", str(disk)]
    return dev + ["--transport", transport]


def run_loop(root, tmp, name, kind, transport, extra=()):
    pci = " pci=1" if transport == "pci" else ""
    proc, console = start(root, tmp, name, "vm", "run", "--kernel", MULTIBOOT, "--cmdline",
                          f"test={kind}loop{pci}", "--mem", "32M",
                          *devices(kind, tmp, transport), *extra)
    wait_for(lambda: (len(loop_counts(console)) >= 3 and
                      (root / "vm" / name / "state.json").exists()) or proc.poll() is not None,
             what=f"the {kind}loop's count")
    assert proc.poll() is None, proc.communicate()
    return proc, console


def save(root, tmp, name, proc, console):
    """Pauses VM name, snapshots it, stops it: (mem, state, last count before the pause)."""
    r = kap(root, "vm", "pause", name)
    assert r.returncode == 0, r.stderr
    mem, state = tmp / "mem", tmp / "state"
    r = kap(root, "vm", "snapshot", name, "--mem", str(mem), "--state", str(state))
    assert r.returncode == 0, r.stderr
    last = loop_counts(console)[-1]
    stop_clean(proc)
    no_failure(console)
    return mem, state, last


@pytest.mark.parametrize("kind", ["rng", "blk"])
@pytest.mark.parametrize("transport", ["mmio", "pci"])
def test_restore_continues_the_io_loop(tmp_path, kind, transport):
    root = tmp_path / "root"
    proc, console = run_loop(root, tmp_path, "src", kind, transport)
    try:
        mem, state, last = save(root, tmp_path, "src", proc, console)
    finally:
        stop(proc)
    dst, dcon = start(root, tmp_path, "dst", "vm", "restore", "--mem", str(mem), "--state",
                      str(state), *devices(kind, tmp_path, transport))
    try:
        wait_for(lambda: len(loop_counts(dcon)) >= 3 or dst.poll() is not None,
                 what="the restored guest's count")
        assert dst.poll() is None, dst.communicate()
        got = loop_counts(dcon)
        # No reboot, no error, and the loop goes on from where it was saved.
        assert "multiboot guest" not in text(dcon)
        no_failure(dcon)
        assert got[0] > last and all(b > a for a, b in zip(got, got[1:])), (last, got)
        stop_clean(dst)
    finally:
        stop(dst)


def test_diff_snapshot_holds_the_devices_writes(tmp_path):
    # A Diff holds the pages the device wrote since the Full snapshot, not only the guest's
    # (KVM's dirty log sees only the guest's): the Full snapshot merged with the Diff must be
    # the RAM that a Full snapshot taken right after the Diff (still paused) holds.
    root = tmp_path / "root"
    proc, console = run_loop(root, tmp_path, "src", "rng", "mmio")

    def snap(name, *opts):
        r = kap(root, "vm", "snapshot", "src", *opts, "--mem", str(tmp_path / f"{name}.mem"),
                "--state", str(tmp_path / f"{name}.state"))
        assert r.returncode == 0, r.stderr

    try:
        assert kap(root, "vm", "pause", "src").returncode == 0
        snap("full")
        n = loop_counts(console)[-1]
        assert kap(root, "vm", "resume", "src").returncode == 0
        wait_for(lambda: loop_counts(console)[-1] >= n + 32 or proc.poll() is not None,
                 what="the loop to go on")
        assert kap(root, "vm", "pause", "src").returncode == 0
        snap("diff", "--diff")
        snap("after")
        stop_clean(proc)
    finally:
        stop(proc)
    merged = tmp_path / "merged.mem"
    merge(tmp_path / "full.mem", tmp_path / "diff.mem", merged)
    a, b = merged.read_bytes(), (tmp_path / "after.mem").read_bytes()
    bad = [hex(p * 4096) for p in range(len(b) // 4096)
           if a[p * 4096:(p + 1) * 4096] != b[p * 4096:(p + 1) * 4096]]
    assert not bad, f"pages missing from the Diff: {bad[:8]}"
    no_failure(console)


def test_vsock_transport_reset_after_restore(tmp_path):
    root = tmp_path / "root"
    sock = tmp_path / "v.sock"
    vsock = ["--vsock", f"cid=3,socket={sock}", "--transport", "mmio"]
    proc, console = start(root, tmp_path, "src", "vm", "run", "--kernel", MULTIBOOT,
                          "--cmdline", "test=vsockreset", "--mem", "32M", *vsock)
    try:
        wait_for(lambda: ("vsockreset: waiting" in text(console) and
                          (root / "vm" / "src" / "state.json").exists()) or
                 proc.poll() is not None, what="the vsock guest")
        assert proc.poll() is None, proc.communicate()
        assert kap(root, "vm", "pause", "src").returncode == 0
        mem, state = tmp_path / "mem", tmp_path / "state"
        r = kap(root, "vm", "snapshot", "src", "--mem", str(mem), "--state", str(state))
        assert r.returncode == 0, r.stderr
    finally:
        stop(proc)
    # Without a restore the guest never hears of a reset.
    assert "transport reset" not in text(console)
    # Restored with its own CID, the guest keeps its connections: no reset.
    same, scon = start(root, tmp_path, "same", "vm", "restore", "--mem", str(mem), "--state",
                       str(state), *vsock)
    try:
        wait_for(lambda: "vsockreset: waiting" in text(scon) or same.poll() is not None,
                 what="the restored guest to go on waiting")
        assert same.poll() is None, same.communicate()
        assert "transport reset" not in text(scon), text(scon)
    finally:
        stop(same)
    # With another CID the driver must drop its connections and read guest_cid again.
    vsock[1] = f"cid=4,socket={sock}"
    dst, dcon = start(root, tmp_path, "dst", "vm", "restore", "--mem", str(mem), "--state",
                      str(state), *vsock)
    try:
        wait_for(lambda: dst.poll() is not None, what="the restored guest to see the reset")
        _, err = dst.communicate()
        assert "vsock: transport reset" in text(dcon), (text(dcon), err)
        # pass(): the debug exit's status for a passing test kernel.
        assert dst.returncode == 85, err
    finally:
        stop(dst)


def test_balloon_target_and_counters_survive_a_restore(tmp_path):
    root = tmp_path / "root"
    bal = ["--balloon", "stats_interval_s=1", "--transport", "mmio"]
    proc, console = start(root, tmp_path, "src", "vm", "run", "--kernel", MULTIBOOT,
                          "--cmdline", "test=balloon pool=16", "--mem", "128M", *bal)
    try:
        wait_for(lambda: "balloon: actual 0" in text(console) or proc.poll() is not None,
                 what="the balloon driver")
        assert proc.poll() is None, proc.communicate()
        assert kap(root, "vm", "balloon", "src", "8").returncode == 0
        wait_for(lambda: "balloon: actual 2048" in text(console), what="the inflation")
        assert kap(root, "vm", "pause", "src").returncode == 0
        mem, state = tmp_path / "mem", tmp_path / "state"
        r = kap(root, "vm", "snapshot", "src", "--mem", str(mem), "--state", str(state))
        assert r.returncode == 0, r.stderr
        stop_clean(proc)
    finally:
        stop(proc)
    dst, dcon = start(root, tmp_path, "dst", "vm", "restore", "--mem", str(mem), "--state",
                      str(state), *bal)
    try:
        wait_for(lambda: (root / "vm" / "dst" / "state.json").exists() or
                 dst.poll() is not None, what="the restored VM's API")
        r = kap(root, "vm", "balloon", "dst")
        assert r.returncode == 0 and json.loads(r.stdout)["amount_mib"] == 8, r
        r = kap(root, "vm", "balloon", "dst", "--stats")
        st = json.loads(r.stdout)
        assert st["actual_pages"] == 2048 and st["inflated_pages_total"] == 2048, st
        # The restored driver and device go on: a deflation reaches the guest.
        assert kap(root, "vm", "balloon", "dst", "0").returncode == 0
        wait_for(lambda: "balloon: actual 0" in text(dcon) or dst.poll() is not None,
                 what="the deflation after the restore")
        assert dst.poll() is None, dst.communicate()
        stop_clean(dst)
    finally:
        stop(dst)


def test_pending_console_input_is_saved(tmp_path):
    # test=count never sets hvc0 up: what is typed stays in the device's input buffer, and
    # the snapshot keeps it for the restored driver.
    root = tmp_path / "root"
    proc = subprocess.Popen(
        [KAPSEL, "--root", str(root), "vm", "run", "--kernel", MULTIBOOT, "--cmdline",
         "test=count", "--mem", "32M", "--virtio-console", "--transport", "mmio", "--name",
         "con", "--console", "stdio"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (root / "vm" / "con" / "state.json").exists() or
                 proc.poll() is not None, what="the VM's API")
        proc.stdin.write(b"typed ahead\n")
        proc.stdin.flush()
        time.sleep(1)
        assert kap(root, "vm", "pause", "con").returncode == 0
        state = tmp_path / "state"
        r = kap(root, "vm", "snapshot", "con", "--mem", str(tmp_path / "mem"), "--state",
                str(state))
        assert r.returncode == 0, r.stderr
    finally:
        stop(proc)
    data = state.read_bytes()
    off, _, _, n = next(s for s in sections(data) if s[1] == SEC_VIRTIO and s[2] == 0)
    sec = data[off + 16:off + 16 + n]
    assert sec[:8] == b"console0" and sec[-12:] == b"typed ahead\n", sec[-40:]
    assert struct.unpack_from("<I", sec, 36)[0] == 12
    # And it loads back: the restored VM runs on with it.
    dst, dcon = start(root, tmp_path, "dst", "vm", "restore", "--mem", str(tmp_path / "mem"),
                      "--state", str(state), "--virtio-console", "--transport", "mmio")
    try:
        wait_for(lambda: len(counts(dcon)) >= 2 or dst.poll() is not None,
                 what="the restored guest's count")
        assert dst.poll() is None, dst.communicate()
        stop_clean(dst)
    finally:
        stop(dst)


def test_migrate_io_loop_over_pci(tmp_path):
    root = tmp_path / "root"
    addr = f"unix:{tmp_path}/mig.sock"
    src, scon = run_loop(root, tmp_path, "src", "blk", "pci")
    dst, dcon = start(root, tmp_path, "dst", "vm", "run", "--incoming", addr, "--mem", "32M",
                      *devices("blk", tmp_path, "pci"))
    try:
        wait_for(lambda: os.path.exists(addr[5:]) or dst.poll() is not None,
                 what="the destination's socket")
        assert dst.poll() is None, dst.communicate()
        r = kap(root, "vm", "migrate", "src", addr, timeout=120)
        assert r.returncode == 0, (r.stderr, stop(dst))
        assert mig.RESULT.search(r.stdout), r.stdout
        _, err = src.communicate(timeout=30)
        assert src.returncode == 0, err
        before = loop_counts(scon)
        wait_for(lambda: len(loop_counts(dcon)) >= 3 or dst.poll() is not None,
                 what="the destination's count")
        assert dst.poll() is None, dst.communicate()
        after = loop_counts(dcon)
        assert "multiboot guest" not in text(dcon)
        no_failure(scon)
        no_failure(dcon)
        assert after[0] > before[-1] and all(b > a for a, b in zip(after, after[1:])), \
            (before[-3:], after[:3])
        assert "AddressSanitizer" not in err and "runtime error" not in err, err
        stop_clean(dst)
    finally:
        stop(src)
        stop(dst)


def test_migrate_to_a_different_device_set_leaves_the_source_running(tmp_path):
    root = tmp_path / "root"
    addr = f"unix:{tmp_path}/mig.sock"
    src, scon = run_loop(root, tmp_path, "src", "rng", "pci")
    # The destination has no rng: it refuses the state, the source's devices work on.
    dst, _ = start(root, tmp_path, "dst", "vm", "run", "--incoming", addr, "--mem", "32M")
    try:
        wait_for(lambda: os.path.exists(addr[5:]) or dst.poll() is not None,
                 what="the destination's socket")
        r = kap(root, "vm", "migrate", "src", addr, timeout=120)
        assert r.returncode != 0 and "virtio devices" in r.stderr, r.stderr
        _, err = dst.communicate(timeout=30)
        assert dst.returncode != 0 and "the snapshot has 1 virtio devices" in err, err
        n = len(loop_counts(scon))
        wait_for(lambda: len(loop_counts(scon)) >= n + 2 or src.poll() is not None,
                 what="the source's loop to go on")
        assert src.poll() is None, src.communicate()
        no_failure(scon)
    finally:
        stop(src)
        stop(dst)


# ---- refused ----


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A blkloop guest with a disk and an rng over virtio-pci, saved: (dir, mem, state)."""
    tmp = tmp_path_factory.mktemp("vsnap")
    root = tmp / "root"
    proc, console = run_loop(root, tmp, "src", "blk", "pci", ("--rng",))
    try:
        mem, state, _ = save(root, tmp, "src", proc, console)
    finally:
        stop(proc)
    return tmp, mem, state


def restore_fails(tmp_path, mem, state, *extra):
    root = tmp_path / "root"
    r = kap(root, "vm", "restore", "--mem", str(mem), "--state", str(state), "--name", "bad",
            "--console", "none", *extra)
    assert r.returncode != 0, r
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (root / "vm" / "bad").exists()
    return r.stderr


def same(tmp):
    return ["--disk", str(tmp / "disk.img"), "--rng"]


def test_missing_device(saved, tmp_path):
    tmp, mem, state = saved
    err = restore_fails(tmp_path, mem, state, "--disk", str(tmp / "disk.img"))
    assert "the snapshot has 2 virtio devices, this VM would have 1" in err, err
    err = restore_fails(tmp_path, mem, state)
    assert "the snapshot has 2 virtio devices, this VM would have 0" in err, err


def test_extra_device(saved, tmp_path):
    tmp, mem, state = saved
    err = restore_fails(tmp_path, mem, state, *same(tmp), "--virtio-console")
    assert "the snapshot has 2 virtio devices, this VM would have 3" in err, err


def test_other_transport(saved, tmp_path):
    tmp, mem, state = saved
    err = restore_fails(tmp_path, mem, state, *same(tmp), "--transport", "mmio")
    assert "--transport mmio differs from the snapshot's pci" in err, err


def test_other_device_type(saved, tmp_path):
    tmp, mem, state = saved
    err = restore_fails(tmp_path, mem, state, "--disk", str(tmp / "disk.img"), "--balloon",
                        "amount_mib=0")
    assert "virtio device 1 is rng0" in err and "balloon" in err, err


def test_disk_of_another_size(saved, tmp_path):
    _, mem, state = saved
    other = tmp_path / "disk.img"
    with open(other, "wb") as f:
        f.truncate(2 << 20)
    err = restore_fails(tmp_path, mem, state, "--disk", str(other), "--rng")
    assert "disk0" in err and "a disk of another size" in err, err


def sections(data):
    """(offset of the section header, type, index, length) of every section."""
    off, end, out = HEADER, len(data) - 4, []
    while off + 16 <= end:
        t, i, n = struct.unpack_from("<IIQ", data, off)
        out.append((off, t, i, n))
        off += 16 + n
    return out


def reseal(data):
    """Fixes total_len and the CRC, as a forger would."""
    data = bytearray(data[:-4])
    struct.pack_into("<Q", data, 16, len(data) + 4)
    return bytes(data) + struct.pack("<I", zlib.crc32(bytes(data)))


def test_truncated_device_section(saved, tmp_path):
    _, mem, state = saved
    data = bytearray(state.read_bytes())
    off, _, _, n = next(s for s in sections(data) if s[1] == SEC_VIRTIO and s[2] == 0)
    # The section loses its last 8 bytes (the disk's state) and says so in its length.
    struct.pack_into("<Q", data, off + 8, n - 8)
    del data[off + 16 + n - 8:off + 16 + n]
    bad = tmp_path / "state"
    bad.write_bytes(reseal(data))
    err = restore_fails(tmp_path, mem, bad, *same(saved[0]))
    assert "disk0" in err and "inconsistent" in err, err
    # Unsealed, the same cut is caught by the length and checksum first.
    bad.write_bytes(state.read_bytes()[:-60])
    assert "truncated" in restore_fails(tmp_path, mem, bad, *same(saved[0]))


def test_forged_ring_address(saved, tmp_path):
    _, mem, state = saved
    data = bytearray(state.read_bytes())
    off, _, _, _ = next(s for s in sections(data) if s[1] == SEC_VIRTIO and s[2] == 0)
    # struct snap_virtio (40 bytes), then kap_virtio_state: queue 0's desc_gpa at 48.
    struct.pack_into("<Q", data, off + 16 + 40 + 48, 0xfff00000)
    bad = tmp_path / "state"
    bad.write_bytes(reseal(data))
    err = restore_fails(tmp_path, mem, bad, *same(saved[0]))
    assert "disk0" in err and "outside guest RAM" in err, err


def test_version_1_refused(saved, tmp_path):
    _, mem, state = saved
    data = bytearray(state.read_bytes())
    struct.pack_into("<I", data, 8, 1)
    bad = tmp_path / "state"
    bad.write_bytes(reseal(data))
    err = restore_fails(tmp_path, mem, bad, *same(saved[0]))
    assert "format version 1, this kapsel reads version 2" in err, err


def test_virtiofs_refused(tmp_path, saved):
    root = tmp_path / "root"
    share = tmp_path / "share"
    share.mkdir()
    proc, _ = start(root, tmp_path, "fs", "vm", "run", "--kernel", MULTIBOOT, "--cmdline",
                    "test=count", "--mem", "32M", "--fs", f"tag=share,path={share}")
    try:
        wait_for(lambda: (root / "vm" / "fs" / "state.json").exists() or
                 proc.poll() is not None, what="the VM's API")
        assert kap(root, "vm", "pause", "fs").returncode == 0
        r = kap(root, "vm", "snapshot", "fs", "--mem", str(tmp_path / "m"), "--state",
                str(tmp_path / "s"))
        assert r.returncode != 0 and "virtio-fs cannot be saved" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "m").exists() and not (tmp_path / "s").exists()
        assert not list(tmp_path.glob("*.partial"))
    finally:
        stop(proc)
    _, mem, state = saved
    err = restore_fails(tmp_path, mem, state, *same(saved[0]), "--fs",
                        f"tag=share,path={share}")
    assert "virtio-fs cannot be saved or restored" in err, err
