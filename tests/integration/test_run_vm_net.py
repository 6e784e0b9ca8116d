"""`kapsel run --vm --net NETWORK` (issue 14, item 5): the VM gets a virtio-net card on a tap of
the network's bridge with the address the network leased, and kapsel-agent configures the
guest's interface, lo, default route, /etc/hosts, /etc/resolv.conf and hostname. A VM container
and a plain container on one network reach each other by address and by name, -p publishes a
port of the VM, and the tap is gone after the VM's exit and after a kill -9 of its VMM.

As test_network.py, every test runs kapsel inside a network namespace it creates (nsenter), so
nothing touches the machine's own network. The Linux-guest tests boot Debian's kernel and need
KVM at hardware speed: they skip elsewhere with the measured rate, and scripts/vm-tests.sh
--nested runs them in nested SVM under QEMU TCG. The refusals run everywhere."""
import json
import os
import re
import signal
import subprocess
import time
import uuid

import pytest

from conftest import KAPSEL
from test_network import NetK, have, responder_alive
from test_run_vm import BOOT_TIMEOUT, cached_kernel, guest_kernel, one_line_125, traces, vmtmp
from test_vm_linux import need_linux_speed

pytestmark = [pytest.mark.root]


class VmNetK(NetK):
    """NetK with the guest kernel and boot timeout in the environment of every kapsel run."""

    def __init__(self, binary, store, root, ns, kernel):
        super().__init__(binary, store, root, ns)
        self.env = {**os.environ, "KAPSEL_VM_KERNEL": kernel,
                    "KAPSEL_VM_BOOT_TIMEOUT": BOOT_TIMEOUT}

    def __call__(self, *args, timeout=900, input=None):
        return subprocess.run(self.argv(*args), capture_output=True, text=True,
                              timeout=timeout, env=self.env, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def taps(self):
        """The taps kapsel's VMM made (kaptapN) in the test's namespace."""
        r = self.sh("ip", "-o", "link", "show")
        return re.findall(r"^\d+: (kaptap\d+)", r.stdout, re.M)

    def no_taps(self, timeout=10):
        end = time.time() + timeout
        while self.taps():
            if time.time() > end:
                return False
            time.sleep(0.05)
        return True


@pytest.fixture
def netns():
    if not (have("ip") and have("nsenter") and have("nft")):
        pytest.skip("needs iproute2, util-linux nsenter and nftables")
    name = "kt-vmnet-" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name])


def make_k(tmp_path, netns, kernel):
    store, root = tmp_path / "store", tmp_path / "state"
    root.mkdir()
    return VmNetK(KAPSEL, str(store), str(root), netns, kernel)


def cleanup(k):
    cdir = os.path.join(k.store, "containers")
    for c in os.listdir(cdir) if os.path.isdir(cdir) else []:
        k("rm", "-f", c, timeout=600)
    ndir = os.path.join(k.store, "networks")
    for f in os.listdir(ndir) if os.path.isdir(ndir) else []:
        if f.endswith(".dns.pid"):
            pid = int(open(os.path.join(ndir, f)).read())
            if responder_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def vk(tmp_path, netns, cgroupfs):
    """kapsel in the test's namespace, with the guest kernel (Linux-guest tests)."""
    if not os.path.exists("/dev/kvm"):
        pytest.skip("needs /dev/kvm")
    need_linux_speed()
    k = make_k(tmp_path, netns, guest_kernel())
    yield k
    cleanup(k)


def wait_log(k, name, text, timeout=600):
    end = time.time() + timeout
    while time.time() < end:
        r = k("logs", name)
        if text in r.stdout:
            return
        time.sleep(0.5)
    raise AssertionError(f"{name}: no {text!r} in its log: {k('logs', name).stdout!r}")


# ---- refused before anything exists ----

