"""Guest memory options and diff snapshots (docs/vm.md, Guest memory; Diff snapshots).

- `kapsel vm snapshot --diff` ({"snapshot_type": "Diff"}) writes only the pages the guest
  dirtied since the VM's last snapshot (KVM's dirty log) into a sparse memory file; copying its
  data extents onto the base memory file gives a memory file that restores the guest at the
  diff's point. A Diff without a Full snapshot before it is refused.
- `--mem-hugepages` puts RAM on reserved 2 MiB hugetlbfs pages and refuses, in one line, when
  HugePages_Free is too low. The tests never change vm.nr_hugepages.
- `--mem-merge` advises RAM MADV_MERGEABLE: the mapping carries VmFlags "mg" in smaps.
The guest is the multiboot test kernel's test=count (a line "count N clock MS" per 100 ms)."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import KAPSEL

BUILD = os.path.dirname(os.path.dirname(os.path.dirname(KAPSEL)))
GUESTS = os.environ.get("KAPSEL_GUESTS", os.path.join(BUILD, "tests", "guests"))
MULTIBOOT = os.path.join(GUESTS, "multiboot.elf")

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]

COUNT = re.compile(r"count (\d+) clock (\d+|-)\n")


def kap(root, *args, timeout=60):
    return subprocess.run([KAPSEL, "--root", str(root), *args], capture_output=True,
                          text=True, timeout=timeout)


def wait_for(pred, timeout=60, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def counts(path):
    try:
        return [int(n) for n, _ in COUNT.findall(path.read_text())]
    except FileNotFoundError:
        return []


def start(root, tmp_path, name, *args):
    if not os.path.exists(MULTIBOOT):
        pytest.fail(f"test kernel {MULTIBOOT} missing: build with meson/ninja first")
    console = tmp_path / f"console-{name}.txt"
    proc = subprocess.Popen(
        [KAPSEL, "--root", str(root), *args, "--name", name, "--console", f"file:{console}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, console


def run_count(root, tmp_path, name, *extra):
    return start(root, tmp_path, name, "vm", "run", "--kernel", MULTIBOOT, "--cmdline",
                 "test=count", *extra)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def pause(root, name, console):
    r = kap(root, "vm", "pause", name)
    assert r.returncode == 0, r.stderr
    time.sleep(0.3)
    return counts(console)[-1]


def merge(base, diff, out):
    """Copies base to out, then diff's data extents over it (Firecracker's rebase-snap)."""
    shutil.copyfile(base, out)
    with open(diff, "rb") as d, open(out, "r+b") as o:
        size = os.fstat(d.fileno()).st_size
        off = 0
        while off < size:
            try:
                data = os.lseek(d.fileno(), off, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after off
                break
            hole = os.lseek(d.fileno(), data, os.SEEK_HOLE)
            d.seek(data)
            o.seek(data)
            o.write(d.read(hole - data))
            off = hole


def test_diff_snapshot_writes_only_dirty_pages_and_restores(tmp_path, accel=()):
    root = tmp_path / "root"
    proc, console = run_count(root, tmp_path, "src", "--mem", "64M", *accel)
    try:
        wait_for(lambda: len(counts(console)) >= 3 or proc.poll() is not None,
                 what="the guest's count")
        assert proc.poll() is None, proc.communicate()
        pause(root, "src", console)
        full_mem, full_state = tmp_path / "full.mem", tmp_path / "full.state"
        # A Diff with no Full snapshot before it has no base: refused, in one line, no files.
        r = kap(root, "vm", "snapshot", "src", "--diff", "--mem", str(tmp_path / "d0.mem"),
                "--state", str(tmp_path / "d0.state"))
        assert r.returncode != 0, r
        assert "needs a Full snapshot" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not list(tmp_path.glob("d0*"))
        r = kap(root, "vm", "snapshot", "src", "--mem", str(full_mem), "--state",
                str(full_state))
        assert r.returncode == 0, r.stderr
        assert kap(root, "vm", "resume", "src").returncode == 0
        before = counts(console)[-1]
        wait_for(lambda: counts(console)[-1] >= before + 3 or proc.poll() is not None,
                 what="the count after the full snapshot")
        diff_at = pause(root, "src", console)
        assert diff_at >= before + 3
        diff_mem, diff_state = tmp_path / "diff.mem", tmp_path / "diff.state"
        r = kap(root, "vm", "snapshot", "src", "--diff", "--mem", str(diff_mem), "--state",
                str(diff_state))
        assert r.returncode == 0, r.stderr
        assert not list(tmp_path.glob("*.partial"))
    finally:
        stop(proc)
    full, diff = full_mem.stat(), diff_mem.stat()
    assert diff.st_size == full.st_size == 64 << 20
    # The guest wrote a few pages (its stack, the counter, page tables' A/D bits) between the
    # two snapshots: the diff holds those, the full file every page the guest ever touched.
    assert 0 < diff.st_blocks * 512 <= 1 << 20, (diff.st_blocks, full.st_blocks)
    assert diff.st_blocks * 8 < full.st_blocks, (diff.st_blocks, full.st_blocks)

    merged = tmp_path / "merged.mem"
    merge(full_mem, diff_mem, merged)
    proc, console = start(tmp_path / "root2", tmp_path, "dst", "vm", "restore", "--mem",
                          str(merged), "--state", str(diff_state))
    try:
        wait_for(lambda: len(counts(console)) >= 2 or proc.poll() is not None,
                 what="the restored guest's count")
        assert proc.poll() is None, proc.communicate()
        got = counts(console)
        assert "multiboot guest" not in console.read_text()
        # It continues from the diff's point, not the full snapshot's (nor from 0).
        assert got[0] > diff_at, (diff_at, got)
    finally:
        stop(proc)


def test_snapshot_type_is_checked(tmp_path):
    root = tmp_path / "root"
    proc, console = run_count(root, tmp_path, "t", "--mem", "16M")
    try:
        wait_for(lambda: len(counts(console)) >= 1 or proc.poll() is not None,
                 what="the guest's count")
        pause(root, "t", console)
        sock = root / "vm" / "t" / "api.sock"
        body = ('{"mem_file_path": "%s", "snapshot_path": "%s", "snapshot_type": "Partial"}'
                % (tmp_path / "m", tmp_path / "s"))
        text, code = api_put(sock, "/snapshot/create", body)
        assert code == 400, text
        assert "snapshot_type" in text and "Partial" in text, text
        assert not (tmp_path / "m").exists()
    finally:
        stop(proc)


def api_put(sock, path, body):
    """PUT body to the control API on sock: (response body, HTTP status)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(str(sock))
    data = body.encode()
    s.sendall(b"PUT %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
              % (path.encode(), len(data), data))
    resp = b""
    while chunk := s.recv(65536):
        resp += chunk
    s.close()
    head, _, text = resp.decode().partition("\r\n\r\n")
    return text, int(head.split()[1])


