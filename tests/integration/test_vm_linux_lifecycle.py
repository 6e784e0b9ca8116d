"""A running Linux guest (Debian's kernel, a busybox /init) through the VM lifecycle of
docs/vm.md: the balloon taking memory from it and giving it back, a snapshot of it restored,
and a live migration of it. The freestanding guests of test_vm_balloon.py, test_vm_snapshot*.py
and test_vm_migrate.py check each mechanism in detail; these check that a real kernel with
its own timers, interrupts, page allocator and virtio drivers goes on across them.

- balloon: `vm balloon NAME 64` makes Linux's virtio_balloon give 64 MiB: the guest's MemTotal
  drops by exactly that (the driver takes inflated pages out of totalram without
  deflate_on_oom), its MemAvailable with it, and the VMM's resident guest RAM drops (the guest
  touched its free memory first, so the pages it gives are host memory); statistics come from
  the driver; a deflate gives MemTotal back.
- snapshot: a guest counting on its serial console, writing the count to an ext4 virtio disk
  and reading it back (and a file written before the snapshot) with its page cache dropped,
  is paused, saved, stopped and restored with the same disk: the count goes on from where it
  was, no boot banner, the disk reads and writes work. A restore without the disk is refused.
- migration: the same guest migrated over unix: to a `vm run --incoming` destination goes on
  counting there.

One vCPU each: SMP Linux guests die of the emulator's SVM under the nested runner (docs/vm.md,
Known gaps). Every test has the VM test matrix's two columns (ACCELS of test_vm_linux.py): kvm
runs where KVM boots Linux and skips elsewhere as test_vm_linux.py does (scripts/vm-tests.sh
--nested runs it in nested SVM); soft (`--accel soft`, the vmlinux through PVH: kernel_for)
runs directly on every machine and skips inside the nested runner."""
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time

import pytest

from conftest import KAPSEL
from test_vm_linux import ACCELS, kernel_for, make_initramfs, need_accel
from test_vm_migrate import recv_line

CMDLINE = "console=ttyS0 reboot=k panic=-1 rdinit=/init"
BANNER = "Linux version"
INIT_START = "KAPSEL-INIT-START"
MEM_MIB = 256
# The balloon guest's RAM is found in /proc/PID/smaps by its size, so not 256 MiB: ASan's low
# shadow (0x7fff8000-0x8fff6fff) is a mapping of that size too.
BALLOON_MEM_MIB = 320
BALLOON_MIB = 64
MIB = 1 << 20
# Boot to /init under nested SVM takes ~15-30 s, on the soft CPU (ASan build, a loaded
# machine) under a minute; leave room.
BOOT_S = 240


def accel_args(accel):
    return ["--accel", accel]


def kap(root, *args, timeout=120):
    return subprocess.run([KAPSEL, "--root", str(root), *args], capture_output=True,
                          text=True, timeout=timeout)


