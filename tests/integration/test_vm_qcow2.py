"""qcow2 disks (issue 6, item 4): `kapsel vm disk create`, and the multiboot test kernel's
virtio-blk test (tests/guests/virtio.h) on qcow2 images and overlays. The host then checks
every image with `qemu-img check` and compares its contents (`qemu-img convert -O raw`) with
what the guest wrote. PASS is exit status 85, as in test_vm.py.

Issue 10: a disk without format= is raw (a qcow2 header in it is the guest's data), backing
files resolve beneath the image's directory with a recorded format, and bad input is refused
before /dev/kvm is opened, so those tests run on hosts without KVM too."""
import os
import shutil
import subprocess

import pytest

from conftest import KAPSEL
from test_vm import MULTIBOOT, PASS, mb, guests  # noqa: F401  (guests: module fixture)

QEMU_IMG = shutil.which("qemu-img")
needs_qemu_img = pytest.mark.skipif(QEMU_IMG is None, reason="needs qemu-img (qemu-utils)")


def kapsel_run(kapsel, *args):
    return subprocess.run([kapsel, *args], capture_output=True, text=True, timeout=60)


def qemu_img(*args):
    return subprocess.run([QEMU_IMG, *args], capture_output=True, text=True, timeout=60)


def check(path):
    r = qemu_img("check", str(path))
    assert r.returncode == 0 and "No errors were found" in r.stdout, r.stdout + r.stderr
    assert "leaked" not in r.stdout, r.stdout


def to_raw(path, tmp_path):
    out = tmp_path / (path.name + ".raw")
    r = qemu_img("convert", "-O", "raw", str(path), str(out))
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


def guest(test, *args):
    # The guest's driver is virtio-mmio's; the default transport is pci.
    return mb(test, "--transport", "mmio", *args)


def base_bytes():
    data = bytearray(1 << 20)
    data[0:11] = b"KAPSEL-DISK"
    data[9 * 512:10 * 512] = b"\xaa" * 512
    data[100 * 512:101 * 512] = b"\x55" * 512
    return data


def expect_after_guest(base):
    """What test_blk leaves: the pattern in sectors 1-8, sector 9 zeroed (write-zeroes)."""
    data = bytearray(base)
    for s in range(8):
        for i in range(512):
            data[512 * (s + 1) + i] = (i * 7 + s + 1) & 0xff
    data[9 * 512:10 * 512] = bytes(512)
    return bytes(data)


# ---- kapsel vm disk create ----

@needs_qemu_img
def test_disk_create(kapsel, tmp_path):
    img = tmp_path / "new.qcow2"
    r = kapsel_run(kapsel, "vm", "disk", "create", str(img), "3G")
    assert r.returncode == 0, r.stderr
    # It says how to use the image: without format= a disk is raw.
    assert f"--disk {img},format=qcow2" in r.stdout, r.stdout
    check(img)
    info = qemu_img("info", "--output=json", str(img)).stdout
    assert '"virtual-size": 3221225472' in info and '"format": "qcow2"' in info
    assert '"cluster-size": 65536' in info and '"compat": "1.1"' in info
    assert '"refcount-bits": 16' in info
    # An existing file is not overwritten.
    r = kapsel_run(kapsel, "vm", "disk", "create", str(img), "1G")
    assert r.returncode == 1 and "File exists" in r.stderr