def hugepages_free():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("HugePages_Free:"):
                return int(line.split()[1])
    return None


def test_mem_hugepages_refuses_when_too_few_are_free(tmp_path):
    free = hugepages_free()
    if free is None:
        pytest.skip("no HugePages_Free in /proc/meminfo (kernel without hugetlbfs)")
    # One 2 MiB page more than the pool has free: always too many.
    mem = (free + 1) * 2
    root = tmp_path / "root"
    r = kap(root, "vm", "run", "--kernel", MULTIBOOT, "--cmdline", "test=count", "--mem",
            f"{mem}M", "--mem-hugepages", "--console", "none", "--name", "h")
    assert r.returncode == 1, r
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert f"needs {free + 1} 2 MiB huge pages" in err, err
    assert f"HugePages_Free in /proc/meminfo is {free}" in err, err
    # Nothing left behind: no API socket, no VM listed.
    assert not (root / "vm" / "h" / "api.sock").exists()
    assert hugepages_free() == free


def test_mem_hugepages_in_the_config_file(tmp_path):
    free = hugepages_free()
    if free is None:
        pytest.skip("no HugePages_Free in /proc/meminfo (kernel without hugetlbfs)")
    cfg = tmp_path / "vm.json"
    cfg.write_text('{"kernel": "%s", "mem": "%dM", "mem_hugepages": true, "console": "none"}'
                   % (MULTIBOOT, (free + 1) * 2))
    r = kap(tmp_path / "root", "vm", "run", "--config", str(cfg))
    assert r.returncode == 1, r
    assert f"needs {free + 1} 2 MiB huge pages" in r.stderr, r.stderr


