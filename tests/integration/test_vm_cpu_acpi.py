"""CPU models and ACPI fidelity (issue 17, items 9 and 4): --cpu-model feature sets as the
guest sees them through CPUID, --cpu-features on top of them, and the combinations refused.
The multiboot test kernel's "test=cpuid" prints the feature registers; PASS is exit status 85."""
import fcntl
import json
import os
import struct
import subprocess

import pytest

from conftest import KAPSEL

BUILD = os.path.dirname(os.path.dirname(os.path.dirname(KAPSEL)))
GUESTS = os.environ.get("KAPSEL_GUESTS", os.path.join(BUILD, "tests", "guests"))
MULTIBOOT = os.path.join(GUESTS, "multiboot.elf")
PASS = 85  # (0x2a << 1) | 1

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]

# Where each feature lives: (the guest's "cpuid L.S REG" line, bit); Intel SDM vol. 2A CPUID,
# AMD APM vol. 3 appendix E for the 0x80000001 bits.
L1C, L1D, L7B = "0x1.0 ecx", "0x1.0 edx", "0x7.0 ebx"
E1C, E1D, DD1 = "0x80000001.0 ecx", "0x80000001.0 edx", "0xd.1 eax"
BITS = {
    "fpu": (L1D, 0), "de": (L1D, 2), "pse": (L1D, 3), "tsc": (L1D, 4), "msr": (L1D, 5),
    "pae": (L1D, 6), "mce": (L1D, 7), "cx8": (L1D, 8), "apic": (L1D, 9), "sep": (L1D, 11),
    "mtrr": (L1D, 12), "pge": (L1D, 13), "mca": (L1D, 14), "cmov": (L1D, 15),
    "pat": (L1D, 16), "pse36": (L1D, 17), "clflush": (L1D, 19), "mmx": (L1D, 23),
    "fxsr": (L1D, 24), "sse": (L1D, 25), "sse2": (L1D, 26),
    "sse3": (L1C, 0), "pclmulqdq": (L1C, 1), "ssse3": (L1C, 9), "fma": (L1C, 12),
    "cx16": (L1C, 13), "pcid": (L1C, 17), "sse4_1": (L1C, 19), "sse4_2": (L1C, 20),
    "movbe": (L1C, 22), "popcnt": (L1C, 23), "aes": (L1C, 25), "xsave": (L1C, 26),
    "avx": (L1C, 28), "f16c": (L1C, 29), "rdrand": (L1C, 30),
    "fsgsbase": (L7B, 0), "bmi1": (L7B, 3), "avx2": (L7B, 5), "smep": (L7B, 7),
    "bmi2": (L7B, 8), "erms": (L7B, 9), "invpcid": (L7B, 10), "avx512f": (L7B, 16),
    "avx512dq": (L7B, 17), "rdseed": (L7B, 18), "adx": (L7B, 19), "smap": (L7B, 20),
    "clflushopt": (L7B, 23), "avx512cd": (L7B, 28), "sha": (L7B, 29), "avx512bw": (L7B, 30),
    "avx512vl": (L7B, 31),
    "xsaveopt": (DD1, 0), "xsavec": (DD1, 1), "xgetbv1": (DD1, 2), "xsaves": (DD1, 3),
    "lahf_lm": (E1C, 0), "cr8legacy": (E1C, 4), "abm": (E1C, 5), "sse4a": (E1C, 6),
    "misalignsse": (E1C, 7), "prefetchw": (E1C, 8),
    "syscall": (E1D, 11), "nx": (E1D, 20), "mmxext": (E1D, 22), "fxsr-opt": (E1D, 25),
    "pdpe1gb": (E1D, 26), "rdtscp": (E1D, 27), "lm": (E1D, 29),
}
# The x86-64 psABI's micro-architecture levels (3.1.1); the named ones as docs/vm.md lists.
V1 = ("fpu de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
      "sse sse2 syscall nx lm").split()
V2 = V1 + "cx16 lahf_lm popcnt sse3 sse4_1 sse4_2 ssse3".split()
V3 = V2 + "avx avx2 bmi1 bmi2 f16c fma abm movbe xsave".split()
V4 = V3 + "avx512f avx512bw avx512cd avx512dq avx512vl".split()
MODELS = {
    "x86-64-v1": V1, "x86-64-v2": V2, "x86-64-v3": V3, "x86-64-v4": V4,
    "Skylake-Client": V3 + ("pclmulqdq pcid aes rdrand rdtscp prefetchw fsgsbase smep erms "
                            "invpcid rdseed adx smap clflushopt xsaveopt xsavec xgetbv1 "
                            "xsaves").split(),
    "EPYC": V3 + ("pclmulqdq aes rdrand mmxext fxsr-opt pdpe1gb rdtscp cr8legacy sse4a "
                  "misalignsse prefetchw fsgsbase smep rdseed adx smap clflushopt sha "
                  "xsaveopt xsavec xgetbv1").split(),
}
KNOWN = "host, max, x86-64-v1, x86-64-v2, x86-64-v3, x86-64-v4, Skylake-Client, EPYC"
# Bits of the machine rather than the CPU, kept by every model: hypervisor, tsc-deadline,
# x2apic (leaf 1 ECX), osxsave (follows CR4), and apic/HTT in leaf 1 EDX.
PLATFORM = {L1C: (1 << 31) | (1 << 24) | (1 << 21) | (1 << 27), L1D: 1 << 28}