@needs_qemu_img
def test_disk_create_backing(kapsel, tmp_path):
    (tmp_path / "base.raw").write_bytes(bytes(2 << 20))
    img = tmp_path / "overlay.qcow2"
    r = kapsel_run(kapsel, "vm", "disk", "create", "--backing", "base.raw", str(img))
    assert r.returncode == 0, r.stderr
    assert "overlay over base.raw (raw)" in r.stdout and f"{img},format=qcow2" in r.stdout
    check(img)
    info = qemu_img("info", "--output=json", str(img)).stdout
    assert '"backing-filename": "base.raw"' in info
    assert '"backing-filename-format": "raw"' in info
    assert '"virtual-size": 2097152' in info
    top = tmp_path / "top.qcow2"
    r = kapsel_run(kapsel, "vm", "disk", "create", "--backing", "overlay.qcow2", str(top), "4M")
    assert r.returncode == 0, r.stderr
    info = qemu_img("info", "--output=json", str(top)).stdout
    assert '"backing-filename-format": "qcow2"' in info and '"virtual-size": 4194304' in info
    # --backing-format pins the format recorded; a subdirectory beneath is fine.
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.img").write_bytes(bytes(1 << 20))
    pinned = tmp_path / "pinned.qcow2"
    r = kapsel_run(kapsel, "vm", "disk", "create", "--backing", "sub/b.img",
                   "--backing-format", "raw", str(pinned))
    assert r.returncode == 0, r.stderr
    info = qemu_img("info", "--output=json", str(pinned)).stdout
    assert '"backing-filename": "sub/b.img"' in info
    assert '"backing-filename-format": "raw"' in info


@pytest.mark.parametrize("args,msg", [
    (["x.qcow2"], "requires"),
    (["x.qcow2", "12Q"], "invalid size"),
    (["--backing", "missing.raw", "x.qcow2"], "missing.raw: No such file or directory"),
    (["nodir/x.qcow2", "1M"], "No such file or directory"),
    # Issue 10: the backing name is relative to FILE's directory and beneath it.
    (["--backing", "/etc/shadow", "x.qcow2"], '"/etc/shadow" is an absolute path'),
    (["--backing", "../x.raw", "x.qcow2"], 'has a ".." component'),
    (["--backing", "x.raw", "--backing-format", "vmdk", "y.qcow2"],
     'backing format "vmdk" is not raw or qcow2'),
    (["--backing-format", "raw", "x.qcow2", "1M"], "--backing-format needs --backing"),
])
def test_disk_create_errors(kapsel, tmp_path, args, msg):
    r = subprocess.run([kapsel, "vm", "disk", "create", *args], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 1 and msg in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ---- the guest on qcow2 ----

@needs_qemu_img
@pytest.mark.parametrize("compat,cluster", [("1.1", "65536"), ("0.10", "4096"),
                                            ("1.1", "512"), ("1.1", "2M")])
@pytest.mark.parametrize("cache", ["writeback", "none"])
def test_guest_qcow2(tmp_path, compat, cluster, cache):
    if not os.path.exists("/dev/kvm"):
        pytest.skip("needs /dev/kvm")
    raw = tmp_path / "src.raw"
    base = base_bytes()
    raw.write_bytes(base)
    img = tmp_path / "disk.qcow2"
    r = qemu_img("convert", "-f", "raw", "-O", "qcow2", "-o",
                 f"compat={compat},cluster_size={cluster}", str(raw), str(img))
    assert r.returncode == 0, r.stderr
    r = guest("blk mode=rw serial=q", "--disk", f"{img},serial=q,cache={cache},format=qcow2")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "blk: sector 0: KAPSEL-DISK" in r.stdout and "blk ok" in r.stdout
    assert f"blk: capacity {len(base) // 512} sectors" in r.stdout
    check(img)
    assert to_raw(img, tmp_path) == expect_after_guest(base)


@needs_qemu_img
@pytest.mark.parametrize("base_fmt", ["raw", "qcow2"])
def test_guest_overlay(kapsel, tmp_path, base_fmt):
    if not os.path.exists("/dev/kvm"):
        pytest.skip("needs /dev/kvm")
    (tmp_path / "b").mkdir()
    base = base_bytes()
    (tmp_path / "b" / "base.raw").write_bytes(base)
    name = "base.raw"
    if base_fmt == "qcow2":
        r = qemu_img("convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "b" / "base.raw"),
                     str(tmp_path / "b" / "base.qcow2"))
        assert r.returncode == 0, r.stderr
        name = "base.qcow2"
    before = (tmp_path / "b" / name).read_bytes()
    ov = tmp_path / "b" / "overlay.qcow2"
    r = kapsel_run(kapsel, "vm", "disk", "create", "--backing", name, str(ov))
    assert r.returncode == 0, r.stderr
    # Run from elsewhere: the relative backing name resolves against the overlay's directory.
    r = guest("blk mode=rw serial=o", "--disk", f"{ov},serial=o,format=qcow2")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "blk: sector 0: KAPSEL-DISK" in r.stdout and "blk ok" in r.stdout
    assert (tmp_path / "b" / name).read_bytes() == before, "the base was written"
    check(ov)
    assert to_raw(ov, tmp_path) == expect_after_guest(base)


@needs_qemu_img
def test_guest_qcow2_read_only(tmp_path):
    if not os.path.exists("/dev/kvm"):
        pytest.skip("needs /dev/kvm")
    raw = tmp_path / "src.raw"
    raw.write_bytes(base_bytes())
    img = tmp_path / "ro.qcow2"
    assert qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(img)).returncode == 0
    before = img.read_bytes()
    r = guest("blk mode=ro", "--disk", f"{img},ro,format=qcow2")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "write refused" in r.stdout
    assert img.read_bytes() == before


