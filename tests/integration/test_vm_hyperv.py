"""Hyper-V enlightenments (issue 17, item 7): --cpu-features hv-* by QEMU's names. The
multiboot test kernel's "test=hyperv" reads the Hyper-V CPUID leaves (TLFS 6.0, 2.4) and the
synthetic MSRs KVM implements: guest OS ID and hypercall page, the reference counter, the
reference TSC page, and with hv-stimer a synthetic timer's interrupt and message through
SynIC. Where this host's KVM lacks a capability, the positive tests skip naming
it and the refusal tests check the one-line error instead. PASS is exit status 85."""
import fcntl
import os
import subprocess

import pytest

from conftest import KAPSEL

BUILD = os.path.dirname(os.path.dirname(os.path.dirname(KAPSEL)))
GUESTS = os.environ.get("KAPSEL_GUESTS", os.path.join(BUILD, "tests", "guests"))
MULTIBOOT = os.path.join(GUESTS, "multiboot.elf")
PASS = 85  # (0x2a << 1) | 1
FAIL = 3  # (1 << 1) | 1: the guest's fail()

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]

# linux/kvm.h capability numbers.
CAPS = {"KVM_CAP_HYPERV": 44, "KVM_CAP_HYPERV_VAPIC": 45, "KVM_CAP_HYPERV_TIME": 96,
        "KVM_CAP_HYPERV_SYNIC2": 148, "KVM_CAP_HYPERV_VP_INDEX": 149}
# Flag -> (capability it needs besides KVM_CAP_HYPERV, privilege bits of 0x40000003 EAX,
# recommendation bits of 0x40000004 EAX), in kapsel's table order (TLFS 2.4.4, 2.4.5).
FLAGS = {
    "hv-relaxed": ("KVM_CAP_HYPERV", 0, 1 << 5),
    "hv-vapic": ("KVM_CAP_HYPERV_VAPIC", 1 << 4, 1 << 3),
    "hv-time": ("KVM_CAP_HYPERV_TIME", (1 << 1) | (1 << 9), 0),
    "hv-vpindex": ("KVM_CAP_HYPERV_VP_INDEX", 1 << 6, 0),
    "hv-synic": ("KVM_CAP_HYPERV_SYNIC2", 1 << 2, 0),
    "hv-stimer": ("KVM_CAP_HYPERV_TIME", 1 << 3, 0),
}
HYPERCALL_MSRS = 1 << 5  # AccessHypercallMsrs: always offered
KNOWN = "hv-relaxed, hv-vapic, hv-time, hv-vpindex, hv-synic, hv-stimer"


def host_caps():
    """The KVM_CAP_HYPERV* this host's KVM reports on a VM (KVM_CHECK_EXTENSION)."""
    kvm = os.open("/dev/kvm", os.O_RDWR)
    try:
        vmfd = fcntl.ioctl(kvm, 0xae01, 0)  # KVM_CREATE_VM
        try:
            return {n for n, c in CAPS.items() if fcntl.ioctl(vmfd, 0xae03, c) > 0}
        finally:
            os.close(vmfd)
    finally:
        os.close(kvm)


def missing_caps(flags):
    have = host_caps()
    need = {"KVM_CAP_HYPERV"} | {FLAGS[f][0] for f in flags}
    return sorted(need - have)


