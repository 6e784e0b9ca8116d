"""Issue 17, items 2 and 5: guest RAM on transparent huge pages, and QEMU's fw_cfg interface
(ports 0x510/0x511 and DMA at 0x514), driven from the multiboot test kernel
(tests/guests/fwcfg.h). PASS is exit status 85, as in test_vm.py."""
import os
import re
import subprocess
import time

import pytest

from test_vm import MULTIBOOT, PASS, guests, vm  # noqa: F401  (guests: module fixture)
from conftest import KAPSEL

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]

THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def fwcfg(cpus, mem, *args, cmdline=""):
    return vm("--kernel", MULTIBOOT, "--cpus", str(cpus), "--mem", f"{mem}M", *args,
              "--cmdline", f"test=fwcfg cpus={cpus} mem={mem}{cmdline}")


@pytest.mark.parametrize("cpus,mem", [(1, 64), (2, 128), (3, 4096)])
def test_fwcfg_matches_the_machine(cpus, mem):
    # 4096 MiB: RAM above 4 GiB shows in etc/e820 as it does in the boot path's map.
    r = fwcfg(cpus, mem)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert f"fwcfg: signature QEMU, cpus {cpus}, ram {mem} MiB" in r.stdout
    assert "fwcfg: file etc/e820\n" in r.stdout and "fwcfg: etc/e820 ok" in r.stdout
    assert "fwcfg: dsdt QEMU0002 io 0x510/12" in r.stdout


def test_fwcfg_kernel_initrd_cmdline(tmp_path):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"KAPSEL-INITRD" + b"\0" * 4000)
    r = fwcfg(1, 64, "--initrd", str(initrd), cmdline=" initrd=4013 extra=words")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "fwcfg: initrd ok" in r.stdout


def test_fwcfg_hostile_selectors_and_dma():
    # The guest checks it: unknown and arch-local selectors and reads past an item's end give
    # zeros, data-port writes change nothing, DMA outside RAM or wrapping sets the error bit,
    # DMA writes are refused; and kapsel is still there to report PASS.
    r = fwcfg(1, 64)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "fwcfg: bad selectors read zeros" in r.stdout
    assert "fwcfg: dma ok" in r.stdout
    assert "ERROR" not in r.stderr and "runtime error" not in r.stderr


def mappings(pid):
    """(header line, size kB, AnonHugePages kB) for each mapping of the process."""
    out, hdr, size = [], None, 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                hdr = line.strip()
            elif line.startswith("Size:"):
                size = int(line.split()[1])
            elif line.startswith("AnonHugePages:"):
                out.append((hdr, size, int(line.split()[1])))
    return out


def touched(*args):
    """Runs test=touch with 256 MiB and returns the mappings once the guest has written."""
    p = subprocess.Popen([KAPSEL, "vm", "run", "--kernel", MULTIBOOT, "--mem", "256M", *args,
                          "--cmdline", "test=touch"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "touched" not in line and time.monotonic() < deadline and p.poll() is None:
            line = p.stdout.readline()
        assert "touched" in line, p.stderr.read() if p.poll() is not None else "no output"
        return mappings(p.pid)
    finally:
        p.terminate()
        p.wait(timeout=30)


def thp_mode():
    try:
        with open(THP) as f:
            return re.search(r"\[(\w+)\]", f.read()).group(1)
    except OSError:
        return None


def test_guest_ram_on_transparent_huge_pages():
    if thp_mode() not in ("always", "madvise"):
        pytest.skip(f"{THP} is not [always] or [madvise]")
    ram = [m for m in touched() if m[1] == 256 * 1024]
    assert ram, "no 256 MiB mapping in smaps"
    assert any(huge > 0 for _, _, huge in ram), ram
    assert not any("memfd:kapsel-guest-ram" in hdr for hdr, _, _ in ram), ram


def test_mem_shared_keeps_ram_in_a_memfd():
    # Negative of the default: --mem-shared is the shareable memfd, mapped shared.
    ram = [m for m in touched("--mem-shared") if m[1] == 256 * 1024]
    shared = [m for m in ram if "/memfd:kapsel-guest-ram" in m[0]]
    assert len(shared) == 1, ram
    assert shared[0][0].split()[1].endswith("s"), shared  # rw-s


def test_mem_shared_in_the_config_file(tmp_path):
    cfg = tmp_path / "vm.json"
    cfg.write_text('{"kernel": "%s", "mem_shared": true}' % MULTIBOOT)
    r = vm("--config", str(cfg), "--cmdline", "test=pass")
    assert r.returncode == PASS, r.stdout + r.stderr
    cfg.write_text('{"kernel": "%s", "mem_shared": "yes"}' % MULTIBOOT)
    r = vm("--config", str(cfg), "--cmdline", "test=pass")
    assert r.returncode == 1 and "mem_shared" in r.stderr, r.stdout + r.stderr