@needs_qemu_img
def test_hostile_image_refused_before_boot(tmp_path):
    """Refused before /dev/kvm is opened: the same error on a host without KVM."""
    img = tmp_path / "bad.qcow2"
    assert qemu_img("create", "-q", "-f", "qcow2", str(img), "1M").returncode == 0
    with open(img, "r+b") as f:
        f.seek(40)  # l1_table_offset: past the end of the file
        f.write((1 << 40).to_bytes(8, "big"))
    r = guest("pass", "--disk", f"{img},format=qcow2")
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "L1 table at 0x10000000000" in r.stderr and "past the end of the file" in r.stderr
    assert "multiboot guest" not in r.stdout
    loop = tmp_path / "loop.qcow2"
    assert qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "loop.qcow2", "-F", "qcow2",
                    str(loop), "1M").returncode == 0
    r = guest("pass", "--disk", f"{loop},format=qcow2")
    assert r.returncode == 1 and "backing file loop" in r.stderr, r.stderr


@needs_qemu_img
def test_format_option(tmp_path):
    """Without format= a disk is raw (a qcow2 magic gets a warning); format=auto probes;
    format=raw pins raw; format=qcow2 insists on the magic."""
    if not os.path.exists("/dev/kvm"):
        pytest.skip("needs /dev/kvm")
    img = tmp_path / "magic.raw"
    img.write_bytes(b"QFI\xfb" + bytes((1 << 20) - 4))
    r = guest("pass", "--disk", str(img))
    assert r.returncode == PASS, r.stdout + r.stderr
    assert f"disk {img}: starts with a qcow2 header but is used raw" in r.stderr, r.stderr
    assert "add format=qcow2" in r.stderr
    r = guest("pass", "--disk", f"{img},format=raw")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "qcow2 header" not in r.stderr
    raw = tmp_path / "plain.raw"
    raw.write_bytes(bytes(4096))
    r = guest("pass", "--disk", f"{raw},format=auto")
    assert r.returncode == PASS, r.stdout + r.stderr


@pytest.mark.parametrize("arg,msg", [
    ("{img},format=auto", "unsupported qcow2 version 0"),
    ("{raw},format=qcow2", "not a qcow2 image (bad magic)"),
    ("{raw},format=vmdk", 'unknown option "format=vmdk"'),
])
def test_format_errors_before_kvm(tmp_path, arg, msg):
    """Refused before /dev/kvm is opened: no KVM needed."""
    img = tmp_path / "magic.raw"
    img.write_bytes(b"QFI\xfb" + bytes((1 << 20) - 4))
    raw = tmp_path / "plain.raw"
    raw.write_bytes(bytes(4096))
    r = guest("pass", "--disk", arg.format(img=img, raw=raw))
    assert r.returncode == 1 and msg in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# ---- issue 10: a guest-written qcow2 header, and backing files beneath the image ----

def hostile_header(tmp_path, backing, fmt="raw"):
    """A raw 1 MiB disk whose first bytes are a qcow2 header naming backing as its base, as a
    guest could write into its own raw disk. qemu-img -u: the base is not opened."""
    hdr = tmp_path / "hdr.qcow2"
    r = qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", fmt or "raw",
                 str(hdr), "1M")
    assert r.returncode == 0, r.stderr
    disk = tmp_path / "guest.raw"
    data = bytearray(hdr.read_bytes())
    if not fmt:
        # No backing format: its extension's type becomes the end of the extension list.
        at = data.find(b"\xe2\x79\x2a\xca")
        assert at > 0
        data[at:at + 4] = bytes(4)
    disk.write_bytes(data + bytes((1 << 20) - len(data)))
    return disk


