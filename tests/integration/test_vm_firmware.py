"""Issue 17, item 6: firmware boot of an unmodified disk image. `kapsel vm run --firmware
bios.bin --disk IMAGE` starts Debian's SeaBIOS at the reset vector; SeaBIOS finds the
virtio-blk disk on PCI, loads its MBR and jumps to it. The MBR here is 44 bytes of real-mode
code written below: it prints "kapsel-mbr-ok" on COM1 and writes 0x2a to the debug-exit port
(exit status 85, PASS as in test_vm.py). SeaBIOS's own log comes from port 0x402
(--firmware-log); its serial console (etc/sercon-port) puts "Booting from Hard Disk" on COM1."""
import json
import os
import shutil
import struct
import subprocess

import pytest

from test_vm import MULTIBOOT, PASS, guests, vm  # noqa: F401  (guests: module fixture)

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]

SEABIOS = "/usr/share/seabios/bios.bin"  # 128 KiB
SEABIOS_256K = "/usr/share/seabios/bios-256k.bin"
needs_seabios = pytest.mark.skipif(not os.path.exists(SEABIOS),
                                   reason="needs Debian's seabios (scripts/setup.sh)")

# Real mode at 0000:7C00. The message follows the code at 0x7C2C.
MBR_CODE = bytes.fromhex(
    "fa"          # cli
    "31c0"        # xor ax, ax
    "8ed8"        # mov ds, ax
    "8ed0"        # mov ss, ax
    "bc007c"      # mov sp, 0x7c00
    "be2c7c"      # mov si, msg
    "fc"          # cld
    "ac"          # next: lodsb
    "84c0"        # test al, al
    "7412"        # jz done
    "88c4"        # mov ah, al
    "bafd03"      # wait: mov dx, 0x3fd     (LSR)
    "ec"          # in al, dx
    "a820"        # test al, 0x20           (THRE)
    "74f8"        # jz wait
    "88e0"        # mov al, ah
    "baf803"      # mov dx, 0x3f8           (THR)
    "ee"          # out dx, al
    "ebe9"        # jmp next
    "b02a"        # done: mov al, 0x2a
    "e6f4"        # out 0xf4, al            (debug-exit: status 85)
    "f4"          # hlt
    "ebfd"        # jmp hlt
)
MBR_LINE = "kapsel-mbr-ok"


def mbr_image(path, size=1 << 20):
    assert len(MBR_CODE) == 0x2c
    mbr = MBR_CODE + MBR_LINE.encode() + b"\r\n\0"
    mbr += b"\0" * (510 - len(mbr)) + b"\x55\xaa"
    with open(path, "wb") as f:
        f.write(mbr)
        f.truncate(size)
    return str(path)


def boot(tmp_path, *args, bios=SEABIOS, timeout=180):
    img = mbr_image(tmp_path / "disk.img")
    log = tmp_path / "firmware.log"
    r = vm("--firmware", bios, "--disk", img, "--firmware-log", str(log), *args,
           timeout=timeout)
    return r, log.read_text(errors="replace") if log.exists() else ""


@needs_seabios
@pytest.mark.parametrize("bios", [SEABIOS, SEABIOS_256K])
def test_seabios_boots_the_mbr(tmp_path, bios):
    r, log = boot(tmp_path, "--mem", "128M", bios=bios)
    assert r.returncode == PASS, r.stdout + r.stderr + log
    assert MBR_LINE in r.stdout, r.stdout
    # SeaBIOS's serial console (etc/sercon-port) on COM1, before the MBR's line.
    assert "Booting from Hard Disk" in r.stdout.split(MBR_LINE)[0], r.stdout
    # Its debug log on port 0x402: the banner, the machine it recognised, the disk it drove.
    assert log.startswith("SeaBIOS (version"), log[:500]
    assert "Running on QEMU (i440fx)" in log, log
    assert "found virtio-blk at 00:01.0" in log and "Booting from 0000:7c00" in log, log
    assert "Unable to unlock ram" not in log, log


@needs_seabios
def test_seabios_finds_the_ps2_keyboard(tmp_path):
    """SeaBIOS's keyboard_init resets the keyboard behind the i8042 and waits for 0xFA 0xAA;
    before kapsel's i8042 had a keyboard it waited until "Timeout at ps2_recvbyte"."""
    r, log = boot(tmp_path, "--mem", "128M")
    assert r.returncode == PASS, r.stdout + r.stderr + log
    assert "PS2 keyboard initialized" in log, log
    assert "ps2_recvbyte" not in log, log


@needs_seabios
def test_seabios_sees_the_cpus_and_memory(tmp_path):
    # CMOS 0x5f (CPU count - 1) is how many APs SeaBIOS waits for; etc/e820 gives the RAM.
    r, log = boot(tmp_path, "--mem", "96M", "--cpus", "2")
    assert r.returncode == PASS, r.stdout + r.stderr + log
    assert "Found 2 cpu(s)" in log, log
    assert "qemu/e820: addr 0x0000000000100000 len 0x0000000005f00000 [RAM]" in log, log