@pytest.mark.parametrize("flags,words", [
    (["--net", "host"], ["--net host", "cannot apply"]),
    (["--net", "pasta"], ["--net pasta", "cannot apply"]),
    (["--net", "ns:/proc/self/ns/net"], ["ns:PATH", "cannot apply"]),
    (["-p", "8080:80"], ["-p/-P without --net NETWORK", "cannot apply"]),
    (["--net", "no-such-net"], ["no-such-net"]),
    (["--net", "kapsel", "--ip", "10.99.0.5"], ["10.99.0.5"]),
    (["--net", "kapsel", "--mac-address", "01:00:00:00:00:01"], ["multicast"]),
])
def test_vm_net_refused(tmp_path, netns, flags, words):
    """--net modes a VM cannot join, -p without a network, an unknown network and bad --ip or
    --mac-address: one line, exit 125, nothing made (no store, container, tap or lease)."""
    k = make_k(tmp_path, netns, cached_kernel())
    name = "kvn-" + uuid.uuid4().hex[:8]
    before = vmtmp()
    r = k("run", "--vm", "--rm", "--name", name, *flags, "busybox", "true")
    line = one_line_125(r)
    for w in words:
        assert w in line, line
    assert traces(k, name, before) == [] and k.taps() == []
    assert not os.path.exists(os.path.join(k.store, "containers", name))
    assert k.leases() == {}


# ---- Linux guests: in the nested runner ----

def inspect_ip(k, name):
    info = json.loads(k("inspect", name).stdout)[0]
    nets = info["NetworkSettings"]["Networks"]
    return next(iter(nets.values()))["IPAddress"]


def test_vm_and_container_on_one_network(vk):
    """A detached VM container serving HTTP (busybox httpd) with -p, a plain container serving
    TCP (nc), both on one user-defined network: each reaches the other by address and by the
    name the network's responder gives out, the published port reaches the server in the VM
    from the host, the guest has its --ip, --mac-address, hostname, /etc/hosts, resolv.conf,
    lo and default route; after stop the tap, lease and port rule are gone, and `start` puts
    the VM back on the network with the same address."""
    k = vk
    assert k("network", "create", "--subnet", "10.79.0.0/24", "mixed").returncode == 0
    r = k("run", "-d", "--name", "plain", "--net", "mixed", "busybox", "nc", "-ll", "-p",
          "5000", "-e", "echo", "hello-from-plain")
    assert r.returncode == 0, r.stderr
    taps0 = k.taps()
    r = k("run", "--vm", "-d", "--name", "vmc", "--net", "mixed", "--ip", "10.79.0.50",
          "--mac-address", "02:42:0a:4f:00:32", "--hostname", "vmhost", "-p", "8081:80",
          "busybox", "sh", "-c",
          "mkdir -p /www && echo hello-from-vm > /www/index.html && "
          "httpd -p 80 -h /www && echo serving && exec sleep 100000")
    assert r.returncode == 0, r.stderr
    try:
        wait_log(k, "vmc", "serving")
        assert len(k.taps()) == len(taps0) + 1, k.taps()
        # the guest's own view
        r = k("exec", "vmc", "sh", "-c",
              "cat /sys/class/net/lo/operstate; ip -o addr show; ip route; hostname; "
              "cat /etc/hosts /etc/resolv.conf")
        assert r.returncode == 0, r.stderr
        out = r.stdout
        assert "inet 127.0.0.1/8" in out and "inet 10.79.0.50/24" in out, out
        assert "default via 10.79.0.1" in out, out
        assert "vmhost" in out and "10.79.0.50\tvmhost vmc" in out, out
        assert "nameserver 10.79.0.1" in out, out
        r = k("exec", "vmc", "cat", "/sys/class/net/eth0/address")
        assert r.stdout.strip() == "02:42:0a:4f:00:32", r.stdout + r.stderr
        assert inspect_ip(k, "vmc") == "10.79.0.50"
        r = k("network", "connect", "kapsel", "vmc")
        assert r.returncode != 0 and "runs in a VM" in r.stderr, r.stderr
        plain_ip = inspect_ip(k, "plain")
        # plain container -> VM: by address and by name (busybox 1.35's wget -T segfaults)
        r = k("run", "--rm", "--net", "mixed", "--cap-add", "NET_RAW", "busybox", "sh", "-c",
              "ping -c1 -W10 10.79.0.50 && wget -qO- http://10.79.0.50/ && "
              "ping -c1 -W10 vmc && wget -qO- http://vmc/", timeout=300)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert r.stdout.count("hello-from-vm") == 2, r.stdout
        # VM -> plain container: by address and by name
        r = k("exec", "vmc", "sh", "-c",
              f"ping -c1 -W10 {plain_ip} && nc -w 30 {plain_ip} 5000 </dev/null && "
              "ping -c1 -W10 plain && nc -w 30 plain 5000 </dev/null")
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert r.stdout.count("hello-from-plain") == 2, r.stdout
        # the published port, from the test's "host": its 127.0.0.1 and the bridge's address
        for addr in ("127.0.0.1", "10.79.0.1"):
            r = k.sh("busybox", "wget", "-qO-", f"http://{addr}:8081/",
                     timeout=120)
            assert "hello-from-vm" in r.stdout, (addr, r.stdout, r.stderr)
        r = k("stop", "-t", "60", "vmc", timeout=600)
        assert r.returncode == 0, r.stderr
        assert k.no_taps() or k.taps() == taps0, k.taps()
        leases = k.leases()
        assert "10.79.0.50" not in json.dumps(leases), leases
        assert not any("8081" in e for e in k.nft_elements()), k.nft_elements()
        assert not os.path.exists(os.path.join(k.store, "containers", "vmc", "vm.net"))
        # start: the same VM again, on the network with the same address
        r = k("start", "vmc", timeout=600)
        assert r.returncode == 0, r.stderr
        end = time.time() + 600
        while time.time() < end and k("logs", "vmc").stdout.count("serving") < 2:
            time.sleep(0.5)
        r = k.sh("busybox", "wget", "-qO-", "http://127.0.0.1:8081/", timeout=120)
        assert "hello-from-vm" in r.stdout, (r.stdout, r.stderr)
    finally:
        k("rm", "-f", "vmc", timeout=600)
    assert k.taps() == taps0 and "10.79.0.50" not in json.dumps(k.leases())


