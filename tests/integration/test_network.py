"""Container networking (issue 12): `kapsel network`, `kapsel run --net NETWORK -p ...`.

Every test runs kapsel inside a network namespace the test itself creates (`ip netns add`,
then `nsenter --net=...`): the bridges, veths, nftables rules and containers live there, "the
host" of a test is that namespace, and nothing reaches the machine's own network or leaves it.
Each test gets a private store and state root."""
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import time
import uuid

import pytest

import clients

pytestmark = [pytest.mark.root]


def have(cmd):
    return any(os.access(os.path.join(d, cmd), os.X_OK)
               for d in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":") +
               ["/usr/sbin", "/sbin"])


class NetK:
    """kapsel (and any command) run inside the test's network namespace."""

    def __init__(self, binary, store, root, ns):
        self.binary, self.store, self.root, self.ns = binary, store, root, ns

    def sh(self, *cmd, timeout=60, env=None):
        return clients.run(["nsenter", f"--net=/run/netns/{self.ns}"] + [str(c) for c in cmd],
                           timeout=timeout, env=env)

    def argv(self, *args):
        return ["nsenter", f"--net=/run/netns/{self.ns}", self.binary, "--store", self.store,
                "--root", self.root] + [str(a) for a in args]

    def __call__(self, *args, timeout=60):
        return clients.run(self.argv(*args), timeout=timeout)

    def leases(self):
        out = {}
        d = os.path.join(self.store, "networks")
        for f in os.listdir(d) if os.path.isdir(d) else []:
            if f.endswith(".leases.json"):
                with open(os.path.join(d, f)) as fh:
                    out.update(json.load(fh))
        return out

    def veths(self):
        r = self.sh("ip", "-o", "link", "show")
        return re.findall(r"^\d+: (kv[0-9a-f]{8})", r.stdout, re.M)

    def no_veths(self, timeout=10):
        """No veth of kapsel's left. A container's pair goes with its network namespace, which
        the kernel tears down in the background once the last reference is gone."""
        end = time.time() + timeout
        while self.veths():
            if time.time() > end:
                return False
            time.sleep(0.05)
        return True

    def nft_elements(self):
        """The per-container elements of kapsel's nftables maps (empty without the table)."""
        r = self.sh("nft", "-j", "list", "table", "ip", "kapsel")
        if r.returncode != 0:
            return []
        elems = []
        for o in json.loads(r.stdout)["nftables"]:
            m = o.get("map")
            if m and m.get("elem"):
                elems += [json.dumps(e) for e in m["elem"]]
        return elems


def responder_alive(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "kapsel-dns"
    except OSError:
        return False


@pytest.fixture
def netns():
    if not (have("ip") and have("nsenter") and have("nft")):
        pytest.skip("needs iproute2, util-linux nsenter and nftables")
    name = "kt-net-" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name])


@pytest.fixture
def k(kapsel, tmp_path, netns):
    store, root = tmp_path / "store", tmp_path / "state"
    root.mkdir()
    runner = NetK(kapsel, str(store), str(root), netns)
    r = runner("run", "--rm", "busybox", "true")
    assert r.returncode == 0, f"the embedded busybox image does not run: {r.stderr}"
    yield runner
    cdir = os.path.join(str(store), "containers")
    for c in os.listdir(cdir) if os.path.isdir(cdir) else []:
        runner("rm", "-f", c)
    # name responders outlive kapsel by design; none may outlive the test
    ndir = os.path.join(str(store), "networks")
    for f in os.listdir(ndir) if os.path.isdir(ndir) else []:
        if f.endswith(".dns.pid"):
            pid = int(open(os.path.join(ndir, f)).read())
            if responder_alive(pid):
                os.kill(pid, signal.SIGKILL)


