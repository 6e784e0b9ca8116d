"""Container networking, part four (issue 12): `network connect --ip/--ip6/--mac-address/
--alias`, the IPv6 gateway in a dual-stack container's resolv.conf, alias names checked, and
addresses given back when kapsel itself died (its monitor killed, or the kapsel making the
container killed) without an `rm`.

As in test_network.py, every test runs kapsel inside a network namespace the test creates
(test_network's fixtures); DNS queries go from that namespace to the bridge's gateways."""
import json
import os
import signal
import subprocess
import time

import pytest

from test_network import k, netns, one_line, wait_stopped  # noqa: F401 (fixtures)
from test_network3 import ask

pytestmark = [pytest.mark.root]


def lease_of(k, container, network=None):
    d = os.path.join(k.store, "networks")
    for f in sorted(os.listdir(d)):
        if f.endswith(".leases.json") and (network is None or f == f"{network}.leases.json"):
            with open(os.path.join(d, f)) as fh:
                for ip, v in json.load(fh).items():
                    if v["container"] == container:
                        return dict(v, ip=ip)
    return None


def mounted(k):
    with open("/proc/self/mountinfo") as f:
        return k.store in f.read()


def wait_gone(pid, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} still alive")


# ---- network connect with addresses, MAC and aliases ----

def test_connect_with_ip_ip6_mac_alias(k):
    assert k("network", "create", "--subnet", "10.71.0.0/24", "--subnet", "fd00:71::/64",
             "c6").returncode == 0
    assert k("run", "-d", "--name", "app", "--net", "kapsel", "busybox", "sleep",
             "1000").returncode == 0
    r = k("network", "connect", "--ip", "10.71.0.50", "--ip6", "fd00:71::50", "--mac-address",
          "02:42:0a:47:00:50", "--alias", "web", "--alias", "shop-1", "c6", "app")
    assert r.returncode == 0, r.stderr
    r = k("exec", "app", "ip", "-o", "addr", "show", "eth1")
    assert "inet 10.71.0.50/24" in r.stdout and "inet6 fd00:71::50/64" in r.stdout, r.stdout
    r = k("exec", "app", "cat", "/sys/class/net/eth1/address")
    assert r.stdout.strip() == "02:42:0a:47:00:50"
    lease = lease_of(k, "app", "c6")
    assert lease["ip"] == "10.71.0.50" and lease["ip6"] == "fd00:71::50"
    assert lease["aliases"] == ["web", "shop-1"]
    # the network's responder answers for the container's name and both aliases
    for name in ("app", "web", "shop-1"):
        assert ask(k, "10.71.0.1", name, 1)["answers"] == [[1, "10.71.0.50"]], name
        assert ask(k, "fd00:71::1", name, 28)["answers"] == [[28, "fd00:71::50"]], name
    # the chosen addresses are taken now
    assert k("run", "-d", "--name", "other", "--net", "kapsel", "busybox", "sleep",
             "1000").returncode == 0
    r = k("network", "connect", "--ip", "10.71.0.50", "c6", "other")
    assert r.returncode != 0
    assert one_line(r.stderr) == "kapsel: --ip 10.71.0.50: already used by container app"
    r = k("network", "connect", "--ip6", "fd00:71::50", "c6", "other")
    assert r.returncode != 0
    assert one_line(r.stderr) == "kapsel: --ip6 fd00:71::50: already used by container app"
    assert lease_of(k, "other", "c6") is None
    assert k("rm", "-f", "app", "other").returncode == 0
    assert k.leases() == {} and k.no_veths()


@pytest.mark.parametrize("args,msg", [
    (["--ip", "10.72.1.5"], "--ip 10.72.1.5: outside network v4 (10.72.0.0/24)"),
    (["--ip", "10.72.0.1"], "--ip 10.72.0.1: the gateway of network v4"),
    (["--ip", "nonsense"], "--ip \"nonsense\""),
    (["--ip6", "fd00:72::5"], "--ip6 fd00:72::5: network v4 has no IPv6 subnet"),
    (["--mac-address", "02:42:zz:00:00:01"], "02:42:zz:00:00:01"),
    (["--alias", "bad_name"], "--alias \"bad_name\": not a host name (one label)"),
    (["--alias", "-lead"], "--alias \"-lead\": not a host name (one label)"),
    (["--alias", "a" * 64], "not a host name (one label)"),
    (["--alias", "www.shop"], "--alias \"www.shop\": not a host name (one label)"),
])
def test_connect_bad_input(k, args, msg):
    assert k("network", "create", "--subnet", "10.72.0.0/24", "v4").returncode == 0
    assert k("run", "-d", "--name", "app", "--net", "kapsel", "busybox", "sleep",
             "1000").returncode == 0
    before = k.leases()
    r = k("network", "connect", *args, "v4", "app")
    assert r.returncode == 125, r.stderr
    assert msg in one_line(r.stderr)
    # nothing made: no lease, no second interface
    assert k.leases() == before
    r = k("exec", "app", "ip", "-o", "link", "show")
    assert "eth1" not in r.stdout


