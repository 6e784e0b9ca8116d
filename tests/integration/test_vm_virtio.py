"""virtio devices of kapsel vm run (issue 6), driven from the multiboot test kernel's own
minimal virtio-mmio driver (tests/guests/virtio.h): it writes and reads back sectors, and the
host then checks the image's bytes. PASS is exit status 85, as in test_vm.py."""
import json
import os
import subprocess

import pytest

from conftest import KAPSEL
from test_vm import MULTIBOOT, PASS, mb, guests  # noqa: F401  (guests: module fixture)


def mmio(test, *args, **kw):
    """The guest driver here is virtio-mmio's (tests/guests/virtio.h), and the default
    transport is pci (test_vm_pci.py drives that one)."""
    return mb(test, "--transport", "mmio", *args, **kw)

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]


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


@pytest.mark.parametrize("cache", ["writeback", "none"])
def test_blk_write_read_back(disk, cache):
    r = mmio("blk mode=rw serial=kapsel-0042", "--disk",
           f"{disk},serial=kapsel-0042,cache={cache}")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "blk: sector 0: KAPSEL-DISK" in r.stdout and "blk ok" in r.stdout
    data = disk.read_bytes()
    assert len(data) == 1 << 20
    assert pattern_ok(data), "sectors 1-8 do not hold what the guest wrote"
    assert data[9 * 512:10 * 512] == bytes(512), "write-zeroes left data behind"
    assert data[10 * 512:] == bytes(len(data) - 10 * 512)


def test_blk_read_only_refuses_writes(disk):
    before = disk.read_bytes()
    r = mmio("blk mode=ro", "--disk", f"{disk},ro")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "write refused" in r.stdout
    assert disk.read_bytes() == before


def test_blk_bad_descriptor_needs_reset(disk):
    r = mmio("blk mode=bad", "--disk", str(disk))
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "buffer outside guest RAM; device needs reset" in r.stderr
    assert r.stderr.count("needs reset") <= 3


def test_blk_second_disk_and_rng(disk, tmp_path):
    other = tmp_path / "other.img"
    other.write_bytes(bytes(4096))
    r = mmio("rng", "--disk", str(disk), "--disk", f"{other},ro", "--rng")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "rng ok" in r.stdout


def test_virtio_mmio_cmdline(disk):
    r = mmio("pass", "--disk", str(disk), "--rng", "--virtio-mmio-cmdline")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert ("virtio_mmio.device=512@0xd0000000:16 virtio_mmio.device=512@0xd0000200:17"
            in r.stdout)


def test_acpi_tables_still_valid_with_virtio(disk):
    r = mb("acpi", "--disk", str(disk), "--rng")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("arg,msg", [
    ("{missing}", "disk {missing}: No such file or directory"),
    ("{dir}", "disk {dir}: Is a directory"),
    ("{disk},foo", "unknown option \"foo\""),
    (",ro", "expected PATH"),
    ("{disk},serial=123456789012345678901", "serial longer than 20 bytes"),
    ("{disk},cache=maybe", "unknown option \"cache=maybe\""),
    ("{disk},id=a b", "id must be"),
])
def test_bad_disk_options(disk, tmp_path, arg, msg):
    fmt = dict(missing=tmp_path / "nope.img", dir=tmp_path, disk=disk)
    r = mb("pass", "--disk", arg.format(**fmt))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and msg.format(**fmt) in lines[0], r.stderr
    assert "multiboot guest" not in r.stdout


def test_duplicate_disk_ids(disk):
    r = mb("pass", "--disk", f"{disk},id=d", "--disk", f"{disk},id=d")
    assert r.returncode == 1 and "id d already used" in r.stderr
    r = mb("pass", "--disk", f"{disk},id=rng0", "--rng")
    assert r.returncode == 1 and "id rng0 is the rng's" in r.stderr


def test_empty_disk_refused(tmp_path):
    p = tmp_path / "empty.img"
    p.write_bytes(b"")
    r = mb("pass", "--disk", str(p))
    assert r.returncode == 1 and "smaller than one 512-byte sector" in r.stderr


def test_devices_from_vm_json(disk, tmp_path):
    """vm.json holds the devices too: transport, disks (in --disk syntax), rng; a --disk flag
    adds to the file's disks, and its default id continues theirs."""
    other = tmp_path / "other.img"
    other.write_bytes(bytes(4096))
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"kernel": MULTIBOOT, "transport": "mmio", "rng": True,
                               "disks": [f"{disk},serial=from-json"]}))
    r = subprocess.run([KAPSEL, "vm", "run", "--config", str(cfg), "--cmdline",
                        "test=blk mode=rw serial=from-json", "--disk", f"{other},ro"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "blk ok" in r.stdout and pattern_ok(disk.read_bytes())
    # The flag's disk is disk1 (the file's is disk0): naming it disk0 collides.
    r = subprocess.run([KAPSEL, "vm", "run", "--config", str(cfg), "--disk",
                        f"{other},id=disk0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "id disk0 already used" in r.stderr


@pytest.mark.parametrize("conf,msg", [
    ({"disks": "x.img"}, "disks: expected an array of strings"),
    ({"disks": [5]}, "disks[0]: expected a string"),
    ({"disks": ["{disk},bogus=1"]}, "disks[0]: "),
    ({"nets": ["tap="]}, "nets[0]: "),
    ({"transport": "usb"}, "transport: expected pci or mmio"),
    ({"vsock": "cid=1,socket=/tmp/x"}, "vsock: "),
    ({"rng": "yes"}, "rng"),
])
def test_bad_devices_in_vm_json(disk, tmp_path, conf, msg):
    conf = {k: (v.replace("{disk}", str(disk)) if isinstance(v, str) else
                [e.replace("{disk}", str(disk)) if isinstance(e, str) else e for e in v]
                if isinstance(v, list) else v) for k, v in conf.items()}
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"kernel": MULTIBOOT, **conf}))
    r = subprocess.run([KAPSEL, "vm", "run", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and msg in lines[0], r.stderr
    assert "multiboot guest" not in r.stdout