def test_mem_hugepages_rejects_a_size_not_a_multiple_of_2m(tmp_path):
    r = kap(tmp_path / "root", "vm", "run", "--kernel", MULTIBOOT, "--mem", "3M",
            "--mem-hugepages", "--console", "none")
    assert r.returncode == 1, r
    assert "not a multiple of the 2 MiB huge page size" in r.stderr, r.stderr


def test_mem_hugepages_runs_the_guest(tmp_path):
    need = 16 // 2
    free = hugepages_free()
    if free is None or free < need:
        pytest.skip(f"needs {need} free 2 MiB huge pages (HugePages_Free is {free}); "
                    "the test does not change vm.nr_hugepages")
    root = tmp_path / "root"
    proc, console = run_count(root, tmp_path, "hp", "--mem", "16M", "--mem-hugepages")
    try:
        wait_for(lambda: len(counts(console)) >= 2 or proc.poll() is not None,
                 what="the guest's count")
        assert proc.poll() is None, proc.communicate()
        assert hugepages_free() <= free - need
    finally:
        stop(proc)


def ram_vmflags(pid, size):
    """The VmFlags of pid's mapping of exactly size bytes (guest RAM)."""
    flags, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
            if m:
                cur = int(m.group(2), 16) - int(m.group(1), 16)
            elif line.startswith("VmFlags:") and cur == size:
                flags.append(line.split()[1:])
    return flags


@pytest.mark.parametrize("merge_opt", [True, False])
def test_mem_merge_marks_ram_mergeable(tmp_path, merge_opt):
    if merge_opt and not os.path.exists("/sys/kernel/mm/ksm"):
        pytest.skip("kernel without KSM (no /sys/kernel/mm/ksm)")
    size = 48 << 20
    root = tmp_path / "root"
    proc, console = run_count(root, tmp_path, "m", "--mem", "48M",
                              *(["--mem-merge"] if merge_opt else []))
    try:
        wait_for(lambda: len(counts(console)) >= 1 or proc.poll() is not None,
                 what="the guest's count")
        assert proc.poll() is None, proc.communicate()
        flags = ram_vmflags(proc.pid, size)
        assert flags, "no 48 MiB mapping (guest RAM) in smaps"
        assert any("mg" in f for f in flags) == merge_opt, flags
    finally:
        stop(proc)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("stride,passes", [(4096, 3), (64, 1)])
def test_memwalk_guest_passes(tmp_path, shared, stride, passes):
    """bench/vm-mem's guest (test=memwalk): P passes over N MiB, one write every S bytes,
    each word checked; on default RAM and on --mem-shared."""
    r = subprocess.run([KAPSEL, "vm", "run", "--kernel", MULTIBOOT, "--mem", "32M", "--console",
                        "stdio", "--cmdline", f"test=memwalk mb=2 passes={passes} stride={stride}",
                        *(["--mem-shared"] if shared else [])],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 85, r.stdout + r.stderr
    assert f"memwalk: 2 MiB, {passes} passes, stride {stride}" in r.stdout, r.stdout


@pytest.mark.parametrize("args,why", [
    ("mb=17", "memwalk: mb=N does not fit above 16 MiB"),
    ("mb=0", "memwalk: mb=N does not fit above 16 MiB"),
    ("mb=1 stride=48", "memwalk: stride is not a power of two"),
])
def test_memwalk_guest_refuses_bad_arguments(args, why):
    """The walk stays inside RAM: a size past the end of a 32 MiB guest fails, not faults."""
    r = subprocess.run([KAPSEL, "vm", "run", "--kernel", MULTIBOOT, "--mem", "32M", "--console",
                        "stdio", "--cmdline", f"test=memwalk {args}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stdout + r.stderr  # debug-exit 1: the guest's FAIL
    assert why in r.stdout, r.stdout