def vm(*args, timeout=120):
    return subprocess.run([KAPSEL, "vm", "run", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def guest_cpuid(*args):
    r = vm("--kernel", MULTIBOOT, "--cmdline", "test=cpuid", *args)
    regs = {}
    for line in r.stdout.splitlines():
        if line.startswith("cpuid "):
            key, val = line[6:].split("=")
            regs[key] = int(val, 16)
    return r, regs


def kvm_supported():
    """KVM_GET_SUPPORTED_CPUID as {line key: value}, for the registers the guest prints."""
    fd = os.open("/dev/kvm", os.O_RDWR)
    try:
        n = 256
        buf = bytearray(struct.pack("II", n, 0) + bytes(40 * n))
        fcntl.ioctl(fd, 0xc008ae05, buf)  # KVM_GET_SUPPORTED_CPUID
    finally:
        os.close(fd)
    out = {}
    for i in range(struct.unpack_from("I", buf, 0)[0]):
        fn, idx, _, a, b, c, d = struct.unpack_from("IIIIIII", buf, 8 + 40 * i)
        for reg, v in zip(("eax", "ebx", "ecx", "edx"), (a, b, c, d)):
            out[f"{fn:#x}.{idx} {reg}"] = v
    return out


def has(regs, feature):
    key, bit = BITS[feature]
    return bool(regs.get(key, 0) >> bit & 1)


def honours_masks():
    """Whether this /dev/kvm shows the guest the CPUID kapsel sets. A nested PVM that emulates
    every instruction passes most host bits through whatever KVM_SET_CPUID2 said."""
    sup = kvm_supported()
    r, regs = guest_cpuid("--cpu-model", "x86-64-v1")
    if r.returncode != PASS:
        return False
    return all(regs.get(k, 0) & ~(PLATFORM.get(k, 0) | sup.get(k, 0)) == 0 for k in (L1C, L7B))


@pytest.mark.parametrize("model", sorted(MODELS))
def test_cpu_model_offers_its_features_or_names_the_missing_one(model):
    r, regs = guest_cpuid("--cpu-model", model)
    if r.returncode == PASS:
        missing = [f for f in MODELS[model] if not has(regs, f)]
        assert not missing, f"{model}: guest lacks {missing}\n{r.stdout}"
        return
    # Refused before boot: one line naming a model feature this KVM does not offer.
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr.strip()
    assert "\n" not in err, err
    prefix = f"kapsel: --cpu-model {model}: "
    assert err.startswith(prefix) and err.endswith(" is not supported by this host's KVM"), err
    feature = err[len(prefix):].split()[0]
    assert feature in MODELS[model], err
    assert not has(kvm_supported(), feature), f"{feature} is in KVM_GET_SUPPORTED_CPUID: {err}"


def test_cpu_model_baseline_boots_here():
    """x86-64-v1 needs only what every x86-64 KVM offers: it must boot on any host."""
    r, regs = guest_cpuid("--cpu-model", "x86-64-v1")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert all(has(regs, f) for f in V1)


def test_cpu_model_masks_what_is_outside_it():
    """The guest sees exactly the model's bits (plus the machine's own) in leaf 1, 7.0 EBX and
    0x80000001; checked where this KVM applies the CPUID it is given."""
    if not honours_masks():
        pytest.skip("this /dev/kvm passes host CPUID bits through (nested PVM): the exact "
                    "sets are checked by tests/unit/test-vmm-cpuid.c")
    for model, feats in MODELS.items():
        r, regs = guest_cpuid("--cpu-model", model)
        if r.returncode != PASS:
            continue
        want = dict.fromkeys((L1C, L1D, L7B, E1C, E1D), 0)
        for f in feats:
            key, bit = BITS[f]
            if key in want:
                want[key] |= 1 << bit
        for key, v in want.items():
            got = regs[key] & ~PLATFORM.get(key, 0)
            assert got == v & ~PLATFORM.get(key, 0), f"{model} {key}: {got:#x} != {v:#x}"


@pytest.mark.parametrize("model", ["host", "max"])
def test_cpu_model_host_and_max_are_the_default(model):
    _, default = guest_cpuid()
    r, regs = guest_cpuid("--cpu-model", model)
    assert r.returncode == PASS, r.stdout + r.stderr
    assert regs == default


def test_cpu_features_apply_after_the_model():
    """-x removes a model feature; the platform's x2apic stays unless asked."""
    r, regs = guest_cpuid("--cpu-model", "x86-64-v1", "--cpu-features", "-x2apic")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert not regs[L1C] >> 21 & 1
    r, regs = guest_cpuid("--cpu-model", "x86-64-v1")
    assert regs[L1C] >> 21 & 1


def test_pcid_and_invpcid_are_separate():
    """Before, pcid implied invpcid: "-pcid,+invpcid" was refused on every host."""
    sup = kvm_supported()
    r, regs = guest_cpuid("--cpu-features", "-pcid,+invpcid")
    if not has(sup, "invpcid"):
        assert r.returncode == 1
        assert r.stderr.strip() == ("kapsel: --cpu-features: invpcid is not supported by "
                                    "this host's KVM"), r.stderr
        return
    assert r.returncode == PASS, r.stdout + r.stderr
    assert has(regs, "invpcid")


def test_unknown_cpu_model_lists_the_known_ones():
    r = vm("--kernel", MULTIBOOT, "--cpu-model", "pentium9")
    assert r.returncode == 1
    assert r.stderr.strip() == f"kapsel: --cpu-model pentium9: unknown model (known: {KNOWN})"
    assert "multiboot guest" not in r.stdout


def test_unknown_cpu_model_in_config_file(tmp_path):
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"kernel": MULTIBOOT, "cpu_model": "i486"}))
    r = vm("--config", str(cfg))
    assert r.returncode == 1
    assert r.stderr.strip() == f"kapsel: --cpu-model i486: unknown model (known: {KNOWN})"