@needs_seabios
def test_firmware_from_vm_json(tmp_path):
    img = mbr_image(tmp_path / "disk.img")
    log = tmp_path / "fw.log"
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"firmware": SEABIOS, "firmware_log": str(log), "mem": "64M",
                               "disks": [img]}))
    r = vm("--config", str(cfg), timeout=180)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert MBR_LINE in r.stdout and log.read_text().startswith("SeaBIOS")


# An MBR that looks for the RSDP in the F segment as an OS does (ACPI 6.4 §5.2.5.1), and
# checks its 36-byte checksum, its OEM id (KAPSEL, so the tables are kapsel's and placed by
# SeaBIOS's table loader: Debian's SeaBIOS makes none) and an XSDT address above 1 MiB.
# Assembled with `as --32` from (AT&T syntax, .code16, at 0x7c00):
#   cli; xor %ax,%ax; mov %ax,%ds; mov %ax,%ss; mov $0x7c00,%sp; mov $0xf000,%ax; mov %ax,%es
#   xor %di,%di
#   scan: cmpl $0x20445352,%es:(%di); jne next; cmpl $0x20525450,%es:4(%di); jne next
#     xor %bl,%bl; mov $36,%cx; mov %di,%si; sum: add %es:(%si),%bl; inc %si; loop sum
#     test %bl,%bl; jnz fail; cmpl $0x5350414b,%es:9(%di); jne fail
#     cmpl $0x100000,%es:24(%di); jb fail; mov $ok,%si; jmp print
#   next: add $16,%di; jnz scan
#   fail: mov $bad,%si
#   print: (the MBR above's COM1 loop and debug-exit)
#   ok: .asciz "kapsel-rsdp-ok\r\n"; bad: .asciz "kapsel-rsdp-missing\r\n"
RSDP_MBR = bytes.fromhex(
    "fa31c08ed88ed0bc007cb800f08ec031ff2666813d5253442075372666817d0450545220752c30dbb9240089"
    "fe26021c46e2fa84db75202666817d094b41505375152666817d1800001000720abe797ceb0883c71075babe"
    "8a7cfcac84c0741288c4bafd03eca82074fb88e0baf803eeebe9b02ae6f4f4ebfd6b617073656c2d72736470"
    "2d6f6b0d0a006b617073656c2d727364702d6d697373696e670d0a00")


@needs_seabios
@pytest.mark.parametrize("acpi", ["reduced", "full"])
def test_seabios_installs_kapsels_acpi_tables(tmp_path, acpi):
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.write(RSDP_MBR.ljust(510, b"\0") + b"\x55\xaa")
        f.truncate(1 << 20)
    r = vm("--firmware", SEABIOS, "--disk", str(img), "--mem", "64M", "--acpi", acpi,
           timeout=180)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "kapsel-rsdp-ok" in r.stdout, r.stdout


@pytest.mark.parametrize("mem,cpus,ext,above16m,above4g", [
    (64, 1, 63 * 1024, 48 * 16, 0),
    # 5 GiB: 3 GiB below the hole (the KiB field saturates at 0xffff), 2 GiB above 4 GiB.
    (5120, 2, 0xffff, (3072 - 16) * 16, 2048 * 16),
])
def test_cmos_fields_a_bios_reads(mem, cpus, ext, above16m, above4g):
    # The multiboot test kernel reads them: 0x30/0x31 (and 0x17/0x18) KiB above 1 MiB,
    # 0x34/0x35 64 KiB units above 16 MiB, 0x5b-0x5d 64 KiB units above 4 GiB, 0x5f the CPU
    # count less one, 0x3d/0x38 the boot order (hard disk, no floppy signature check).
    r = vm("--kernel", MULTIBOOT, "--mem", f"{mem}M", "--cpus", str(cpus),
           "--cmdline", "test=cmos")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert (f"cmos: ext {ext} ext17 {ext} above16m {above16m} above4g {above4g} "
            f"cpus-1 {cpus - 1} boot 2 1\n") in r.stdout, r.stdout


# ---- refusals: one line each, nothing started ----

def refused(r, *words):
    assert r.returncode == 1, r.stdout + r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and all(w in line for w in words), r.stderr


def test_missing_firmware_file(tmp_path):
    r = vm("--firmware", str(tmp_path / "nope.bin"), "--disk", mbr_image(tmp_path / "d.img"))
    refused(r, "firmware", "nope.bin", "No such file")


@pytest.mark.parametrize("size", [0, 100000, 512 * 1024])
def test_firmware_of_the_wrong_size(tmp_path, size):
    bad = tmp_path / "bios.bin"
    bad.write_bytes(b"\xf4" * size)
    r = vm("--firmware", str(bad), "--disk", mbr_image(tmp_path / "d.img"))
    refused(r, str(bad), f"{size} bytes", "64, 128 or 256 KiB")


