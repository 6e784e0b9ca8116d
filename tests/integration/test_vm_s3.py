"""ACPI S3, suspend to RAM (issue 17, --acpi full): the guest writes \\_S3's SLP_TYP with SLP_EN
to PM1a_CNT and the machine sleeps (vCPUs parked, `vm inspect` says Suspended) until `kapsel
vm wake NAME` (PUT /actions Wakeup) starts the BSP at the waking vector the guest left in the
FACS, in real mode, with WAK_STS set. The guest is the multiboot test kernel's test=s3: its
waking vector prints "s3 woke" and passes only when WAK_STS is set."""
import json
import os
import re

import pytest

from test_vm_snapshot import MULTIBOOT, kap, start, stop, wait_for

# Two columns: KVM, and the soft CPU (--accel soft, no /dev/kvm needed).
ACCEL = pytest.mark.parametrize("accel", [
    pytest.param("kvm", marks=[pytest.mark.kvm, pytest.mark.skipif(
        not os.path.exists("/dev/kvm"), reason="needs /dev/kvm")]),
    "soft",
])


def state(root, name):
    r = kap(root, "vm", "inspect", name)
    return json.loads(r.stdout)["state"] if r.returncode == 0 else None


def one_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@ACCEL
@pytest.mark.parametrize("cpus", ["1", "2"])
def test_suspend_and_wake(tmp_path, cpus, accel):
    root = tmp_path / "root"
    proc, console = start(root, tmp_path, "s3", "vm", "run", "--kernel", MULTIBOOT, "--cmdline",
                          "test=s3", "--acpi", "full", "--cpus", cpus, "--accel", accel)
    try:
        wait_for(lambda: "s3 suspending" in console.read_text() if console.exists() else False,
                 what="the guest's suspend")
        wait_for(lambda: state(root, "s3") == "Suspended", what="state Suspended")
        assert proc.poll() is None
        # asleep is not paused: pause and resume name the difference
        r = kap(root, "vm", "resume", "s3")
        assert r.returncode == 1
        assert "suspended (ACPI S3), not paused: wake it instead" in one_line(r.stderr)
        r = kap(root, "vm", "pause", "s3")
        assert r.returncode == 1 and "suspended (ACPI S3): wake it first" in one_line(r.stderr)
        assert "s3 woke" not in console.read_text()
        r = kap(root, "vm", "wake", "s3")
        assert r.returncode == 0, r.stderr
        out, err = proc.communicate(timeout=120)
    finally:
        stop(proc)
    text = console.read_text()
    assert "s3 woke" in text, text
    assert proc.returncode == 85, (proc.returncode, text, err)
    assert re.search(r"woke from ACPI S3 at 1000:0000", err), err


@ACCEL
def test_wake_of_a_vm_that_is_not_asleep(tmp_path, accel):
    root = tmp_path / "root"
    proc, console = start(root, tmp_path, "busy", "vm", "run", "--kernel", MULTIBOOT,
                          "--cmdline", "test=spin", "--acpi", "full", "--accel", accel)
    try:
        wait_for(lambda: state(root, "busy") == "Running", what="the VM's API")
        r = kap(root, "vm", "wake", "busy")
        assert r.returncode == 1
        assert one_line(r.stderr) == \
            "kapsel: vm wake busy: the VM is not suspended (ACPI S3)"
        assert state(root, "busy") == "Running"
    finally:
        stop(proc)


@ACCEL
def test_no_waking_vector_stays_asleep(tmp_path, accel):
    root = tmp_path / "root"
    proc, console = start(root, tmp_path, "novec", "vm", "run", "--kernel", MULTIBOOT,
                          "--cmdline", "test=s3 vector=0", "--acpi", "full", "--accel", accel)
    try:
        wait_for(lambda: state(root, "novec") == "Suspended", what="state Suspended")
        r = kap(root, "vm", "wake", "novec")
        assert r.returncode == 1
        assert "left no waking vector below 1 MiB in its FACS (0x0)" in one_line(r.stderr)
        assert state(root, "novec") == "Suspended"
        assert kap(root, "vm", "stop", "--force", "novec").returncode == 0
    finally:
        stop(proc)


@ACCEL
def test_no_s3_without_full_acpi(tmp_path, accel):
    # hardware-reduced ACPI (the default) has no FACS and no \_S3: nothing to suspend with
    root = tmp_path / "root"
    proc, console = start(root, tmp_path, "red", "vm", "run", "--kernel", MULTIBOOT,
                          "--cmdline", "test=s3", "--accel", accel)
    try:
        proc.communicate(timeout=120)
    finally:
        stop(proc)
    assert proc.returncode == 3, console.read_text()
    assert "FAIL: s3: no FACS (needs --acpi full)" in console.read_text()