def vm(*args, timeout=120):
    return subprocess.run([KAPSEL, "vm", "run", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def hyperv_guest(flags):
    return vm("--kernel", MULTIBOOT, "--cmdline", "test=hyperv", "--cpu-features",
              ",".join("+" + f for f in flags))


def line(out, prefix):
    for ln in out.splitlines():
        if ln.startswith(prefix):
            return ln[len(prefix):].split()
    raise AssertionError(f"no {prefix!r} line in:\n{out}")


SETS = [
    ["hv-relaxed"],
    ["hv-relaxed", "hv-vapic"],
    ["hv-relaxed", "hv-vapic", "hv-time", "hv-vpindex"],
    ["hv-relaxed", "hv-vapic", "hv-time", "hv-vpindex", "hv-synic", "hv-stimer"],
]


@pytest.mark.parametrize("flags", SETS, ids=lambda f: "+".join(f))
def test_hyperv_leaves_and_msrs(flags):
    missing = missing_caps(flags)
    if missing:
        pytest.skip(f"this host's KVM lacks {', '.join(missing)}")
    r = hyperv_guest(flags)
    assert r.returncode == PASS, r.stdout + r.stderr
    top = line(r.stdout, "hyperv: max ")
    assert top == ["0x4000000a", "vendor", "Microsoft", "Hv", "interface", "0x31237648"], top
    words = line(r.stdout, "hyperv: privileges ")
    priv, rec = int(words[0], 16), int(words[2], 16)
    want_priv = HYPERCALL_MSRS
    want_rec = 0
    for f in flags:
        want_priv |= FLAGS[f][1]
        want_rec |= FLAGS[f][2]
    assert (priv, rec) == (want_priv, want_rec), r.stdout
    # KVM's own leaves moved up, so Linux still finds kvmclock.
    assert line(r.stdout, "hyperv: kvm leaves 0x40000100 ") == ["1"], r.stdout
    assert line(r.stdout, "hyperv: hypercall enabled ") == ["1"], r.stdout
    if "hv-time" in flags:
        t = line(r.stdout, "hyperv: time ref count ")
        assert int(t[2]) > int(t[0]), t
        # KVM wrote the page (the guest left 0xdeadbeef there); 0 is the TLFS's "use the
        # reference counter MSR instead", which a host without a stable TSC reports.
        seq = int(line(r.stdout, "hyperv: tsc page sequence ")[0], 16)
        assert seq not in (0xdeadbeef, 0xffffffff), r.stdout
    else:
        assert "time ref count" not in r.stdout and "tsc page" not in r.stdout, r.stdout
    # Synthetic timer 0 fired through SynIC: its interrupt came and its message is in the page.
    if "hv-stimer" in flags:
        assert line(r.stdout, "hyperv: stimer message ") == ["0x80000010"], r.stdout
    else:
        assert "stimer" not in r.stdout, r.stdout


def test_no_hyperv_leaves_by_default():
    """Without hv-* the guest sees KVM's signature at 0x40000000, not Hyper-V's."""
    r = vm("--kernel", MULTIBOOT, "--cmdline", "test=hyperv")
    assert r.returncode == FAIL, r.stdout + r.stderr
    assert "FAIL: no Hv#1 interface" in r.stdout, r.stdout
    assert "vendor KVMKVMKVM" in r.stdout, r.stdout


@pytest.mark.parametrize("flags", [["hv-relaxed"], ["hv-vapic"], ["hv-time"], ["hv-vpindex"],
                                   ["hv-vpindex", "hv-synic"],
                                   ["hv-time", "hv-vpindex", "hv-synic", "hv-stimer"]],
                         ids=lambda f: "+".join(f))
def test_hyperv_flag_without_capability_is_refused(flags):
    have = host_caps()
    want = None
    for f in FLAGS:  # kapsel checks in table order
        if f not in flags:
            continue
        if "KVM_CAP_HYPERV" not in have:
            want = f"+{f} needs KVM_CAP_HYPERV"
        elif FLAGS[f][0] not in have:
            want = f"+{f} needs {FLAGS[f][0]}"
        if want:
            break
    if not want:
        pytest.skip("this host's KVM has every capability these flags need")
    r = hyperv_guest(flags)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip() == f"kapsel: --cpu-features: {want}, which this host's KVM lacks"
    assert "multiboot guest" not in r.stdout


@pytest.mark.parametrize("feats,err", [
    ("+hv-synic", "+hv-synic needs +hv-vpindex"),
    ("+hv-vpindex,+hv-synic,-hv-vpindex", "+hv-synic needs +hv-vpindex"),
    ("+hv-stimer", "+hv-stimer needs +hv-time"),
    ("+hv-vpindex,+hv-synic,+hv-stimer", "+hv-stimer needs +hv-time"),
    ("+hv-time,+hv-stimer", "+hv-stimer needs +hv-synic"),
])
def test_hyperv_dependencies_are_enforced(feats, err):
    """Refused while the configuration is checked, whatever this host's KVM offers."""
    r = vm("--kernel", MULTIBOOT, "--cmdline", "test=hyperv", "--cpu-features", feats)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip() == f"kapsel: --cpu-features: {err}"
    assert "multiboot guest" not in r.stdout


@pytest.mark.parametrize("name", ["hv-foo", "hv-frequencies", "hv-"])
def test_unknown_hyperv_flag_is_refused(name):
    r = vm("--kernel", MULTIBOOT, "--cmdline", "test=hyperv", "--cpu-features",
           f"+avx,+{name}")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip() == (f'kapsel: --cpu-features: unknown Hyper-V enlightenment '
                                f'"{name}" (known: {KNOWN})')
    assert "multiboot guest" not in r.stdout