def test_firmware_with_kernel(tmp_path):
    r = vm("--firmware", SEABIOS, "--kernel", "/bin/true", "--disk",
           mbr_image(tmp_path / "d.img"))
    refused(r, "--firmware", "cannot be combined with --kernel")


def test_firmware_with_mmio_transport(tmp_path):
    r = vm("--firmware", SEABIOS, "--transport", "mmio", "--disk",
           mbr_image(tmp_path / "d.img"))
    refused(r, "--transport mmio", "PCI")


@needs_seabios
def test_firmware_needs_memory(tmp_path):
    r = vm("--firmware", SEABIOS, "--mem", "8M", "--disk", mbr_image(tmp_path / "d.img"))
    refused(r, "--mem 8 MiB", "at least 16 MiB")


def test_firmware_in_vm_json_is_checked(tmp_path):
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"firmware": str(tmp_path / "absent.bin")}))
    refused(vm("--config", str(cfg)), "absent.bin", "No such file")


# ---- a real boot loader: extlinux on ext2 ----

EXTLINUX = shutil.which("extlinux")
SYSLINUX_MBR = "/usr/lib/syslinux/mbr/mbr.bin"


@needs_seabios
@pytest.mark.skipif(not EXTLINUX or not os.path.exists(SYSLINUX_MBR),
                    reason="needs extlinux and syslinux-common (scripts/setup.sh)")
def test_seabios_boots_extlinux(tmp_path):
    """A partitioned image with syslinux's MBR and extlinux on an ext2 partition, set up on
    a scratch loop device and mounted on a scratch directory. extlinux prints its banner and
    the test's line (SAY) through int 10h, which SeaBIOS's serial console sends to COM1, then
    boots the "kernel" it names: the MBR image above, loaded as a boot sector (BOOT), which
    ends the VM."""
    img = tmp_path / "disk.img"
    size = 16 << 20
    # syslinux's MBR code, then one active Linux partition from sector 2048 to the end
    # (the CHS fields are unused: LBA everywhere).
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", 2048,
                        size // 512 - 2048)
    with open(SYSLINUX_MBR, "rb") as m, open(img, "wb") as f:
        f.write(m.read(440).ljust(446, b"\0") + entry + b"\0" * 48 + b"\x55\xaa")
        f.truncate(size)
    # The partition alone on the loop device (no partition scan: no udev needed).
    loop = subprocess.run(["losetup", "--find", "--show", "--offset", str(2048 * 512),
                           str(img)], capture_output=True, text=True, check=True).stdout.strip()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        part = loop
        subprocess.run(["mkfs.ext2", "-q", part], check=True)
        subprocess.run(["mount", part, str(mnt)], check=True)
        try:
            boot_dir = mnt / "boot"
            boot_dir.mkdir()
            mbr_image(boot_dir / "kapsel.bs", size=512)
            (boot_dir / "extlinux.conf").write_text(
                "DEFAULT kapsel\nPROMPT 0\nTIMEOUT 1\nSAY kapsel-extlinux-ok\n"
                "LABEL kapsel\n  BOOT /boot/kapsel.bs\n")
            subprocess.run([EXTLINUX, "--install", str(boot_dir)], check=True,
                           capture_output=True)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
    # extlinux saw a device starting at sector 0: its boot sector's hidden-sectors field
    # (offset 0x1c, which it adds to every sector it reads) gets the partition's start.
    with open(img, "r+b") as f:
        f.seek(2048 * 512 + 0x1c)
        f.write(struct.pack("<I", 2048))
    log = tmp_path / "fw.log"
    r = vm("--firmware", SEABIOS, "--disk", str(img), "--mem", "128M", "--firmware-log",
           str(log), timeout=300)
    # SeaBIOS ran syslinux's MBR, which ran extlinux's boot sector, which loaded ldlinux.sys.
    assert "Booting from Hard Disk" in r.stdout and "H. Peter Anvin" in r.stdout, \
        r.stdout + r.stderr + log.read_text(errors="replace")
    if r.returncode == 1 and "KVM internal error: emulation failure" in r.stderr:
        # A KVM that emulates every instruction (this project's CI machine) cannot emulate
        # the protected-mode IRET ldlinux.sys runs next (KVM's em_iret does real mode only);
        # hardware virtualization runs it. QEMU TCG boots the same image to the line.
        pytest.skip("this host's KVM cannot emulate the boot loader: " + r.stderr.strip())
    assert r.returncode == PASS, r.stdout + r.stderr + log.read_text(errors="replace")
    assert "kapsel-extlinux-ok" in r.stdout, r.stdout
    assert r.stdout.index("kapsel-extlinux-ok") < r.stdout.rindex(MBR_LINE), r.stdout