@pytest.mark.parametrize("feats,need", [("-avx,+avx2", "+avx2 needs avx"),
                                        ("-xsave,+xsavec", "+xsavec needs xsave"),
                                        ("-sse4_2,+avx", "+avx needs sse4_2")])
def test_feature_without_what_it_builds_on_is_refused(feats, need):
    r = vm("--kernel", MULTIBOOT, "--cmdline", "test=cpuid", "--cpu-features", feats)
    assert r.returncode == 1
    err = r.stderr.strip()
    # Where KVM lacks the feature itself, that is what the one line says instead.
    assert (err == f"kapsel: --cpu-features: {need}, which the CPU model or the list leaves out"
            or err.endswith(" is not supported by this host's KVM")), err
    assert "multiboot guest" not in r.stdout


def test_model_feature_needing_what_model_lacks_is_refused():
    r = vm("--kernel", MULTIBOOT, "--cpu-model", "x86-64-v1", "--cpu-features", "+avx512vl")
    assert r.returncode == 1
    err = r.stderr.strip()
    assert (err == "kapsel: --cpu-features: +avx512vl needs avx512f, which the CPU model or "
                   "the list leaves out"
            or err == "kapsel: --cpu-features: avx512vl is not supported by this host's KVM"), err


# ---- --acpi full: FADT with FACS, PM1a blocks, the PM timer at 0x608, S5 via PM1a_CNT ----

def test_acpi_full_fadt_pm_timer_and_poweroff():
    r = vm("--kernel", MULTIBOOT, "--cmdline", "test=acpifull", "--acpi", "full")
    # Power-off through PM1a_CNT is a clean exit (status 0), not the guest's fail().
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fadt: pm1a_evt 0x60c pm1a_cnt 0x604 pm_tmr 0x608 sci 9 facs ok" in r.stdout
    assert "powering off through PM1a_CNT" in r.stdout
    rate = int(r.stdout.split("pmtimer: ")[1].split()[0])
    # 3.579545 MHz over one RTC second, read through port exits on a loaded host: within 5%.
    assert 3400000 <= rate <= 3760000, f"PM timer counted {rate} ticks in one RTC second"


def test_acpi_full_from_config_file(tmp_path):
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"kernel": MULTIBOOT, "cmdline": "test=acpifull",
                               "acpi": "full"}))
    r = vm("--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "facs ok" in r.stdout


def test_acpi_reduced_is_the_default_and_explicit():
    for args in ([], ["--acpi", "reduced"]):
        r = vm("--kernel", MULTIBOOT, "--cmdline", "test=acpi", *args)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "sleep control 0x608, S5 5" in r.stdout


def test_acpi_full_guest_rejects_reduced_tables():
    """The reduced-mode guest finds no hardware-reduced FADT under --acpi full."""
    r = vm("--kernel", MULTIBOOT, "--cmdline", "test=acpifull", "--acpi", "reduced")
    assert r.returncode != 0
    assert "FADT is hardware-reduced" in r.stdout + r.stderr


def test_acpi_full_guest_under_reduced_tables_fails():
    r = vm("--kernel", MULTIBOOT, "--cmdline", "test=acpi", "--acpi", "full")
    assert r.returncode != 0
    assert "FADT is not hardware-reduced" in r.stdout + r.stderr


def test_acpi_bad_value_is_one_line():
    r = vm("--kernel", MULTIBOOT, "--acpi", "s3")
    assert r.returncode == 1
    assert r.stderr.strip() == 'kapsel: vm run: --acpi: expected reduced or full, got "s3"'


def test_acpi_bad_value_in_config_file(tmp_path):
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"kernel": MULTIBOOT, "acpi": "legacy"}))
    r = vm("--config", str(cfg))
    assert r.returncode == 1
    assert "acpi: expected reduced or full" in r.stderr and "\n" not in r.stderr.strip()
