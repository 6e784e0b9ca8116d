"""virtio-pci of kapsel vm run (issue 6, --transport pci, the default), driven from the
multiboot test kernel's own PCI enumeration and virtio-pci driver (tests/guests/virtio-pci.h):
it walks bus 0 through 0xCF8/0xCFC, sizes and moves BAR 0, walks the capability list, then
drives virtio-blk and virtio-rng with MSI-X and with INTx. PASS is exit status 85."""
import os

import pytest

from test_vm import PASS, mb, guests  # noqa: F401  (guests: module fixture)

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]


@pytest.fixture
def disk(tmp_path):
    p = tmp_path / "disk.img"
    data = bytearray(1 << 20)
    data[0:11] = b"KAPSEL-DISK"
    p.write_bytes(bytes(data))
    return p


def test_enumerate_bus0(disk):
    r = mb("pci", "--disk", str(disk), "--rng")
    assert r.returncode == PASS, r.stdout + r.stderr
    # 00:00.0 host bridge (class 0600), then one function per device in order: blk, rng.
    assert "pci: 00:0x0.0 0xd578086 class 0x60000" in r.stdout
    assert "pci: 00:0x1.0 0x10421af4 class 0x18000" in r.stdout
    assert "pci: 00:0x2.0 0x10441af4 class 0xff0000" in r.stdout
    assert "pci: 2 virtio functions" in r.stdout
    # BAR 0 moved by the guest to 0xe8000000 + slot * size; MSI-X plus 5 virtio capabilities.
    assert "blk BAR 0xe8008000 size 0x8000, 6 capabilities, notify multiplier 4, line 16" \
        in r.stdout


def test_transport_option(disk):
    r = mb("pci", "--disk", str(disk), "--transport", "pci")
    assert r.returncode == PASS, r.stdout + r.stderr
    r = mb("pci", "--disk", str(disk), "--transport", "mmio")
    # virtio-mmio: no host bridge answers on 0xCF8/0xCFC.
    assert r.returncode != PASS and "00:00.0 is not a host bridge" in r.stdout


def pattern_ok(data):
    return all(data[512 * (s + 1) + i] == (i * 7 + s + 1) & 0xff
               for s in range(8) for i in range(512))


@pytest.mark.parametrize("irq", ["msix", "intx"])
def test_blk_write_read_back(disk, irq):
    r = mb(f"pci-blk mode=rw irq={irq}", "--disk", str(disk))
    assert r.returncode == PASS, r.stdout + r.stderr
    assert f"irq {irq}" in r.stdout
    assert "pci-blk: sector 0: KAPSEL-DISK" in r.stdout and "pci-blk ok" in r.stdout
    assert "pci-blk: 2 interrupts" in r.stdout
    data = disk.read_bytes()
    assert pattern_ok(data), "sectors 1-8 do not hold what the guest wrote"
    assert data[9 * 512:] == bytes(len(data) - 9 * 512)


def test_intx_is_level_triggered(disk):
    """The guest takes the INTx interrupt and EOIs without reading ISR: the line must come
    back (level, re-asserted on KVM's resample); after the ISR read it must stay down."""
    r = mb("pci-blk mode=rw irq=level", "--disk", str(disk))
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "pci-blk: intx stays asserted while ISR is set" in r.stdout
    assert "pci-blk: intx drops once ISR is read" in r.stdout
    assert "pci-blk: 3 interrupts" in r.stdout and pattern_ok(disk.read_bytes())


@pytest.mark.parametrize("irq", ["msix", "intx"])
def test_blk_read_only_refuses_writes(disk, irq):
    before = disk.read_bytes()
    r = mb(f"pci-blk mode=ro irq={irq}", "--disk", f"{disk},ro")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "pci-blk: write refused" in r.stdout
    assert disk.read_bytes() == before


@pytest.mark.parametrize("irq", ["msix", "intx"])
def test_rng(disk, irq):
    r = mb(f"pci-rng irq={irq}", "--disk", str(disk), "--rng")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "pci-rng ok" in r.stdout


def test_acpi_tables_with_pci_root(disk):
    # The DSDT gains \\_SB.PCI0 (PNP0A03); every checksum must still hold.
    r = mb("acpi", "--disk", str(disk), "--rng")
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_mmio_cmdline_on_pci(disk):
    r = mb("pass", "--disk", str(disk), "--virtio-mmio-cmdline")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "virtio_mmio.device" not in r.stdout


def test_bad_transport(disk):
    r = mb("pass", "--disk", str(disk), "--transport", "isa")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and 'expected pci or mmio, got "isa"' in lines[0], r.stderr
