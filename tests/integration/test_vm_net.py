"""virtio-net of kapsel vm run (issue 6): the multiboot test kernel's own driver
(tests/guests/virtio-dev.h) ARPs for and pings an address on the host side of a tap, inside a
network namespace the test creates, and the host kernel answers. With bridge=, kapsel creates
the tap itself and must remove it again. PASS is exit status 85, as in test_vm.py."""
import os
import subprocess
import uuid

import pytest

from test_vm import MULTIBOOT, PASS, guests  # noqa: F401  (guests: module fixture)
from conftest import KAPSEL

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, taps)"),
    pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun"),
]


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def netns():
    name = "kapsel-" + uuid.uuid4().hex[:8]
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def in_ns(ns, *cmd):
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True)


def links(ns):
    return in_ns(ns, "ip", "-o", "link", "show").stdout


def vm_in(ns, test, *args, timeout=60):
    return subprocess.run(["ip", "netns", "exec", ns, KAPSEL, "vm", "run", "--kernel", MULTIBOOT,
                           "--transport", "mmio", "--cmdline", f"test={test}", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def tap(netns):
    sh("ip", "-n", netns, "tuntap", "add", "dev", "ktap0", "mode", "tap")
    sh("ip", "-n", netns, "addr", "add", "10.0.2.1/24", "dev", "ktap0")
    sh("ip", "-n", netns, "link", "set", "ktap0", "up")
    return netns


@pytest.fixture
def bridge(netns):
    sh("ip", "-n", netns, "link", "add", "kbr0", "type", "bridge")
    sh("ip", "-n", netns, "addr", "add", "10.0.3.1/24", "dev", "kbr0")
    sh("ip", "-n", netns, "link", "set", "kbr0", "up")
    return netns


def test_tap_arp_and_ping(tap):
    r = vm_in(tap, "net ip=10.0.2.15 host=10.0.2.1", "--net", "tap=ktap0,mac=52:54:00:12:34:56")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "net: mac 52:54:00:12:34:56" in r.stdout
    assert "net: echo reply from 10.0.2.1" in r.stdout
    assert "ktap0" in links(tap), "an existing tap must stay"


def test_tap_default_mac_is_local_unicast(tap):
    r = vm_in(tap, "net ip=10.0.2.15 host=10.0.2.1", "--net", "tap=ktap0")
    assert r.returncode == PASS, r.stdout + r.stderr
    mac = r.stdout.split("net: mac ")[1].split()[0]
    first = int(mac.split(":")[0], 16)
    assert first & 2 and not first & 1, mac


def test_bridge_creates_and_removes_tap(bridge):
    r = vm_in(bridge, "net ip=10.0.3.15 host=10.0.3.1", "--net", "bridge=kbr0")
    assert r.returncode == PASS, r.stdout + r.stderr
    assert "net: echo reply from 10.0.3.1" in r.stdout
    assert "kaptap" not in links(bridge), links(bridge)


def test_bridge_tap_removed_after_guest_failure_and_signal(bridge):
    r = vm_in(bridge, "triple", "--net", "bridge=kbr0")
    assert r.returncode == 1
    assert "kaptap" not in links(bridge)
    p = subprocess.Popen(["ip", "netns", "exec", bridge, KAPSEL, "vm", "run", "--kernel",
                          MULTIBOOT, "--transport", "mmio", "--cmdline", "test=spin", "--net",
                          "bridge=kbr0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        for _ in range(200):
            if "kaptap" in links(bridge):
                break
            subprocess.run(["sleep", "0.05"])
        assert "master kbr0" in links(bridge), links(bridge)
        p.terminate()
        p.communicate(timeout=30)
    finally:
        p.kill()
    assert "kaptap" not in links(bridge), links(bridge)


@pytest.mark.parametrize("arg,msg", [
    ("tap=nope0", "tap nope0: no such network interface"),
    ("tap=kbr0", "tap kbr0: not a tap device"),
    ("bridge=nobr0", "bridge nobr0: no such network interface"),
    ("bridge=ktap0", "bridge ktap0: not a bridge"),
    ("tap=ktap0,mac=01:00:5e:00:00:01", "is not a unicast MAC address"),
    ("tap=ktap0,mac=52:54:00:12:34", "is not a unicast MAC address"),
    ("tap=ktap0,speed=10", "unknown option \"speed=10\""),
    ("tap=ktap0,bridge=kbr0", "one of tap= or bridge="),
    ("mac=52:54:00:12:34:56", "expected tap=NAME or bridge=BR"),
    ("tap=a/b", "is not an interface name"),
    ("tap=ktap0,", "expected tap=NAME or bridge=BR"),
])
def test_bad_net_options(tap, arg, msg):
    sh("ip", "-n", tap, "link", "add", "kbr0", "type", "bridge")
    r = vm_in(tap, "pass", "--net", arg)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0], r.stderr
    assert "multiboot guest" not in r.stdout
    assert "kaptap" not in links(tap)


def test_duplicate_net_ids_and_taps(tap):
    r = vm_in(tap, "pass", "--net", "tap=ktap0,id=n", "--net", "bridge=kbr0,id=n")
    assert r.returncode == 1 and "id n already used" in r.stderr, r.stderr
    r = vm_in(tap, "pass", "--net", "tap=ktap0", "--net", "tap=ktap0")
    assert r.returncode == 1 and "tap ktap0 already used" in r.stderr, r.stderr
