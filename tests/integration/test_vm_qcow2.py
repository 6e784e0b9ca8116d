"""qcow2 disks (issue 6, item 4): `kapsel vm disk create`, and the multiboot test kernel's
virtio-blk test (tests/guests/virtio.h) on qcow2 images and overlays. The host then checks
every image with `qemu-img check` and compares its contents (`qemu-img convert -O raw`) with
what the guest wrote. PASS is exit status 85, as in test_vm.py."""
import os
import shutil
import subprocess

import pytest

from test_vm import PASS, mb, guests  # noqa: F401  (guests: module fixture)

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


@pytest.mark.parametrize("args,msg", [
    (["x.qcow2"], "requires"),
    (["x.qcow2", "12Q"], "invalid size"),
    (["--backing", "missing.raw", "x.qcow2"], "missing.raw: No such file or directory"),
    (["nodir/x.qcow2", "1M"], "No such file or directory"),
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
    r = guest("blk mode=rw serial=q", "--disk", f"{img},serial=q,cache={cache}")
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
    r = guest("blk mode=rw serial=o", "--disk", f"{ov},serial=o")
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
    r = guest("blk mode=ro", "--disk", f"{img},ro")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "write refused" in r.stdout
    assert img.read_bytes() == before


@needs_qemu_img
def test_hostile_image_refused_before_boot(tmp_path):
    img = tmp_path / "bad.qcow2"
    assert qemu_img("create", "-q", "-f", "qcow2", str(img), "1M").returncode == 0
    with open(img, "r+b") as f:
        f.seek(40)  # l1_table_offset: past the end of the file
        f.write((1 << 40).to_bytes(8, "big"))
    r = guest("pass", "--disk", str(img))
    assert r.returncode == 1
    assert "L1 table at 0x10000000000" in r.stderr and "past the end of the file" in r.stderr
    assert "multiboot guest" not in r.stdout
    loop = tmp_path / "loop.qcow2"
    assert qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "loop.qcow2", "-F", "qcow2",
                    str(loop), "1M").returncode == 0
    r = guest("pass", "--disk", str(loop))
    assert r.returncode == 1 and "backing file loop" in r.stderr, r.stderr


@needs_qemu_img
def test_format_option(tmp_path):
    """format=raw pins raw: a qcow2 header in a raw disk is the guest's data, not an image."""
    if not os.path.exists("/dev/kvm"):
        pytest.skip("needs /dev/kvm")
    img = tmp_path / "magic.raw"
    img.write_bytes(b"QFI\xfb" + bytes((1 << 20) - 4))
    r = guest("pass", "--disk", str(img))
    assert r.returncode == 1 and "unsupported qcow2 version 0" in r.stderr, r.stderr
    r = guest("pass", "--disk", f"{img},format=raw")
    assert r.returncode == PASS, r.stdout + r.stderr
    raw = tmp_path / "plain.raw"
    raw.write_bytes(bytes(4096))
    r = guest("pass", "--disk", f"{raw},format=qcow2")
    assert r.returncode == 1 and "not a qcow2 image (bad magic)" in r.stderr, r.stderr
    r = guest("pass", "--disk", f"{raw},format=vmdk")
    assert r.returncode == 1 and 'unknown option "format=vmdk"' in r.stderr