def wait_for(pred, timeout=60, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def text(path):
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def start(root, tmp_path, name, *args):
    console = tmp_path / f"console-{name}.txt"
    proc = subprocess.Popen(
        [KAPSEL, "--root", str(root), *args, "--name", name, "--console", f"file:{console}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, console


def stop(proc):
    """SIGTERM (if still running) and the (stdout, stderr) it left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def stop_clean(proc):
    """Stops a running VM: it ends as SIGTERM says, and the sanitizers found nothing."""
    _, err = stop(proc)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "AddressSanitizer" not in err and "runtime error" not in err, err
    return err


def wait_console(proc, console, pred, timeout, what):
    """Waits until pred(console text) is true while the VM runs; on failure, the console's
    end says where the guest was."""
    end = time.time() + timeout
    while time.time() < end:
        t = text(console)
        v = pred(t)
        if v:
            return v
        if proc.poll() is not None:
            pytest.fail(f"kapsel exited {proc.returncode} before {what}: "
                        f"{proc.communicate()[1][-2000:]}\nconsole:\n{t[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"no {what} within {timeout} s; console:\n{text(console)[-3000:]}")


def ready(root, name):
    """The VM's API is up (its state.json is written once it serves)."""
    return (root / "vm" / name / "state.json").exists()


# ---- balloon ----

# Touches nearly all of the guest's free memory once (a file in a tmpfs, removed again; its
# own tmpfs, since the initramfs' is limited to half of RAM), so the free pages the balloon
# takes are resident on the host, then prints MemTotal and MemAvailable every second.
BALLOON_SCRIPT = f"""echo {INIT_START}
mount -t tmpfs -o size=100% fill /tmp
free=$(awk '/^MemFree:/ {{print int($2 / 1024)}}' /proc/meminfo)
dd if=/dev/zero of=/tmp/fill bs=1M count=$((free - 16)) 2>/dev/null
echo "FILLED $(($(stat -c %s /tmp/fill) >> 20)) MiB of $free MiB free"
rm -f /tmp/fill
umount /tmp
echo BALLOON-READY
while :; do
  echo "MEM $(awk '/^MemTotal:/ {{t = $2}} /^MemAvailable:/ {{a = $2}}
                  END {{print t, a}}' /proc/meminfo)"
  sleep 1
done
"""
MEM_LINE = re.compile(r"^MEM (\d+) (\d+)\r?$", re.M)


def mem_lines(t):
    """(MemTotal kB, MemAvailable kB) lines printed after the guest touched its memory."""
    _, _, after = t.partition("BALLOON-READY")
    return [(int(a), int(b)) for a, b in MEM_LINE.findall(after)]


def ram_rss(pid):
    """Resident bytes of the guest RAM mapping (the one mapping of BALLOON_MEM_MIB)."""
    maps = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
                maps.append({"Size": 0, "Rss": 0})
            elif key in ("Size", "Rss"):
                maps[-1][key] = int(rest.split()[0]) * 1024
    ram = [m["Rss"] for m in maps if m["Size"] == BALLOON_MEM_MIB * MIB]
    assert len(ram) == 1, maps
    return ram[0]


def balloon_stats(root, name):
    r = kap(root, "vm", "balloon", name, "--stats")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("accel", ACCELS)
def test_linux_balloon_inflate_stats_deflate(tmp_path, accel):
    need_accel(accel)
    root = tmp_path / "root"
    initrd = make_initramfs(tmp_path / "initrd.cpio", BALLOON_SCRIPT,
                            ["virtio_pci", "virtio_balloon"])
    proc, console = start(root, tmp_path, "bal", "vm", "run", *accel_args(accel), "--kernel",
                          kernel_for(accel, tmp_path), "--initrd", initrd,
                          "--mem", f"{BALLOON_MEM_MIB}M", "--cpus", "1",
                          "--balloon", "stats_interval_s=1", "--cmdline", CMDLINE)
    try:
        wait_console(proc, console, lambda t: len(mem_lines(t)) >= 2 and ready(root, "bal"),
                     BOOT_S, "MemTotal lines after the guest touched its memory")
        filled, free = map(int, re.search(r"FILLED (\d+) MiB of (\d+) MiB free",
                                          text(console)).groups())
        assert filled >= free - 24, f"the guest touched {filled} of its {free} MiB free"
        total0, avail0 = mem_lines(text(console))[-1]
        rss0 = ram_rss(proc.pid)
        assert rss0 > BALLOON_MEM_MIB // 2 * MIB, f"the guest RAM is not resident: {rss0 >> 20}"

        r = kap(root, "vm", "balloon", "bal", str(BALLOON_MIB))
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
        # The driver tells the device how many pages it holds (actual); then Linux's
        # accounting shows them gone: MemTotal exactly 64 MiB less.
        wait_for(lambda: balloon_stats(root, "bal").get("actual_mib") == BALLOON_MIB, 120,
                 what="the driver to inflate 64 MiB (actual_mib in the statistics)")
        total1 = total0 - BALLOON_MIB * 1024
        n = len(mem_lines(text(console)))
        wait_console(proc, console,
                     lambda t: len(mem_lines(t)) > n and mem_lines(t)[-1][0] == total1, 60,
                     f"MemTotal {total1} kB after the inflation (was {total0} kB)")
        _, avail1 = mem_lines(text(console))[-1]
        assert avail0 - avail1 >= (BALLOON_MIB - 8) * 1024, (avail0, avail1)
        # The pages went back to the host: the guest RAM mapping's Rss dropped. All but ~16
        # MiB of the guest's free memory was touched, but which free pages Linux's allocator
        # hands the driver is its own choice, so at least half the 64 MiB, not all of it.
        rss1 = ram_rss(proc.pid)
        assert rss0 - rss1 >= BALLOON_MIB // 2 * MIB, (rss0 >> 20, rss1 >> 20)

        # Statistics from Linux's driver: total memory as the guest now counts it (MemTotal,
        # the balloon excluded), free and available memory, the target reached.
        st = wait_for(lambda: (lambda s: s if s.get("total_memory") == total1 * 1024 else None)(
            balloon_stats(root, "bal")), 30, what="statistics with the new total_memory")
        assert st["target_mib"] == BALLOON_MIB and st["actual_pages"] == BALLOON_MIB * 256, st
        assert 0 < st["free_memory"] < total1 * 1024, st
        assert 0 < st["available_memory"] <= total1 * 1024, st
        assert st["inflated_pages_total"] >= BALLOON_MIB * 256, st
        r = kap(root, "vm", "balloon", "bal")
        assert r.returncode == 0 and json.loads(r.stdout)["amount_mib"] == BALLOON_MIB, r

        # Deflate: the guest takes its pages back and counts them again.
        r = kap(root, "vm", "balloon", "bal", "0")
        assert r.returncode == 0, r.stderr
        n = len(mem_lines(text(console)))
        wait_console(proc, console,
                     lambda t: len(mem_lines(t)) > n and mem_lines(t)[-1][0] == total0, 120,
                     f"MemTotal back at {total0} kB after the deflation")
        wait_for(lambda: balloon_stats(root, "bal").get("actual_pages") == 0, 60,
                 what="actual_pages 0 in the statistics")
        assert BANNER in text(console) and text(console).count(BANNER) == 1
        stop_clean(proc)
    finally:
        stop(proc)


# ---- snapshot and migration of a counting guest ----

# Counts on the serial console once a second. Each round writes the count to the virtio disk,
# syncs, drops the page cache and reads the count and a file written at boot back, so the
# disk's queues are used after every restore, not only the guest's memory.
COUNT_SCRIPT = f"""echo {INIT_START}
mkdir -p /mnt/disk
mount -t ext4 /dev/vda /mnt/disk || echo MOUNT-FAILED
echo written-before-the-snapshot >/mnt/disk/before
sync
i=0
while :; do
  i=$((i + 1))
  echo $i >/mnt/disk/count
  sync
  echo 3 >/proc/sys/vm/drop_caches
  echo "COUNT $i $(cat /mnt/disk/before) $(cat /mnt/disk/count)"
  sleep 1
done
"""
# Whole lines only: a pause may cut a line in two, its end then opens the next console.
COUNT_LINE = re.compile(r"^COUNT (\d+) (.*)\n", re.M)
COUNT_MODULES = ["virtio_pci", "virtio_blk", "ext4", "crc32c_generic"]


def count_lines(t):
    """[(count, the rest of its line)]."""
    return [(int(n), rest.rstrip("\r")) for n, rest in COUNT_LINE.findall(t)]


def counting_guest(tmp_path, root, name, accel):
    """Boots the counting guest with a fresh ext4 disk: (proc, console, disk args)."""
    if not shutil.which("mke2fs"):
        pytest.skip("needs mke2fs")
    disk = tmp_path / "disk.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", str(disk), "16M"], check=True)
    devices = ["--disk", f"{disk},format=raw"]
    initrd = make_initramfs(tmp_path / "initrd.cpio", COUNT_SCRIPT, COUNT_MODULES)
    proc, console = start(root, tmp_path, name, "vm", "run", *accel_args(accel), "--kernel",
                          kernel_for(accel, tmp_path), "--initrd", initrd,
                          "--mem", f"{MEM_MIB}M", "--cpus", "1", "--cmdline", CMDLINE, *devices)
    wait_console(proc, console, lambda t: len(count_lines(t)) >= 3 and ready(root, name),
                 BOOT_S, "three COUNT lines")
    assert "MOUNT-FAILED" not in text(console), text(console)[-3000:]
    return proc, console, devices


def check_goes_on(before, console, proc, what):
    """The guest on proc goes on counting from before's last count: no reboot, every round's
    disk write and read back intact."""
    last = count_lines(before)[-1][0]
    wait_console(proc, console, lambda t: len(count_lines(t)) >= 3, 120,
                 f"three COUNT lines {what}")
    t = text(console)
    got = count_lines(t)
    assert BANNER not in t and INIT_START not in t, f"the guest rebooted {what}:\n{t[-3000:]}"
    # The round in progress at the pause goes on: its line is the next count, or the one
    # after when the pause cut its line (that line then has no "COUNT" start here).
    assert got[0][0] in (last + 1, last + 2), f"{what} the count went on at {got[0][0]}, " \
        f"was {last}"
    assert [n for n, _ in got] == list(range(got[0][0], got[0][0] + len(got))), got
    for n, rest in got:
        assert rest == f"written-before-the-snapshot {n}", (n, rest, t[-3000:])
    # A pause the guest saw as lost time would show as a soft lockup (kvmclock's
    # PVCLOCK_GUEST_STOPPED tells Linux's watchdog it was stopped).
    assert "soft lockup" not in t, t[-3000:]


@pytest.mark.parametrize("accel", ACCELS)
def test_linux_snapshot_restore_goes_on_counting(tmp_path, accel):
    """The restore takes the accelerator from the snapshot."""
    need_accel(accel)
    root = tmp_path / "root"
    proc, console, devices = counting_guest(tmp_path, root, "src", accel)
    mem, state = tmp_path / "mem", tmp_path / "state"
    try:
        r = kap(root, "vm", "pause", "src")
        assert r.returncode == 0, r.stderr
        r = kap(root, "vm", "snapshot", "src", "--mem", str(mem), "--state", str(state))
        assert r.returncode == 0, r.stderr
        assert mem.stat().st_size == MEM_MIB * MIB
        stop_clean(proc)
    finally:
        stop(proc)
    before = text(console)
    assert count_lines(before), before[-3000:]

    # Without its disk the snapshot is refused before a guest runs, with one line, and
    # leaves no VM behind.
    r = kap(root, "vm", "restore", "--mem", str(mem), "--state", str(state), "--name", "nodisk",
            "--console", "none")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r
    assert "the snapshot has 1 virtio devices, this VM would have 0" in r.stderr, r.stderr
    assert not (root / "vm" / "nodisk").exists()

    dst, dcon = start(root, tmp_path, "dst", "vm", "restore", "--mem", str(mem), "--state",
                      str(state), *devices)
    try:
        check_goes_on(before, dcon, dst, "after the restore")
        stop_clean(dst)
    finally:
        stop(dst)


@pytest.mark.parametrize("accel", ACCELS)
def test_linux_live_migration_goes_on_counting(tmp_path, accel):
    need_accel(accel)
    root = tmp_path / "root"
    addr = f"unix:{tmp_path}/mig.sock"
    src, scon, devices = counting_guest(tmp_path, root, "src", accel)
    dst = None
    try:
        dst, dcon = start(root, tmp_path, "dst", "vm", "run", "--incoming", addr,
                          "--mem", f"{MEM_MIB}M", "--cpus", "1", *devices,
                          *accel_args(accel))
        wait_for(lambda: os.path.exists(addr[5:]) or dst.poll() is not None,
                 what="the destination's socket")
        assert dst.poll() is None, dst.communicate()
        r = kap(root, "vm", "migrate", "src", addr, timeout=300)
        assert r.returncode == 0, (r.stderr, stop(dst))
        assert re.search(r"migrated src to .*: rounds \d+, downtime \d+ ms", r.stdout), r.stdout
        # The source hands over and ends with status 0.
        _, err = src.communicate(timeout=60)
        assert src.returncode == 0, err
        assert "AddressSanitizer" not in err and "runtime error" not in err, err
        check_goes_on(text(scon), dcon, dst, "on the destination")
        stop_clean(dst)
    finally:
        stop(src)
        if dst:
            stop(dst)


# ---- a vsock connection across a live migration ----

VSOCK_SCRIPT = f"""echo {INIT_START}
/bin/vsock-peer echo 1234 &
while :; do sleep 1; done
"""


def vsock_line(s):
    return recv_line(s, timeout=60)  # a Linux guest in the nested runner answers slowly


@pytest.mark.parametrize("accel", ACCELS)
def test_linux_vsock_connection_survives_live_migration(tmp_path, accel):
    """A host process holds a vsock connection to a Linux guest's echo server (AF_VSOCK in the
    guest, Firecracker's CONNECT on the host) and echoes over it before, during and after a
    migration over unix:, on the same host socket: the guest's TCP-like stream goes on."""
    need_accel(accel)
    if not shutil.which("gcc"):
        pytest.skip("needs gcc (to build the static vsock-peer)")
    from test_vm_linux_virtio import PROGS
    peer = tmp_path / "vsock-peer"
    r = subprocess.run(["gcc", "-O2", "-static", "-o", str(peer),
                        os.path.join(PROGS, "vsock-peer.c")], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot build a static vsock-peer: {r.stderr}"
    initrd = make_initramfs(tmp_path / "initrd.cpio", VSOCK_SCRIPT,
                            ["virtio_pci", "vmw_vsock_virtio_transport"],
                            files=[("bin/vsock-peer", stat.S_IFREG | 0o755, peer.read_bytes())])
    root = tmp_path / "root"
    addr = f"unix:{tmp_path}/mig.sock"
    common = ["--mem", f"{MEM_MIB}M", "--cpus", "1", *accel_args(accel)]
    src, scon = start(root, tmp_path, "src", "vm", "run", "--kernel",
                      kernel_for(accel, tmp_path), "--initrd", initrd, "--cmdline", CMDLINE,
                      *common,
                      "--vsock", f"cid=3,socket={tmp_path}/src.vsock")
    dst = s = None
    try:
        wait_console(src, scon, lambda t: "vsock-peer: echoing on 1234" in t and
                     ready(root, "src"), BOOT_S, "the guest's vsock echo server")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(tmp_path / "src.vsock"))
        s.sendall(b"CONNECT 1234\n")
        ok = vsock_line(s)
        assert ok.startswith("OK "), ok
        s.sendall(b"before the migration\n")
        assert vsock_line(s) == "echo: before the migration\n"

        dst, dcon = start(root, tmp_path, "dst", "vm", "run", "--incoming", addr, *common,
                          "--vsock", f"cid=3,socket={tmp_path}/dst.vsock")
        wait_for(lambda: os.path.exists(addr[5:]) or dst.poll() is not None,
                 what="the destination's socket")
        assert dst.poll() is None, dst.communicate()
        mig = subprocess.Popen([KAPSEL, "--root", str(root), "vm", "migrate", "src", addr],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        s.sendall(b"during the migration\n")
        out, err = mig.communicate(timeout=300)
        assert mig.returncode == 0, (err, stop(dst))
        _, err = src.communicate(timeout=60)
        assert src.returncode == 0, err
        assert "AddressSanitizer" not in err and "runtime error" not in err, err
        assert vsock_line(s) == "echo: during the migration\n"
        for i in range(10):
            msg = f"after the migration {i} " + "y" * 400
            s.sendall(msg.encode() + b"\n")
            assert vsock_line(s) == f"echo: {msg}\n"
        assert dst.poll() is None, dst.communicate()
        s.shutdown(socket.SHUT_WR)
        assert vsock_line(s) == ""
        wait_console(dst, dcon, lambda t: "vsock-peer: closed after 12 lines" in t, 60,
                     "the guest's echo server to see the close")
        assert BANNER not in text(dcon)
        stop_clean(dst)
    finally:
        if s:
            s.close()
        stop(src)
        if dst:
            stop(dst)


# ---- a guest-initiated vsock connection across a snapshot restore ----

VSOCK_DIAL_SCRIPT = f"""echo {INIT_START}
until /bin/vsock-peer dial 2 5000; do sleep 1; done &
while :; do sleep 1; done
"""


def vsock_peer_initrd(tmp_path, script):
    """An initramfs with the static vsock-peer and the vsock modules (skips without gcc)."""
    if not shutil.which("gcc"):
        pytest.skip("needs gcc (to build the static vsock-peer)")
    from test_vm_linux_virtio import PROGS
    peer = tmp_path / "vsock-peer"
    r = subprocess.run(["gcc", "-O2", "-static", "-o", str(peer),
                        os.path.join(PROGS, "vsock-peer.c")], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot build a static vsock-peer: {r.stderr}"
    return make_initramfs(tmp_path / "initrd.cpio", script,
                          ["virtio_pci", "vmw_vsock_virtio_transport"],
                          files=[("bin/vsock-peer", stat.S_IFREG | 0o755, peer.read_bytes())])


def host_listener(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(1)
    return s


def accept_within(lst, timeout, proc, what):
    lst.settimeout(timeout)
    try:
        return lst.accept()[0]
    except socket.timeout:
        pytest.fail(f"no {what} within {timeout} s (kapsel running: {proc.poll() is None})")


@pytest.mark.parametrize("accel", ACCELS)
def test_linux_vsock_connection_survives_restore(tmp_path, accel):
    """A Linux guest connects over AF_VSOCK to a host listener (PATH_5000) and echoes lines on
    that connection. It is paused, saved and stopped (the host sees EOF) and restored with
    another --vsock path: the restored VMM connects to that path's listener, and the guest's
    socket, never closed or reset, goes on echoing there; a close from the host reaches it."""
    need_accel(accel)
    initrd = vsock_peer_initrd(tmp_path, VSOCK_DIAL_SCRIPT)
    root = tmp_path / "root"
    common = ["--mem", f"{MEM_MIB}M", "--cpus", "1", *accel_args(accel)]
    lst = host_listener(tmp_path / "src.vsock_5000")
    src, scon = start(root, tmp_path, "src", "vm", "run", "--kernel",
                      kernel_for(accel, tmp_path), "--initrd", initrd, "--cmdline", CMDLINE,
                      *common,
                      "--vsock", f"cid=3,socket={tmp_path}/src.vsock")
    dst = conn = None
    try:
        conn = accept_within(lst, BOOT_S, src, "connection from the guest")
        lst.close()
        wait_console(src, scon, lambda t: "vsock-peer: dialed 5000" in t and ready(root, "src"),
                     BOOT_S, "the guest's vsock connection")
        conn.sendall(b"before the snapshot\n")
        assert vsock_line(conn) == "echo: before the snapshot\n"
        mem, state = tmp_path / "mem", tmp_path / "state"
        r = kap(root, "vm", "pause", "src")
        assert r.returncode == 0, r.stderr
        r = kap(root, "vm", "snapshot", "src", "--mem", str(mem), "--state", str(state))
        assert r.returncode == 0, r.stderr
        stop_clean(src)
        # The snapshotted VMM took its end of the connection with it.
        assert vsock_line(conn) == ""
        conn.close()

        lst = host_listener(tmp_path / "dst.vsock_5000")
        dst, dcon = start(root, tmp_path, "dst", "vm", "restore", "--mem", str(mem),
                          "--state", str(state), "--vsock", f"cid=3,socket={tmp_path}/dst.vsock")
        conn = accept_within(lst, 120, dst, "reconnection from the restored VMM")
        for i in range(10):
            msg = f"after the restore {i} " + "r" * 400
            conn.sendall(msg.encode() + b"\n")
            assert vsock_line(conn) == f"echo: {msg}\n"
        assert dst.poll() is None, dst.communicate()
        conn.shutdown(socket.SHUT_WR)
        assert vsock_line(conn) == ""
        # One line before, ten after, on the one guest socket.
        wait_console(dst, dcon, lambda t: "vsock-peer: closed after 11 lines" in t, 60,
                     "the guest's socket to see the close")
        t = text(dcon)
        assert BANNER not in t and "dialed" not in t, t[-3000:]
        err = stop_clean(dst)
        assert "vsock0" not in err, err
    finally:
        lst.close()
        if conn:
            conn.close()
        stop(src)
        if dst:
            stop(dst)


# ---- the ACPI power button ----

# What acpid or systemd-logind does with KEY_POWER, in busybox: Linux's ACPI button driver
# (button.ko, bound to \_SB.PWRB) turns the GED's notification into an input event on the
# "Power Button" device; the first event on its evdev node powers the guest off.
PWRBTN_SCRIPT = f"""echo {INIT_START}
dev=
for e in /sys/class/input/event*; do
  grep -q "Power Button" $e/device/name 2>/dev/null && dev=/dev/input/${{e##*/}}
done
echo "PWRBTN-READY $dev"
dd if=$dev of=/dev/null bs=24 count=1 2>/dev/null && echo PWRBTN-EVENT && poweroff -f
while :; do sleep 1; done
"""


@pytest.mark.parametrize("accel", ACCELS)
def test_linux_powers_off_on_the_acpi_power_button(tmp_path, accel):
    """`vm stop` presses the ACPI power button: the guest's button driver reports KEY_POWER,
    its userspace powers off through \\_S5, and the VMM exits 0 without the fallback."""
    need_accel(accel)
    initrd = make_initramfs(tmp_path / "initrd.cpio", PWRBTN_SCRIPT, ["button", "evdev"])
    root = tmp_path / "root"
    proc, console = start(root, tmp_path, "pb", "vm", "run", *accel_args(accel), "--kernel",
                          kernel_for(accel, tmp_path), "--initrd", initrd,
                          "--mem", f"{MEM_MIB}M", "--cpus", "1",
                          "--cmdline", CMDLINE)
    try:
        wait_console(proc, console, lambda t: re.search(r"PWRBTN-READY /dev/input/event\d", t)
                     and ready(root, "pb"), BOOT_S, "the power button's input device")
        r = kap(root, "vm", "stop", "--timeout", "120", "pb", timeout=300)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "PWRBTN-EVENT" in text(console), text(console)[-3000:]
        assert "AddressSanitizer" not in err and "runtime error" not in err, err
        assert not (root / "vm" / "pb").exists()
    finally:
        stop(proc)