@needs_qemu_img
def test_guest_written_header_served_raw(tmp_path):
    """The attack of issue 10: the raw disk's first sector is a qcow2 header whose backing file
    is /etc/shadow. Without format= the disk stays raw: the guest reads the header bytes back
    and its capacity is the raw file's, and kapsel never opens /etc/shadow (strace)."""
    if not os.path.exists("/dev/kvm"):
        pytest.skip("needs /dev/kvm")
    disk = hostile_header(tmp_path, "/etc/shadow")
    cmd = [KAPSEL, "vm", "run", "--kernel", MULTIBOOT, "--cmdline", "test=blk mode=ro",
           "--transport", "mmio", "--disk", f"{disk},ro"]
    trace = tmp_path / "strace.log"
    if shutil.which("strace"):
        cmd = ["strace", "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", str(trace),
               *cmd]
    # LeakSanitizer cannot run under ptrace: off for this run of a sanitized build.
    env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
                       env=env)
    out, err = r.stdout, r.stderr.decode(errors="replace")
    assert r.returncode == PASS, out.decode(errors="replace") + err
    assert b"blk: capacity 2048 sectors" in out, out
    assert b"blk: sector 0: QFI\xfb\n" in out, out
    assert f"disk {disk}: starts with a qcow2 header but is used raw" in err, err
    if shutil.which("strace"):
        log = trace.read_text()
        assert str(disk) in log, "strace saw no open of the disk: the check would be empty"
        assert "/etc/shadow" not in log, log


@needs_qemu_img
@pytest.mark.parametrize("backing,fmt,msg", [
    ("/etc/shadow", "raw", '"/etc/shadow" is an absolute path'),
    ("../outside.raw", "raw", 'has a ".." component'),
    ("d/../../outside.raw", "raw", 'has a ".." component'),
    ("link.raw", "raw", "link.raw: resolves outside the image's directory"),
    ("null", "raw", "null: not a regular file"),
    ("base.raw", None, 'backing file "base.raw" has no backing format (header extension '
                       '0xe2792aca)'),
])
def test_backing_refused_before_kvm(tmp_path, backing, fmt, msg):
    """format=auto (and format=qcow2) on such a header: refused with one line naming the file
    and the reason, before /dev/kvm is opened, and the named file is never opened."""
    d = tmp_path / "img"
    d.mkdir()
    (tmp_path / "outside.raw").write_bytes(bytes(4096))
    (d / "base.raw").write_bytes(bytes(4096))
    os.symlink("/etc/shadow", d / "link.raw")
    os.mkfifo(d / "null")  # a FIFO: opening it for reading would block
    disk = hostile_header(d, backing, fmt)
    for f in ("auto", "qcow2"):
        r = guest("pass", "--disk", f"{disk},ro,format={f}")
        assert r.returncode == 1 and msg in r.stderr, r.stderr
        assert str(disk) in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "multiboot guest" not in r.stdout


@needs_qemu_img
def test_overlay_beneath_subdirectory(kapsel, tmp_path):
    """A base in a subdirectory of the overlay's directory opens, from any working directory."""
    if not os.path.exists("/dev/kvm"):
        pytest.skip("needs /dev/kvm")
    (tmp_path / "b" / "bases").mkdir(parents=True)
    base = base_bytes()
    (tmp_path / "b" / "bases" / "base.raw").write_bytes(base)
    ov = tmp_path / "b" / "ov.qcow2"
    r = kapsel_run(kapsel, "vm", "disk", "create", "--backing", "bases/base.raw",
                   "--backing-format", "raw", str(ov))
    assert r.returncode == 0, r.stderr
    r = guest("blk mode=ro", "--disk", f"{ov},ro,format=qcow2")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "blk: sector 0: KAPSEL-DISK" in r.stdout
