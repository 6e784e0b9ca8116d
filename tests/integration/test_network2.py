"""Container networking, part two (issue 12): `run -P` / `--expose` and `kapsel port`,
`--net container:NAME` and `--net ns:PATH`, and a rootless `run -p` through passt's pasta.

As in test_network.py, every test runs kapsel inside a network namespace the test creates: the
root tests through test_network's fixtures (`ip netns add` + nsenter), the rootless test under
`unshare -n -m`, so pasta's "host" is that namespace and nothing leaves it."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time

import pytest

from conftest import KAPSEL
from test_network import k, netns, one_line  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.root]

SERVE = ["nc", "-ll", "-p", "80", "-e", "echo", "served"]


def port_lines(k, name, *extra):
    r = k("port", name, *extra)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def host_port(k, name, ctr):
    """The host port `kapsel port NAME CTR` names (it prints 0.0.0.0:PORT)."""
    lines = port_lines(k, name, ctr)
    assert len(lines) == 1 and re.fullmatch(r"0\.0\.0\.0:\d+", lines[0]), lines
    return int(lines[0].split(":")[1])


def fetch(k, port, addr="127.0.0.1"):
    return k.sh("busybox", "nc", "-w", "3", addr, str(port), timeout=20).stdout


def wait_served(k, port, addr="127.0.0.1", timeout=5):
    end = time.time() + timeout
    while time.time() < end:
        if "served" in fetch(k, port, addr):
            return True
        time.sleep(0.2)
    return False


def ephemeral_range(k):
    r = k.sh("cat", "/proc/sys/net/ipv4/ip_local_port_range")
    lo, hi = map(int, r.stdout.split())
    return lo, hi


# ---- -P, --expose, kapsel port ----

def test_publish_all_expose_and_port(k):
    r = k("run", "-d", "--name", "web", "--net", "kapsel", "--expose", "80", "--expose",
          "53/udp", "-P", "-p", "8080:81", "busybox", *SERVE)
    assert r.returncode == 0, r.stderr
    lines = port_lines(k, "web")
    assert "81/tcp -> 0.0.0.0:8080" in lines, lines
    assert len(lines) == 3, lines
    lo, hi = ephemeral_range(k)
    picked = {}
    for ln in lines:
        m = re.fullmatch(r"(\d+)/(tcp|udp) -> 0\.0\.0\.0:(\d+)", ln)
        assert m, ln
        picked[f"{m[1]}/{m[2]}"] = int(m[3])
    assert set(picked) == {"80/tcp", "53/udp", "81/tcp"}
    for key in ("80/tcp", "53/udp"):
        assert lo <= picked[key] <= hi, (key, picked[key], lo, hi)
    # the picked port answers, from the test's "host" (127.0.0.1 and the bridge address)
    hp = host_port(k, "web", "80")
    assert hp == picked["80/tcp"]
    assert wait_served(k, hp), "the -P port does not answer on 127.0.0.1"
    assert "served" in fetch(k, hp, "10.88.0.1")
    assert host_port(k, "web", "53/udp") == picked["53/udp"]
    # recorded in the lease and shown by inspect, as podman's NetworkSettings.Ports
    lease = next(iter(k.leases().values()))
    assert f"tcp:0.0.0.0:{hp}:80" in lease["ports"], lease
    ports = json.loads(k("inspect", "web").stdout)[0]["NetworkSettings"]["Ports"]
    assert ports["80/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": str(hp)}], ports
    # a port that is not published: one line, podman's status
    r = k("port", "web", "99")
    assert r.returncode == 125 and "container web: no published port 99" in one_line(r.stderr)
    # a second -P container never gets the same host port
    r = k("run", "-d", "--name", "web2", "--net", "kapsel", "--expose", "80", "-P", "busybox",
          *SERVE)
    assert r.returncode == 0, r.stderr
    hp2 = host_port(k, "web2", "80/tcp")
    assert hp2 != hp and lo <= hp2 <= hi
    assert wait_served(k, hp2)
    for c in ("web", "web2"):
        assert k("stop", "-t", "1", c).returncode == 0
    assert k.leases() == {} and k.nft_elements() == []


def test_publish_all_skips_ports_given_with_p(k):
    # an exposed port that -p publishes already gets no second host port (podman)
    r = k("run", "-d", "--name", "one", "--net", "kapsel", "--expose", "80", "-P", "-p",
          "8081:80", "busybox", *SERVE)
    assert r.returncode == 0, r.stderr
    assert port_lines(k, "one") == ["80/tcp -> 0.0.0.0:8081"]


def test_publish_all_port_kept_across_restart(k):
    r = k("run", "-d", "--name", "rp", "--net", "kapsel", "--expose", "80", "-P", "busybox",
          *SERVE)
    assert r.returncode == 0, r.stderr
    hp = host_port(k, "rp", "80")
    assert k("restart", "-t", "0", "rp").returncode == 0
    assert host_port(k, "rp", "80") == hp
    assert wait_served(k, hp)


def test_publish_all_avoids_taken_ports_and_runs_out(k):
    # A narrow ephemeral range (per network namespace: the test's own) of three ports: one
    # held by a host process, one published by another container, one left.
    assert k.sh("sh", "-c", "echo 40100 40102 > /proc/sys/net/ipv4/ip_local_port_range"
                ).returncode == 0
    holder = subprocess.Popen(["nsenter", f"--net=/run/netns/{k.ns}", "busybox", "nc", "-l",
                               "-p", "40100"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        r = k("run", "-d", "--name", "a", "--net", "kapsel", "-p", "40101:80", "busybox", *SERVE)
        assert r.returncode == 0, r.stderr
        r = k("run", "-d", "--name", "b", "--net", "kapsel", "--expose", "80", "-P", "busybox",
              *SERVE)
        assert r.returncode == 0, r.stderr
        assert port_lines(k, "b") == ["80/tcp -> 0.0.0.0:40102"]
        # nothing left: one line naming the range, nothing created
        r = k("run", "-d", "--name", "c", "--net", "kapsel", "--expose", "80", "-P", "busybox",
              *SERVE)
        assert r.returncode == 125
        assert "-P 80: no free host port in 40100-40102" in one_line(r.stderr), r.stderr
        assert not os.path.exists(os.path.join(k.store, "containers", "c"))
        assert sorted(v["container"] for v in k.leases().values()) == ["a", "b"]
    finally:
        holder.kill()
        holder.wait()


def exposed_image(k, tmp_path, ports):
    """busybox again, its config given ExposedPorts, loaded as localhost/exposed:1."""
    tar = tmp_path / "bb.tar"
    assert k("save", "-o", tar, "busybox").returncode == 0
    lay = tmp_path / "layout"
    with tarfile.open(tar) as t:
        t.extractall(lay)
    blobs = lay / "blobs" / "sha256"

    def read(d):
        return json.loads((blobs / d.split(":")[1]).read_bytes())

    def write(obj):
        data = json.dumps(obj).encode()
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        return f"sha256:{h}", len(data)

    index = json.loads((lay / "index.json").read_text())
    desc = index["manifests"][0]
    man = read(desc["digest"])
    cfg = read(man["config"]["digest"])
    cfg.setdefault("config", {})["ExposedPorts"] = {p: {} for p in ports}
    man["config"]["digest"], man["config"]["size"] = write(cfg)
    desc["digest"], desc["size"] = write(man)
    desc["annotations"] = {"org.opencontainers.image.ref.name": "localhost/exposed:1"}
    index["manifests"] = [desc]
    (lay / "index.json").write_text(json.dumps(index))
    r = k("load", lay)
    assert r.returncode == 0, r.stderr
    return "localhost/exposed:1"


def test_publish_all_image_exposed_ports(k, tmp_path):
    img = exposed_image(k, tmp_path, ["80/tcp", "5353/udp", "9/sctp"])
    # without -P nothing is published
    r = k("run", "-d", "--name", "quiet", "--net", "kapsel", img, *SERVE)
    assert r.returncode == 0, r.stderr
    assert port_lines(k, "quiet") == []
    r = k("run", "-d", "--name", "loud", "--net", "kapsel", "-P", img, *SERVE)
    assert r.returncode == 0, r.stderr
    lines = port_lines(k, "loud")
    # sctp cannot be published: left out
    assert sorted(ln.split(" ")[0] for ln in lines) == ["5353/udp", "80/tcp"], lines
    assert wait_served(k, host_port(k, "loud", "80"))


@pytest.mark.parametrize("args,msg", [
    (["--net", "kapsel", "--expose", "0", "-P"], "--expose 0: expected PORT[/tcp|/udp]"),
    (["--net", "kapsel", "--expose", "70000"], "--expose 70000: expected PORT[/tcp|/udp]"),
    (["--net", "kapsel", "--expose", "80/sctp"], "--expose 80/sctp: expected PORT[/tcp|/udp]"),
    (["--net", "kapsel", "--expose", "http"], "--expose http: expected PORT[/tcp|/udp]"),
    (["--expose", "80", "-P"], "-P needs --net NETWORK"),
    (["--net", "host", "-P"], "-P needs --net NETWORK"),
])
def test_publish_all_bad_input(k, args, msg):
    r = k("run", "--rm", "--name", "bad", *args, "busybox", "true")
    assert r.returncode == 125, (r.returncode, r.stderr)
    assert msg in one_line(r.stderr), r.stderr
    assert not os.path.exists(os.path.join(k.store, "containers", "bad"))
    assert k.leases() == {} and k.no_veths()


def test_port_errors(k):
    r = k("port", "nosuch")
    assert r.returncode == 125 and "no such container nosuch" in one_line(r.stderr)
    assert k("run", "-d", "--name", "plain", "busybox", "sleep", "100").returncode == 0
    assert port_lines(k, "plain") == []
    r = k("port", "plain", "80/sctp")
    assert r.returncode == 125 and "port 80/sctp: expected PORT[/tcp|/udp]" in one_line(r.stderr)


# ---- --net container:NAME, --net ns:PATH ----

def test_net_container_joins_running_container(k):
    # a container with its own lo only: the joiner reaches its server on 127.0.0.1
    r = k("run", "-d", "--name", "t1", "busybox", "nc", "-ll", "-p", "7000", "-e", "echo",
          "from-t1")
    assert r.returncode == 0, r.stderr
    time.sleep(0.3)
    r = k("run", "--rm", "--net", "container:t1", "busybox", "sh", "-c",
          "nc 127.0.0.1 7000 </dev/null; readlink /proc/self/ns/net")
    assert r.returncode == 0 and "from-t1" in r.stdout, (r.stdout, r.stderr)
    own = k("exec", "t1", "readlink", "/proc/self/ns/net").stdout.strip()
    assert own and own in r.stdout
    # one on a network: its address, and its hosts file, are the joiner's too
    r = k("run", "-d", "--name", "t2", "--net", "kapsel", "--ip", "10.88.0.40", "busybox",
          "sleep", "100")
    assert r.returncode == 0, r.stderr
    r = k("run", "--rm", "--net", "container:t2", "busybox", "sh", "-c",
          "ip -o -4 addr show eth0; cat /etc/hosts")
    assert r.returncode == 0, r.stderr
    assert "inet 10.88.0.40/16" in r.stdout and re.search(r"10\.88\.0\.40\s+t2", r.stdout), \
        r.stdout
    # the joiner holds no lease of its own, and leaves t2's alone
    assert [v["container"] for v in k.leases().values()] == ["t2"]


def test_net_container_refused(k):
    r = k("run", "--rm", "--name", "j", "--net", "container:nosuch", "busybox", "true")
    assert r.returncode == 125
    assert "--net container:nosuch: no such container nosuch" in one_line(r.stderr)
    assert k("run", "--name", "done", "busybox", "true").returncode == 0
    r = k("run", "--rm", "--name", "j", "--net", "container:done", "busybox", "true")
    assert r.returncode == 125
    assert "--net container:done: container done is not running" in one_line(r.stderr)
    assert k("run", "-d", "--name", "up", "busybox", "sleep", "100").returncode == 0
    for args, msg in ((["-p", "8080:80"], "-p needs --net NETWORK"),
                      (["--ip", "10.88.0.9"], "--ip needs --net NETWORK")):
        r = k("run", "--rm", "--name", "j", "--net", "container:up", *args, "busybox", "true")
        assert r.returncode == 125 and msg in one_line(r.stderr), r.stderr
    r = k("run", "--rm", "--name", "j", "--net", "container:", "busybox", "true")
    assert r.returncode == 125 and "expected container:NAME or ns:PATH" in one_line(r.stderr)
    assert not os.path.exists(os.path.join(k.store, "containers", "j"))


def test_net_ns_path(k, tmp_path):
    # the test's own namespace, bound at /run/netns/NAME, with a veth pair of the test's
    assert k.sh("ip", "link", "add", "kt2a", "type", "veth", "peer", "name", "kt2b"
                ).returncode == 0
    r = k("run", "--rm", "--net", f"ns:/run/netns/{k.ns}", "busybox", "ip", "-o", "link")
    assert r.returncode == 0, r.stderr
    assert "kt2a" in r.stdout and "kt2b" in r.stdout
    plain = tmp_path / "plain"
    plain.write_text("")
    for spec, msg in ((f"ns:{plain}", f"--net ns:{plain}: not a network namespace"),
                      ("ns:/proc/self/ns/uts", "--net ns:/proc/self/ns/uts: not a network "
                                               "namespace"),
                      ("ns:relative", "--net ns:relative: the path must be absolute"),
                      (f"ns:{tmp_path}/missing", f"--net ns:{tmp_path}/missing: No such file")):
        r = k("run", "--rm", "--name", "n", "--net", spec, "busybox", "true")
        assert r.returncode == 125 and msg in one_line(r.stderr), (spec, r.stderr)
    assert not os.path.exists(os.path.join(k.store, "containers", "n"))


# ---- IPv6: dual-stack networks ----

ULA = "fd6b:6170:7365"


def nft6_port_elements(k):
    r = k.sh("nft", "-j", "list", "map", "ip6", "kapsel", "ports")
    if r.returncode != 0:
        return []
    return [e for o in json.loads(r.stdout)["nftables"] for e in (o.get("map") or {}).get(
        "elem", [])]


def nft6_set(k, name):
    r = k.sh("nft", "-j", "list", "set", "ip6", "kapsel", name)
    if r.returncode != 0:
        return []
    return [e for o in json.loads(r.stdout)["nftables"] for e in (o.get("set") or {}).get(
        "elem", [])]


def test_ipv6_dual_stack(k):
    r = k("network", "create", "--ipv6", "--subnet", "10.61.0.0/24", "six")
    assert r.returncode == 0, r.stderr
    net = json.loads(k("network", "inspect", "six").stdout)[0]
    assert net["ipv6_enabled"] is True
    assert net["subnets"][1] == {"subnet": f"{ULA}:1::/64", "gateway": f"{ULA}:1::1"}, net
    ls = {n["name"]: n for n in json.loads(k("network", "ls", "--format", "json").stdout)}
    assert ls["six"]["subnets"][1]["subnet"] == f"{ULA}:1::/64"
    assert ls["kapsel"]["ipv6_enabled"] is False
    r = k("run", "-d", "--name", "srv6", "--net", "six", "-p", "8090:80", "busybox", *SERVE)
    assert r.returncode == 0, r.stderr
    ins = json.loads(k("inspect", "srv6").stdout)[0]["NetworkSettings"]["Networks"]["six"]
    addr = ins["GlobalIPv6Address"]
    assert addr == f"{ULA}:1::2" and ins["GlobalIPv6PrefixLen"] == 64, ins
    assert ins["IPv6Gateway"] == f"{ULA}:1::1"
    # another container: its address, default route, ping6 and TCP over IPv6
    r = k("run", "--rm", "--cap-add", "NET_RAW", "--net", "six", "busybox", "sh", "-c",
          f"ip -6 -o addr show eth0 scope global; ip -6 route show default; "
          f"ping6 -c1 -W3 {addr} && nc {addr} 80 </dev/null; cat /etc/hosts")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"inet6 {ULA}:1::3/64" in r.stdout
    assert f"default via {ULA}:1::1" in r.stdout
    assert "1 packets received" in r.stdout and "served" in r.stdout, r.stdout
    assert re.search(rf"{ULA}:1::3\s", r.stdout), r.stdout
    # the published port from the test's "host", over the bridge's IPv6 address
    assert wait_served(k, 8090, f"{ULA}:1::1"), "published port over IPv6 does not answer"
    assert wait_served(k, 8090, "127.0.0.1")
    # [::1] is not published (no route_localnet for IPv6): refused at once, not hung
    t = time.time()
    assert "served" not in fetch(k, 8090, "::1")
    assert time.time() - t < 2.5
    assert len(nft6_port_elements(k)) == 1
    assert len(nft6_set(k, "masq")) == 1
    assert k("stop", "-t", "1", "srv6").returncode == 0
    assert nft6_port_elements(k) == [] and k.nft_elements() == []
    assert k("network", "rm", "six").returncode == 0
    assert nft6_set(k, "masq") == []


def test_ipv6_internal_has_no_route_out(k):
    r = k("network", "create", "--internal", "--ipv6", "--subnet", "10.62.0.0/24", "in6")
    assert r.returncode == 0, r.stderr
    r = k("run", "--rm", "--net", "in6", "busybox", "sh", "-c",
          "ip -6 route show default; ip -6 -o addr show eth0 scope global")
    assert r.returncode == 0, r.stderr
    assert "default" not in r.stdout and f"{ULA}:1::2/64" in r.stdout, r.stdout
    assert len(nft6_set(k, "internal")) == 1 and nft6_set(k, "masq") == []


def test_ipv6_default_subnets_avoid_clashes(k):
    r = k("network", "create", "--subnet", "10.91.0.0/24", "--subnet", "fd00:91::/64", "given")
    assert r.returncode == 0, r.stderr
    assert json.loads(k("network", "inspect", "given").stdout)[0]["subnets"][1] == {
        "subnet": "fd00:91::/64", "gateway": "fd00:91::1"}
    # a route of the test's "host" on the third /64 of kapsel's prefix
    for cmd in (["ip", "link", "add", "kt6a", "type", "veth", "peer", "name", "kt6b"],
                ["ip", "link", "set", "kt6a", "up"], ["ip", "link", "set", "kt6b", "up"],
                ["ip", "-6", "route", "add", f"{ULA}:3::/64", "dev", "kt6a"]):
        assert k.sh(*cmd).returncode == 0, cmd
    got = []
    for name in ("a6", "b6", "c6"):
        r = k("network", "create", "--ipv6", name)
        assert r.returncode == 0, r.stderr
        got.append(json.loads(k("network", "inspect", name).stdout)[0]["subnets"][1]["subnet"])
    assert got == [f"{ULA}:1::/64", f"{ULA}:2::/64", f"{ULA}:4::/64"], got


@pytest.mark.parametrize("args,msg", [
    (["--subnet", "fd00::/200"], "--subnet \"fd00::/200\": expected an IPv6 CIDR"),
    (["--subnet", "fd00::zz/64"], "--subnet \"fd00::zz/64\": not an IPv6 CIDR"),
    (["--subnet", "fd00::1/64"], "--subnet \"fd00::1/64\": host bits are set"),
    (["--subnet", "fd00::/40"], "the IPv6 prefix must be between /48 and /120"),
    (["--subnet", "fd00:1::/64", "--subnet", "fd00:2::/64"], "one IPv6 subnet only"),
    (["--subnet", "10.92.0.0/16", "--subnet", "fd00:92::/120"],
     "--subnet fd00:92::/120: fewer addresses than the IPv4 subnet (/16)"),
    (["--subnet", "fd00:77::/64"], "--subnet fd00:77::/64 overlaps network first6"),
    (["--subnet", "fd00:77:0:0:1::/80"], "overlaps network first6"),
])
def test_ipv6_bad_input(k, args, msg):
    r = k("network", "create", "--subnet", "10.77.0.0/24", "--subnet", "fd00:77::/64", "first6")
    assert r.returncode == 0, r.stderr
    before = sorted(os.listdir(os.path.join(k.store, "networks")))
    r = k("network", "create", *args, "bad6")
    assert r.returncode != 0
    assert msg in one_line(r.stderr), r.stderr
    assert sorted(os.listdir(os.path.join(k.store, "networks"))) == before


# ---- rootless -p through pasta ----

ROOTLESS_SCENARIO = r"""
set -u
# The test's "host": a namespace of its own, lo up, and a veth with a default route that
# leads nowhere (pasta wants an external interface to copy its addresses from).
ip link set lo up
ip link add kt-ext type veth peer name kt-peer
ip addr add 10.0.2.15/24 dev kt-ext
ip link set kt-ext up; ip link set kt-peer up
ip route add default via 10.0.2.2
# /dev/net/tun is root-only on some machines (Debian's udev makes it 0666): a node of our own,
# in this mount namespace only.
if ! runuser -u "$USR" -- test -w /dev/net/tun; then
    mount -t tmpfs tmpfs "$SCRATCH" && mknod -m 666 "$SCRATCH/tun" c 10 200 &&
        mount --bind "$SCRATCH/tun" /dev/net/tun