def vmm_pid(monitor):
    """The VMM: the VM container monitor's child (run/run-vm.c forks it)."""
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
        except OSError:
            continue
        if int(st[st.rindex(")") + 2:].split()[1]) == monitor:
            return int(p)
    return None


def test_tap_gone_after_exit_and_vmm_kill(vk):
    """The tap lives as long as the VMM: gone after a foreground run --rm ends, and after a
    kill -9 of a detached VM's VMM, whose monitor then records the exit and gives the lease
    back."""
    k = vk
    before = vmtmp()
    r = k("run", "--vm", "--rm", "--name", "once", "--net", "kapsel", "busybox", "sh", "-c",
          "ip -o addr show eth0; ls /sys/class/net")
    assert r.returncode == 0, r.stderr
    assert re.search(r"inet 10\.88\.0\.\d+/16", r.stdout), r.stdout
    assert k.no_taps() and k.leases() == {}, (k.taps(), k.leases())
    assert traces(k, "once", before) == []
    r = k("run", "--vm", "-d", "--name", "victim", "--net", "kapsel", "busybox", "sh", "-c",
          "echo up; exec sleep 100000")
    assert r.returncode == 0, r.stderr
    try:
        wait_log(k, "victim", "up")
        assert len(k.taps()) == 1 and k.leases() != {}
        meta = json.load(open(os.path.join(k.store, "containers", "victim", "container.json")))
        pid = vmm_pid(meta["monitorPid"])
        assert pid, "no VMM under the monitor"
        os.kill(pid, signal.SIGKILL)
        end = time.time() + 120
        while time.time() < end and \
                k("inspect", "-f", "{{.State.Status}}", "victim").stdout.strip() != "exited":
            time.sleep(0.2)
        assert k("inspect", "-f", "{{.State.Status}}", "victim").stdout.strip() == "exited"
        assert k.no_taps() and k.leases() == {}, (k.taps(), k.leases())
    finally:
        k("rm", "-f", "victim", timeout=600)
    assert traces(k, "victim", before) == []