def one_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_net_none_has_lo_up(k):
    # A new network namespace starts with lo down; podman's --net none has 127.0.0.1 working.
    r = k("run", "--rm", "busybox", "sh", "-c", "ip -o addr show lo; cat /sys/class/net/lo/operstate")
    assert r.returncode == 0, r.stderr
    assert "inet 127.0.0.1/8" in r.stdout
    r = k("run", "--rm", "busybox", "sh", "-c",
          "(echo hi | nc -l -p 7000 &) ; sleep 0.3; nc 127.0.0.1 7000 </dev/null")
    assert r.returncode == 0 and "hi" in r.stdout, (r.stdout, r.stderr)


def test_default_network_and_ls(k):
    r = k("network", "ls", "--format", "json")
    assert r.returncode == 0, r.stderr
    nets = {n["name"]: n for n in json.loads(r.stdout)}
    assert nets["kapsel"]["network_interface"] == "kapsel0"
    assert nets["kapsel"]["subnets"][0]["subnet"] == "10.88.0.0/16"
    r = k("run", "--rm", "--net", "kapsel", "busybox", "sh", "-c",
          "ip -o -4 addr show eth0; ip route; cat /etc/hosts /etc/resolv.conf /etc/hostname")
    assert r.returncode == 0, r.stderr
    assert re.search(r"eth0\s+inet 10\.88\.\d+\.\d+/16", r.stdout), r.stdout
    assert "default via 10.88.0.1 dev eth0" in r.stdout
    assert k.leases() == {} and k.no_veths()


def test_default_subnet_avoids_a_route(k):
    # 10.88.0.0/16 taken by a route of "the host": the default network picks another /16.
    k.sh("ip", "link", "add", "dummy0", "type", "bridge")
    k.sh("ip", "link", "set", "dummy0", "up")
    k.sh("ip", "addr", "add", "10.88.5.1/24", "dev", "dummy0")
    r = k("network", "inspect", "kapsel")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["subnets"][0]["subnet"] == "10.89.0.0/16"