fi
exec runuser -u "$USR" -- env HOME="$HOME_DIR" XDG_RUNTIME_DIR="$HOME_DIR/run" \
    PATH=/usr/bin:/bin sh -c "$STEPS"
"""

ROOTLESS_STEPS = r"""
K=$KAPSEL
$K run -d --name web -p 18080:80 busybox nc -ll -p 80 -e echo served-rootless || exit 10
$K run -d --name udp -p 127.0.0.1:18053:53/udp busybox sleep 100 || exit 11
i=0; until out=$(busybox nc -w 2 127.0.0.1 18080 </dev/null) && [ -n "$out" ]; do
    i=$((i+1)); [ $i -gt 25 ] && exit 12; sleep 0.2; done
echo "GOT:$out"
echo "PORTS:$($K port web | tr '\n' ';')"
D=$HOME/.local/share/kapsel/containers
# a restart starts pasta again, with the same port
$K restart -t 0 web >/dev/null || exit 14
i=0; until out=$(busybox nc -w 2 127.0.0.1 18080 </dev/null) && [ -n "$out" ]; do
    i=$((i+1)); [ $i -gt 25 ] && exit 15; sleep 0.2; done
echo "AGAIN:$out"
PID=$(cat $D/web/pasta.pid); echo "PASTA:$(cat /proc/$PID/comm)"
# a host port a process of the user's holds: pasta refuses it, nothing is left
busybox nc -l -p 18081 & HOLD=$!; sleep 0.3
$K run -d --name clash -p 18081:80 busybox true; echo "CLASH:$?"
kill $HOLD
[ -e $D/clash ] && echo "CLASH-LEFT"
# what needs a network of root's, and -P, are refused
$K run --rm --net kapsel busybox true 2>&1 | sed 's/^/NETERR:/'
$K run --rm -P busybox true 2>&1 | sed 's/^/PERR:/'
$K rm -f web udp >/dev/null || exit 13
sleep 0.5
# gone (a zombie waits for the monitor that inherited it, and is gone too)
grep -q -e pasta -e passt /proc/$PID/comm 2>/dev/null &&
    ! grep -q "^State:.*Z" /proc/$PID/status && echo "PASTA-LEFT"