# ---- resolv.conf on a dual-stack network ----

def test_resolv_conf_names_both_gateways(k):
    assert k("network", "create", "--subnet", "10.74.0.0/24", "--subnet", "fd00:74::/64",
             "d6").returncode == 0
    assert k("run", "-d", "--name", "alpha", "--net", "d6", "busybox", "sleep",
             "1000").returncode == 0
    r = k("run", "--rm", "--net", "d6", "busybox", "cat", "/etc/resolv.conf")
    servers = [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("nameserver")]
    assert servers[:2] == ["10.74.0.1", "fd00:74::1"], r.stdout
    # the second one answers too: a container asks it alone, over IPv6
    r = k("run", "--rm", "--net", "d6", "busybox", "nslookup", "alpha", "fd00:74::1")
    assert "10.74.0.2" in r.stdout, (r.stdout, r.stderr)
    # an IPv4-only network still lists only its gateway of its own
    assert k("network", "create", "--subnet", "10.75.0.0/24", "v4only").returncode == 0
    r = k("run", "--rm", "--net", "v4only", "busybox", "cat", "/etc/resolv.conf")
    servers = [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("nameserver")]
    assert servers[0] == "10.75.0.1" and not any(":" in s for s in servers[:1]), r.stdout
    assert "fd00:74::1" not in r.stdout


# ---- kapsel killed: addresses come back without rm ----

def monitor_of(k, name):
    with open(os.path.join(k.store, "containers", name, "container.json")) as f:
        pid = json.load(f)["monitorPid"]
    with open(f"/proc/{pid}/cmdline") as f:
        assert f"--name\0{name}\0" in f.read()
    return pid


def init_of(k, name):
    with open(os.path.join(k.store, "containers", name, "ctr.pid")) as f:
        return int(f.read())


def test_monitor_killed_then_container_exits(k):
    assert k("run", "-d", "--name", "a", "--net", "kapsel", "-p", "8091:80", "busybox", "sleep",
             "1000").returncode == 0
    assert lease_of(k, "a")["ip"] == "10.88.0.2"
    mon, init = monitor_of(k, "a"), init_of(k, "a")
    os.kill(mon, signal.SIGKILL)
    wait_gone(mon)
    # the container outlives its monitor: it keeps its address meanwhile
    r = k("run", "--rm", "--net", "kapsel", "busybox", "ip", "-o", "-4", "addr", "show", "eth0")
    assert "10.88.0.3/16" in r.stdout, r.stdout
    assert lease_of(k, "a")["ip"] == "10.88.0.2"
    os.kill(init, signal.SIGKILL)
    wait_gone(init)
    # now nobody answers for it: the next allocation gives its address and port back
    r = k("run", "--rm", "--net", "kapsel", "-p", "8091:80", "busybox", "ip", "-o", "-4",
          "addr", "show", "eth0")
    assert r.returncode == 0 and "10.88.0.2/16" in r.stdout, (r.stdout, r.stderr)
    assert lease_of(k, "a") is None and k.no_veths() and k.nft_elements() == []
    assert not mounted(k)
    r = k("ps", "-a", "--format", "{{.Names}} {{.Status}}")
    assert r.stdout.startswith("a Exited"), r.stdout
    assert k("rm", "a").returncode == 0


def test_network_commands_reap_too(k):
    assert k("network", "create", "--subnet", "10.76.0.0/24", "gone").returncode == 0
    assert k("run", "-d", "--name", "b", "--net", "gone", "busybox", "sleep",
             "1000").returncode == 0
    mon, init = monitor_of(k, "b"), init_of(k, "b")
    os.kill(mon, signal.SIGKILL)
    os.kill(init, signal.SIGKILL)
    wait_gone(mon)
    wait_gone(init)
    r = k("network", "inspect", "gone")
    assert json.loads(r.stdout)[0]["containers"] == {} or not json.loads(r.stdout)[0].get(
        "containers"), r.stdout
    # the network is no longer in use
    r = k("network", "rm", "gone")
    assert r.returncode == 0, r.stderr
    assert k.leases() == {} and not mounted(k)


@pytest.mark.parametrize("step", ["net:leased", "net:veth", "net:ports"])
def test_kill_during_setup_reaped_by_next_run(k, step):
    env = dict(os.environ, KAPSEL_FAULT_STOP=step)
    p = subprocess.Popen(k.argv("run", "--name", "victim", "--net", "kapsel", "-p", "8092:80",
                                "busybox", "sleep", "1000"),
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_stopped(p.pid)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    # killed: its address and port are free for the next run, without an rm
    r = k("run", "--rm", "--net", "kapsel", "-p", "8092:80", "busybox", "ip", "-o", "-4",
          "addr", "show", "eth0")
    assert r.returncode == 0 and "10.88.0.2/16" in r.stdout, (r.stdout, r.stderr)
    assert lease_of(k, "victim") is None and k.no_veths() and k.nft_elements() == []
    # the rest of it waits for rm -f, as before
    assert k("rm", "-f", "victim").returncode == 0
    assert not mounted(k)
