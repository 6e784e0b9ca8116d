"""Issue 10: every input of `kapsel vm run` (kernel, initrd, disks with their qcow2 headers and
backing chains, network interfaces, vCPU count, CPU features) is checked before /dev/kvm is
opened, so bad input gets the same one-line error on a host without KVM. These tests need no
KVM: each case runs as the host is, and again in a private mount namespace whose /dev has no
kvm node (a tmpfs over /dev there, holding binds of the host's other entries; the host's /dev
is not touched)."""
import os
import shutil
import subprocess

import pytest

from conftest import KAPSEL
from test_vm import MULTIBOOT, guests  # noqa: F401  (guests: module fixture)

# Runs "$@" with /dev/kvm absent. $1 is a scratch directory for the host's /dev. The new /dev
# holds what a VMM may touch besides kvm (binds of the host's nodes; the host's /dev is not
# touched): a fixed list rather than every entry, since a bind per node of a full devtmpfs
# takes tens of seconds where process creation is slow (the nested test runner's TCG guest).
HIDE_KVM = r'''
set -e
real=$1; shift
mount --rbind /dev "$real"
mount -t tmpfs -o mode=755 kapsel-test-dev /dev
for n in null zero full random urandom tty ptmx net pts shm; do
    e=$real/$n
    [ -e "$e" ] || [ -L "$e" ] || continue
    if [ -L "$e" ]; then cp -a "$e" "/dev/$n"
    elif [ -d "$e" ]; then mkdir "/dev/$n"; mount --rbind "$e" "/dev/$n"
    else touch "/dev/$n"; mount --bind "$e" "/dev/$n"; fi
done
ln -s /proc/self/fd /dev/fd
exec "$@"
'''


def can_hide_kvm():
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def run(args, hide_kvm=False, tmp_path=None):
    cmd = [KAPSEL, "vm", "run", *args]
    if hide_kvm:
        real = tmp_path / "host-dev"
        real.mkdir(exist_ok=True)
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", HIDE_KVM, "sh",
               str(real), *cmd]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)


def runs(args, tmp_path):
    """The run as the host is, and, where /dev/kvm exists and can be hidden, without it."""
    out = [run(args)]
    if os.path.exists("/dev/kvm"):
        if not can_hide_kvm():
            pytest.skip("hiding /dev/kvm needs root and unshare(1) (util-linux)")
        out.append(run(args, True, tmp_path))
    return out


def inputs(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(10000))
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    qcow = tmp_path / "bad.qcow2"
    r = subprocess.run([KAPSEL, "vm", "disk", "create", str(qcow), "1M"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with open(qcow, "r+b") as f:
        f.seek(4)
        f.write((7).to_bytes(4, "big"))  # version 7
    return dict(junk=junk, empty=empty, qcow=qcow, mb=MULTIBOOT, tmp=tmp_path)


@pytest.mark.parametrize("args,msg", [
    (["--kernel", "{junk}"], "kernel {junk}: unrecognised kernel format"),
    (["--kernel", "{empty}"], "kernel {empty}: empty file"),
    (["--kernel", "{tmp}/missing"], "kernel {tmp}/missing: No such file or directory"),
    (["--kernel", "{mb}", "--initrd", "{tmp}/missing"],
     "initrd {tmp}/missing: No such file or directory"),
    (["--kernel", "{mb}", "--cpus", "65"], "--cpus 65: kapsel supports at most 64 vCPUs"),
    (["--kernel", "{mb}", "--cpu-features", "-bogus"], 'unknown feature "bogus"'),
    (["--kernel", "{mb}", "--net", "tap=kapnotap0"], "tap kapnotap0: no such network interface"),
    (["--kernel", "{mb}", "--net", "bridge=kapnobr0"],
     "bridge kapnobr0: no such network interface"),
    (["--kernel", "{mb}", "--disk", "{tmp}/missing"], "disk {tmp}/missing: No such file"),
    (["--kernel", "{mb}", "--disk", "{tmp}"], "disk {tmp}: Is a directory"),
    (["--kernel", "{mb}", "--disk", "{qcow},format=qcow2"], "unsupported qcow2 version 7"),
    (["--kernel", "{mb}", "--disk", "{qcow},format=auto"], "unsupported qcow2 version 7"),
])
def test_bad_input_same_error_without_kvm(tmp_path, args, msg):
    f = inputs(tmp_path)
    args = [a.format(**f) for a in args]
    msg = msg.format(**f)
    for r in runs(args, tmp_path):
        assert r.returncode == 1, r.stdout + r.stderr
        assert msg in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "/dev/kvm" not in r.stderr


def test_no_kvm_is_one_clear_line(tmp_path):
    """Good input on a host without /dev/kvm, asking for KVM: one line that says so. (The
    default, --accel auto, runs on the soft CPU there instead: test_vm_soft.py.)"""
    if os.path.exists("/dev/kvm"):
        if not can_hide_kvm():
            pytest.skip("hiding /dev/kvm needs root and unshare(1) (util-linux)")
        r = run(["--accel", "kvm", "--kernel", MULTIBOOT], True, tmp_path)
    else:
        r = run(["--accel", "kvm", "--kernel", MULTIBOOT])
    assert r.returncode == 1
    assert r.stderr.startswith("kapsel: open /dev/kvm: "), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_vm_json_disk_format(tmp_path):
    """vm.json "disks" take format= as --disk does; a bad image is refused before KVM."""
    f = inputs(tmp_path)
    for fmt in ("qcow2", "auto"):
        cfg = tmp_path / f"vm-{fmt}.json"
        cfg.write_text('{"kernel": "%s", "disks": ["%s,format=%s"]}' % (MULTIBOOT, f["qcow"], fmt))
        for r in runs(["--config", str(cfg)], tmp_path):
            assert r.returncode == 1 and "unsupported qcow2 version 7" in r.stderr, r.stderr
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    cfg = tmp_path / "vm-bad.json"
    cfg.write_text('{"kernel": "%s", "disks": ["%s,format=vmdk"]}' % (MULTIBOOT, f["qcow"]))
    r = run(["--config", str(cfg)])
    assert r.returncode == 1 and 'disks[0]: --disk' in r.stderr, r.stderr
    assert 'unknown option "format=vmdk"' in r.stderr and "format=raw|qcow2|auto" in r.stderr


def test_cache_none_on_a_filesystem_without_direct_io(tmp_path):
    """cache=none opens the disk with O_DIRECT; a filesystem that cannot do direct I/O (ramfs
    here; tmpfs before Linux 6.6, as in the nested test runner's guest) gets a line that says
    so, not a bare "Invalid argument"."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("mounting a scratch ramfs needs root and unshare(1) (util-linux)")
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    script = ('set -e; mount -t ramfs kapsel-test "$1"; head -c 1048576 /dev/zero >"$1/d.img"; '
              'shift; exec "$@"')
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                        str(mnt), KAPSEL, "vm", "run", "--kernel", MULTIBOOT, "--disk",
                        f"{mnt}/d.img,cache=none"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"disk {mnt}/d.img: cache=none needs O_DIRECT" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