[ -e $D/web ] && echo "DIR-LEFT"
echo DONE
"""


def test_rootless_publish_through_pasta(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to create the test user and the namespaces")
    if not shutil.which("pasta"):
        pytest.skip("needs pasta (Debian's passt; scripts/setup.sh installs it)")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("needs /dev/net/tun (the tun driver) for pasta")
    from test_rootless import USER
    import pwd
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", USER], check=True)
        pw = pwd.getpwnam(USER)
    home = f"/tmp/kapsel-rl-net-{os.getpid()}"
    os.mkdir(home, 0o755)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    scratch = tmp_path / "tun"
    scratch.mkdir()
    env = dict(os.environ, USR=USER, HOME_DIR=home, SCRATCH=str(scratch), STEPS=ROOTLESS_STEPS,
               KAPSEL=KAPSEL)
    try:
        p = subprocess.run(["unshare", "-n", "-m", "--propagation", "private", "sh", "-c",
                            ROOTLESS_SCENARIO], env=env, capture_output=True, text=True,
                           timeout=120)
        out = p.stdout
        assert "DONE" in out, (p.returncode, out, p.stderr)
        assert "GOT:served-rootless" in out and "AGAIN:served-rootless" in out, out
        assert "PORTS:80/tcp -> 0.0.0.0:18080;" in out, out
        assert re.search(r"PASTA:(pasta|passt)", out), out
        assert "CLASH:125" in out and "CLASH-LEFT" not in out, (out, p.stderr)
        assert "18081" in p.stderr, p.stderr
        assert "NETERR:kapsel: --net kapsel: a rootless container has no bridge network" in out
        assert "PERR:kapsel: -P needs --net NETWORK" in out
        assert "PASTA-LEFT" not in out and "DIR-LEFT" not in out, out
    finally:
        subprocess.run(["runuser", "-u", USER, "--", "env", f"HOME={home}",
                        f"XDG_RUNTIME_DIR={home}/run", "sh", "-c",
                        f"for c in web udp clash; do {KAPSEL} rm -f $c; done"],
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