def test_create_inspect_rm_prune(k):
    r = k("network", "create", "--subnet", "10.99.0.0/24", "--gateway", "10.99.0.254", "n1")
    assert r.returncode == 0, r.stderr
    r = k("network", "create", "--internal", "n2")
    assert r.returncode == 0, r.stderr
    info = json.loads(k("network", "inspect", "n1", "n2").stdout)
    assert info[0]["subnets"] == [{"subnet": "10.99.0.0/24", "gateway": "10.99.0.254"}]
    assert info[1]["internal"] is True and info[1]["network_interface"] == "kapsel2"
    r = k("run", "-d", "--name", "c1", "--net", "n1", "busybox", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    r = k("run", "--rm", "--net", "n1", "busybox", "ip", "route")
    assert "default via 10.99.0.254" in r.stdout, r.stdout
    r = k("network", "rm", "n1")
    assert r.returncode != 0
    assert one_line(r.stderr) == "kapsel: network n1 is in use by container c1 (rm -f removes it)"
    r = k("network", "prune")
    assert r.returncode == 0 and r.stdout.split() == ["n2"], (r.stdout, r.stderr)
    r = k("network", "rm", "-f", "n1")
    assert r.returncode == 0, r.stderr
    names = [n["name"] for n in json.loads(k("network", "ls", "--format", "json").stdout)]
    assert names == ["kapsel"]
    assert k("ps", "-a").stdout.count("c1") == 0
    assert "kapsel1" not in k.sh("ip", "link").stdout
    assert k.leases() == {} and k.no_veths()


@pytest.mark.parametrize("args,msg", [
    (["--subnet", "10.99.0.0/33", "x"], "--subnet \"10.99.0.0/33\": expected an IPv4 CIDR"),
    (["--subnet", "10.99.0.0", "x"], "--subnet \"10.99.0.0\": expected an IPv4 CIDR"),
    (["--subnet", "10.99.0.1/24", "x"], "host bits are set (10.99.0.0/24?)"),
    (["--subnet", "10.99.0.0/24", "--gateway", "10.98.0.1", "x"],
     "--gateway 10.98.0.1: not a host address of subnet 10.99.0.0/24"),
    (["--subnet", "10.88.1.0/24", "x"], "--subnet 10.88.1.0/24 overlaps network kapsel"),
    (["--subnet", "10.99.0.0/24", "bad/name"], "network name \"bad/name\""),
    (["--subnet", "10.99.0.0/24", "kapsel"], "network kapsel already exists"),
])
def test_create_bad_input(k, args, msg):
    r = k("network", "create", *args)
    assert r.returncode != 0
    assert msg in one_line(r.stderr), r.stderr
    nets = [n["name"] for n in json.loads(k("network", "ls", "--format", "json").stdout)]
    assert nets == ["kapsel"]


@pytest.mark.parametrize("args,msg", [
    (["--net", "nosuch"], "no such network nosuch"),
    (["--net", "kapsel", "--ip", "10.90.0.5"], "--ip 10.90.0.5: outside network kapsel"),
    (["--net", "kapsel", "--ip", "10.88.0.1"], "--ip 10.88.0.1: the gateway of network kapsel"),
    (["--net", "kapsel", "--ip", "banana"], "--ip \"banana\": not an IPv4 address"),
    (["--net", "kapsel", "-p", "70000:80"], "-p 70000:80: port 70000 is out of range"),
    (["--net", "kapsel", "-p", "80/sctp"], "-p 80/sctp: protocol must be tcp or udp"),
    (["--net", "kapsel", "-p", "x:80:80"], "-p x:80:80: host address is not IPv4"),
    (["--net", "kapsel", "--mac-address", "01:00:00:00:00:01"], "a multicast address"),
    (["-p", "8080:80"], "-p needs --net NETWORK"),
    (["--net", "kapsel", "--dns", "nope"], "--dns nope: not an IPv4 address"),
    (["--net", "kapsel", "--add-host", "nocolon"], "--add-host nocolon: expected NAME:IPv4"),
    (["--network-alias", "db"], "--network-alias needs --net NETWORK"),
    (["--net", "kapsel", "--network-alias", "a.b"], "--network-alias \"a.b\": not a host name"),
])
def test_run_bad_input(k, args, msg):
    r = k("run", "--rm", "--name", "bad", *args, "busybox", "true")
    assert r.returncode == 125, (r.returncode, r.stderr)
    assert msg in one_line(r.stderr), r.stderr
    assert not os.path.exists(os.path.join(k.store, "containers", "bad"))
    assert k.leases() == {} and k.no_veths()


def test_ip_taken_and_port_taken(k):
    r = k("run", "-d", "--name", "a", "--net", "kapsel", "--ip", "10.88.0.9", "-p", "8080:80",
          "busybox", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    r = k("run", "--rm", "--name", "b", "--net", "kapsel", "--ip", "10.88.0.9", "busybox", "true")
    assert r.returncode == 125
    assert "--ip 10.88.0.9: already used by container a" in one_line(r.stderr)
    r = k("run", "--rm", "--name", "b", "--net", "kapsel", "-p", "127.0.0.1:8080:81",
          "busybox", "true")
    assert r.returncode == 125
    assert "host port already published by container a" in one_line(r.stderr)
    # a host process holding the port
    holder = subprocess.Popen(["nsenter", f"--net=/run/netns/{k.ns}", "busybox", "nc", "-l", "-p",
                               "9090"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        r = k("run", "--rm", "--name", "b", "--net", "kapsel", "-p", "9090:80", "busybox", "true")
        assert r.returncode == 125
        assert "host port tcp/9090 is already in use" in one_line(r.stderr)
    finally:
        holder.kill()
        holder.wait()
    assert not os.path.exists(os.path.join(k.store, "containers", "b"))
    assert list(k.leases()) == ["10.88.0.9"]
    assert k("rm", "-f", "a").returncode == 0
    assert k.leases() == {} and k.no_veths() and k.nft_elements() == []


def test_two_containers_ping_and_tcp(k):
    assert k("network", "create", "--subnet", "10.77.0.0/24", "pair").returncode == 0
    r = k("run", "-d", "--name", "srv", "--net", "pair", "--ip", "10.77.0.10", "--hostname",
          "srvhost", "--mac-address", "02:42:0a:4d:00:0a", "busybox", "nc", "-ll", "-p",
          "5000", "-e", "echo", "hello-tcp")
    assert r.returncode == 0, r.stderr
    # by address, by the name the network's responder gives out, and by --add-host
    r = k("run", "--rm", "--net", "pair", "--cap-add", "NET_RAW", "--add-host", "other:10.77.0.10",
          "busybox", "sh", "-c",
          "cat /etc/resolv.conf; ping -c1 -W3 10.77.0.10 && nc 10.77.0.10 5000 </dev/null && "
          "ping -c1 -W3 srv && nc srv 5000 </dev/null && nc other 5000 </dev/null")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.startswith("nameserver 10.77.0.1\n"), r.stdout
    assert r.stdout.count("1 packets received") == 2 and r.stdout.count("hello-tcp") == 3
    r = k("exec", "srv", "sh", "-c", "cat /sys/class/net/eth0/address /etc/hostname /etc/hosts")
    assert "02:42:0a:4d:00:0a" in r.stdout and "srvhost" in r.stdout
    assert "10.77.0.10\tsrvhost srv" in r.stdout, r.stdout
    # --dns replaces the responder
    r = k("run", "--rm", "--net", "pair", "--dns", "10.77.0.99", "busybox", "cat",
          "/etc/resolv.conf")
    assert r.stdout == "nameserver 10.77.0.99\n", r.stdout


def test_names_resolve_only_on_user_networks(k):
    assert k("network", "create", "--subnet", "10.78.0.0/24", "named").returncode == 0
    assert k("run", "-d", "--name", "alpha", "--net", "named", "--network-alias", "db",
             "--network-alias", "primary", "busybox", "sleep", "1000").returncode == 0
    for name in ("alpha", "db", "PRIMARY"):
        r = k("run", "--rm", "--net", "named", "busybox", "nslookup", name)
        assert "Address: 10.78.0.2" in r.stdout, (name, r.stdout, r.stderr)
    # unknown names are refused (the resolver goes on to the host's nameservers)
    r = k("run", "--rm", "--net", "named", "busybox", "nslookup", "nosuch")
    assert "REFUSED" in r.stdout + r.stderr
    # the default network has no responder, as in podman
    assert k("run", "-d", "--name", "beta", "--net", "kapsel", "busybox", "sleep", "1000"
             ).returncode == 0
    r = k("run", "--rm", "--net", "kapsel", "busybox", "cat", "/etc/resolv.conf")
    assert "10.88.0.1" not in r.stdout
    assert not os.path.exists(os.path.join(k.store, "networks", "kapsel.dns.pid"))
    # the responder survives garbage (hostile containers) and still answers
    garbage = ("import socket\n"
               "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
               "for p in [b'', b'x', b'\\0' * 12 + b'\\xc0\\x0c', b'\\0\\1\\0\\0\\0\\1' + b'\\0' * 6 + "
               "b'\\x3f' * 600, b'\\0\\1\\0\\0\\0\\1' + b'\\0' * 6 + b'\\5alpha']:\n"
               "    s.sendto(p, ('10.78.0.1', 53))\n")
    r = k.sh("/usr/bin/python3", "-c", garbage)
    assert r.returncode == 0, r.stderr
    r = k("run", "--rm", "--net", "named", "busybox", "nslookup", "alpha")
    assert "Address: 10.78.0.2" in r.stdout, (r.stdout, r.stderr)
    pid = int(open(os.path.join(k.store, "networks", "named.dns.pid")).read())
    assert responder_alive(pid)
    # it goes with the network's last container
    assert k("rm", "-f", "alpha").returncode == 0
    end = time.time() + 5
    while responder_alive(pid) and time.time() < end:
        time.sleep(0.05)
    assert not responder_alive(pid)


UDP_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
while True:
    d, a = s.recvfrom(100)
    s.sendto(b"echo:" + d, a)
"""
UDP_ASK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for _ in range(5):
    s.sendto(b"over-udp", (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recvfrom(100)[0].decode())
        break
    except socket.timeout:
        pass
"""
# busybox has no UDP server: the container runs the host's python3 from read-only binds.
PY_BINDS = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro"]


def test_published_port_tcp_udp(k):
    r = k("run", "-d", "--name", "web", "--net", "kapsel", "-p", "8080:80", "busybox", "nc",
          "-ll", "-p", "80", "-e", "echo", "served")
    assert r.returncode == 0, r.stderr
    r = k("run", "-d", "--name", "dns", "--net", "kapsel", "-p", "127.0.0.1:5353:53/udp",
          *PY_BINDS, "busybox", "/usr/bin/python3", "-c", UDP_ECHO)
    assert r.returncode == 0, r.stderr
    time.sleep(0.5)
    # from the test's "host": its 127.0.0.1 and the bridge's address
    for addr in ("127.0.0.1", "10.88.0.1"):
        r = k.sh("busybox", "nc", "-w", "3", addr, "8080", timeout=20)
        assert "served" in r.stdout, (addr, r.stdout, r.stderr)
    r = k.sh("/usr/bin/python3", "-c", UDP_ASK, "127.0.0.1", "5353", timeout=30)
    assert "echo:over-udp" in r.stdout, (r.stdout, r.stderr)
    # published only on 127.0.0.1: the bridge address does not answer
    r = k.sh("/usr/bin/python3", "-c", UDP_ASK, "10.88.0.1", "5353", timeout=30)
    assert "echo:" not in r.stdout
    assert len(k.nft_elements()) == 2
    for c in ("web", "dns"):
        r = k("stop", "-t", "1", c)
        assert r.returncode == 0, r.stderr
    # an exited container holds no address, veth or rule
    assert k.leases() == {} and k.no_veths() and k.nft_elements() == []


def test_internal_has_no_way_out(k):
    assert k("network", "create", "--internal", "--subnet", "10.66.0.0/24", "in").returncode == 0
    # "outside" for this test: an address on a link of the test's own namespace
    k.sh("ip", "link", "add", "out0", "type", "bridge")
    k.sh("ip", "link", "set", "out0", "up")
    k.sh("ip", "addr", "add", "192.0.2.1/24", "dev", "out0")
    r = k("run", "--rm", "--net", "in", "busybox", "sh", "-c", "ip route; nc -w 2 192.0.2.1 9 </dev/null")
    assert "default" not in r.stdout
    assert r.returncode != 0
    r = k("run", "--rm", "--net", "kapsel", "busybox", "ip", "route")
    assert "default via 10.88.0.1" in r.stdout


def test_concurrent_runs_get_distinct_addresses(k):
    n = int(os.environ.get("KAPSEL_NET_CONCURRENT", "50"))
    names = [f"par{i}" for i in range(n)]

    def start(name):
        return k("run", "-d", "--name", name, "--net", "kapsel", "busybox", "sleep", "1000",
                 timeout=300)

    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as ex:
        results = list(ex.map(start, names))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    leases = k.leases()
    assert sorted(v["container"] for v in leases.values()) == sorted(names)
    addrs = set()
    for name in names:
        with open(os.path.join(k.store, "containers", name, "hosts")) as f:
            addrs.add(f.read().splitlines()[-1].split()[0])
    assert len(addrs) == n and set(leases) == addrs
    assert len(k.veths()) == n
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as ex:
        results = list(ex.map(lambda nm: k("rm", "-f", nm, timeout=300), names))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    assert k.leases() == {} and k.no_veths()
    r = k("run", "--rm", "--net", "kapsel", "busybox", "ip", "-o", "-4", "addr", "show", "eth0")
    assert "10.88.0.2/16" in r.stdout, r.stdout


def wait_stopped(pid, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.01)
    raise AssertionError(f"kapsel never reached its fault point (pid {pid})")


@pytest.mark.parametrize("step", ["net:netns", "net:leased", "net:veth", "net:ports"])
def test_kill_during_setup_leaks_nothing(k, step):
    env = dict(os.environ, KAPSEL_FAULT_STOP=step)
    p = subprocess.Popen(k.argv("run", "--name", "victim", "--net", "kapsel", "-p", "8081:80",
                                "busybox", "sleep", "1000"),
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_stopped(p.pid)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    r = k("rm", "-f", "victim")
    assert r.returncode == 0, r.stderr
    assert k.leases() == {} and k.no_veths() and k.nft_elements() == []
    with open("/proc/self/mountinfo") as f:
        assert k.store not in f.read()
    # the address and the port are free again
    r = k("run", "--rm", "--net", "kapsel", "-p", "8081:80", "busybox", "ip", "-o", "-4", "addr",
          "show", "eth0")
    assert r.returncode == 0 and "10.88.0.2/16" in r.stdout, (r.stdout, r.stderr)


def test_sweep_frees_lease_of_vanished_container(k):
    # A lease whose container directory is gone (kapsel killed, the directory removed by hand)
    # is given back by the next allocation.
    r = k("run", "-d", "--name", "ghost", "--net", "kapsel", "busybox", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    path = os.path.join(k.store, "networks", "kapsel.leases.json")
    with open(path) as f:
        saved = json.load(f)
    assert k("rm", "-f", "ghost").returncode == 0
    saved["10.88.0.7"] = dict(saved.pop("10.88.0.2"), container="gone-for-good")
    with open(path, "w") as f:
        json.dump(saved, f)
    r = k("run", "--rm", "--net", "kapsel", "--ip", "10.88.0.7", "busybox", "true")
    assert r.returncode == 0, r.stderr
    assert k.leases() == {}


def test_connect_disconnect(k):
    for net, sub in (("front", "10.61.0.0/24"), ("back", "10.62.0.0/24")):
        assert k("network", "create", "--subnet", sub, net).returncode == 0
    assert k("run", "-d", "--name", "app", "--net", "front", "busybox", "nc", "-ll", "-p", "7000",
             "-e", "echo", "from-app").returncode == 0
    assert k("run", "-d", "--name", "quiet", "busybox", "sleep", "1000").returncode == 0
    r = k("network", "connect", "back", "app")
    assert r.returncode == 0, r.stderr
    r = k("exec", "app", "sh", "-c", "ip -o -4 addr show; ip route")
    assert re.search(r"eth1\s+inet 10\.62\.0\.2/24", r.stdout), r.stdout
    assert "default via 10.61.0.1 dev eth0" in r.stdout
    # reachable from the second network, by name too
    r = k("run", "--rm", "--net", "back", "busybox", "sh", "-c", "nc app 7000 </dev/null")
    assert "from-app" in r.stdout, (r.stdout, r.stderr)
    r = k("network", "connect", "back", "app")
    assert r.returncode != 0
    assert one_line(r.stderr) == "kapsel: container app is already connected to network back"
    r = k("network", "connect", "back", "quiet")
    assert r.returncode != 0 and "connect needs one run with --net NETWORK" in one_line(r.stderr)
    r = k("network", "connect", "nosuch", "app")
    assert r.returncode != 0 and "no such network nosuch" in one_line(r.stderr)
    assert k("network", "disconnect", "back", "app").returncode == 0
    r = k("exec", "app", "ip", "-o", "link", "show")
    assert "eth1" not in r.stdout and "eth0" in r.stdout
    r = k("network", "disconnect", "back", "app")
    assert r.returncode != 0
    assert one_line(r.stderr) == "kapsel: container app is not connected to network back"
    assert [ip for ip, v in k.leases().items() if v["container"] == "app"] == ["10.61.0.2"]
    # rm gives back every network's lease
    assert k("network", "connect", "back", "app").returncode == 0
    assert k("rm", "-f", "app").returncode == 0
    assert k.leases() == {} and k.no_veths()
