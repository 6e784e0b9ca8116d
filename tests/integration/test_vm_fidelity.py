"""VM fidelity (issue 17): what real guests expect of the machine. The freestanding test
kernels of tests/guests/ check each item from the inside; PASS is exit status 85."""
import os
import select
import signal
import subprocess
import time

import pytest

from conftest import KAPSEL

BUILD = os.path.dirname(os.path.dirname(os.path.dirname(KAPSEL)))
GUESTS = os.environ.get("KAPSEL_GUESTS", os.path.join(BUILD, "tests", "guests"))
MULTIBOOT = os.path.join(GUESTS, "multiboot.elf")
MULTIBOOT_LOW = os.path.join(GUESTS, "multiboot-low.elf")
PASS = 85  # (0x2a << 1) | 1

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]


def vm(*args, timeout=60):
    return subprocess.run([KAPSEL, "vm", "run", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


# ---- TSC-deadline timer (CPUID.1:ECX[24], KVM_CAP_TSC_DEADLINE_TIMER) ----

@pytest.mark.parametrize("feats", [[], ["--cpu-features", "+tsc-deadline"]])
def test_tsc_deadline_offered_and_fires(feats):
    r = vm("--kernel", MULTIBOOT, "--cmdline", "test=tscdl", *feats)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "cpuid: tsc-deadline 1 x2apic 1" in r.stdout
    assert "tsc-deadline: interrupt ok" in r.stdout


def test_tsc_deadline_can_be_masked():
    r = vm("--kernel", MULTIBOOT, "--cmdline", "test=tscdl", "--cpu-features", "-tsc-deadline")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "cpuid: tsc-deadline 0 x2apic 1" in r.stdout
    assert "interrupt ok" not in r.stdout
