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
        assert "GOT:served-rootless" in out, out
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
