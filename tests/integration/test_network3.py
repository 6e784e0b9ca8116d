"""Container networking, part three (issue 12): the name responder's AAAA answers on
dual-stack networks (and its IPv6 listener), and `kapsel run --ip6`.

As in test_network.py, every test runs kapsel inside a network namespace the test creates
(test_network's fixtures: `ip netns add` + nsenter); the DNS queries the tests send
themselves go from that namespace to the bridge's gateway addresses, never further."""
import json
import os
import socket
import struct

import pytest

from test_network import k, netns, one_line  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.root]

ULA = "fd6b:6170:7365"

# One DNS query for NAME of QTYPE to SERVER:53 from the test's namespace, the answer as JSON:
# rcode, flags, the answer records' (type, rdata as text). Python's own parsing, so the test
# does not depend on how busybox words an empty answer.
ASK = r"""
import json, socket, struct, sys
server, name, qtype = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in server else socket.AF_INET
q = struct.pack(">HHHHHH", 0x4b50, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
q += struct.pack(">HH", qtype, 1)
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(2)
for _ in range(5):
    s.sendto(q, (server, 53))
    try:
        r = s.recv(600)
        break
    except socket.timeout:
        r = b""
if not r:
    print(json.dumps({"timeout": True}))
    sys.exit(0)
ident, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", r[:12])
off = len(q)
answers = []
for _ in range(an):
    t, c, ttl, ln = struct.unpack(">HHIH", r[off + 2:off + 12])
    data = r[off + 12:off + 12 + ln]
    fam2 = socket.AF_INET6 if t == 28 else socket.AF_INET
    answers.append([t, socket.inet_ntop(fam2, data)])
    off += 12 + ln
print(json.dumps({"id": ident, "rcode": flags & 15, "aa": bool(flags & 0x400),
                  "answers": answers, "len": len(r), "end": off}))
"""


def ask(k, server, name, qtype):
    r = k.sh("/usr/bin/python3", "-c", ASK, server, name, str(qtype))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert not out.get("timeout"), f"no answer from {server} for {name}/{qtype}"
    assert out["id"] == 0x4b50 and out["len"] == out["end"], out
    return out


def lease_of(k, container):
    return next(v for v in k.leases().values() if v["container"] == container)


def ipv6_of(k, container, network):
    ins = json.loads(k("inspect", container).stdout)[0]
    return ins["NetworkSettings"]["Networks"][network]["GlobalIPv6Address"]


def ipv4_of(k, container, network):
    ins = json.loads(k("inspect", container).stdout)[0]
    return ins["NetworkSettings"]["Networks"][network]["IPAddress"]


def nothing_left(k, name, leases_before):
    assert not os.path.exists(os.path.join(k.store, "containers", name))
    assert k.leases() == leases_before


# ---- AAAA answers ----

def test_aaaa_on_dual_stack_network(k):
    r = k("network", "create", "--ipv6", "--subnet", "10.63.0.0/24", "d6")
    assert r.returncode == 0, r.stderr
    for name, extra in (("alpha", ["--network-alias", "db"]), ("beta", [])):
        r = k("run", "-d", "--name", name, "--net", "d6", *extra, "busybox", "sleep", "1000")
        assert r.returncode == 0, r.stderr
    a6, b6 = ipv6_of(k, "alpha", "d6"), ipv6_of(k, "beta", "d6")
    assert (a6, b6) == (f"{ULA}:1::2", f"{ULA}:1::3")
    # the lease records the IPv6 address (what the responder reads)
    assert lease_of(k, "alpha")["ip6"] == a6
    # AAAA from both listeners: the IPv4 gateway and the IPv6 one
    for server in ("10.63.0.1", f"{ULA}:1::1"):
        for name, want in (("alpha", a6), ("DB", a6), ("beta", b6)):
            out = ask(k, server, name, 28)
            assert out["rcode"] == 0 and out["aa"], (server, name, out)
            assert out["answers"] == [[28, want]], (server, name, out)
        out = ask(k, server, "alpha", 1)
        assert out["answers"] == [[1, "10.63.0.2"]], (server, out)
        # an unknown name is still refused (the resolver goes on upstream)
        assert ask(k, server, "nosuch", 28)["rcode"] == 5
        # a known name, a type it has no record of (MX): NODATA
        out = ask(k, server, "alpha", 15)
        assert out["rcode"] == 0 and out["answers"] == [], out
    # the two containers resolve each other's names to IPv6 and reach each other by name
    for me, other, want in (("alpha", "beta", b6), ("beta", "alpha", a6)):
        r = k("exec", me, "nslookup", "-type=AAAA", other)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert f"Address: {want}" in r.stdout, r.stdout
    r = k("run", "--rm", "--cap-add", "NET_RAW", "--net", "d6", "busybox", "ping6", "-c1",
          "-W3", "alpha")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"PING alpha ({a6})" in r.stdout and "1 packets received" in r.stdout, r.stdout
    # a container asks the IPv6 listener itself
    r = k("exec", "beta", "nslookup", "-type=AAAA", "alpha", f"{ULA}:1::1")
    assert f"Address: {a6}" in r.stdout, (r.stdout, r.stderr)


def test_aaaa_on_ipv4_only_network_is_nodata(k):
    r = k("network", "create", "--subnet", "10.64.0.0/24", "v4only")
    assert r.returncode == 0, r.stderr
    r = k("run", "-d", "--name", "gamma", "--net", "v4only", "busybox", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    assert "ip6" not in lease_of(k, "gamma")
    # NOERROR without records (RFC 2308 NODATA, as aardvark-dns): not REFUSED, not NXDOMAIN
    out = ask(k, "10.64.0.1", "gamma", 28)
    assert out["rcode"] == 0 and out["aa"] and out["answers"] == [], out
    assert ask(k, "10.64.0.1", "gamma", 1)["answers"] == [[1, "10.64.0.2"]]
    # what a container sees: no IPv6 address, and no error either
    r = k("run", "--rm", "--net", "v4only", "busybox", "nslookup", "-type=AAAA", "gamma")
    assert "REFUSED" not in r.stdout + r.stderr and "NXDOMAIN" not in r.stdout + r.stderr, (
        r.stdout, r.stderr)
    answers = [ln for ln in r.stdout.splitlines()
               if ln.startswith("Address") and not ln.endswith(":53")]
    assert answers == [], r.stdout
    # no IPv6 listener on an IPv4-only network
    r = k.sh("cat", "/proc/net/udp6")
    assert r.returncode == 0
    assert ":0035 " not in r.stdout, r.stdout


# ---- run --ip6 ----

def test_ip6_chosen_address(k):
    r = k("network", "create", "--ipv6", "--subnet", "10.65.0.0/24", "--subnet",
          "fd00:65::/64", "c6")
    assert r.returncode == 0, r.stderr
    r = k("run", "-d", "--name", "srv", "--net", "c6", "--ip6", "fd00:65::beef", "busybox",
          "nc", "-ll", "-p", "80", "-e", "echo", "served6")
    assert r.returncode == 0, r.stderr
    assert ipv6_of(k, "srv", "c6") == "fd00:65::beef"
    assert ipv4_of(k, "srv", "c6") == "10.65.0.2"
    assert lease_of(k, "srv")["ip6"] == "fd00:65::beef"
    assert ask(k, "10.65.0.1", "srv", 28)["answers"] == [[28, "fd00:65::beef"]]
    r = k("run", "--rm", "--net", "c6", "busybox", "sh", "-c",
          "nc -w 3 srv 80 </dev/null; nc -w 3 fd00:65::beef 80 </dev/null")
    assert r.stdout.count("served6") == 2, (r.stdout, r.stderr)
    r = k("exec", "srv", "ip", "-6", "-o", "addr", "show", "eth0", "scope", "global")
    assert "inet6 fd00:65::beef/64" in r.stdout, r.stdout
    # kept across a restart
    assert k("restart", "-t", "0", "srv").returncode == 0
    assert ipv6_of(k, "srv", "c6") == "fd00:65::beef"
    assert lease_of(k, "srv")["ip6"] == "fd00:65::beef"


def test_ip6_keeps_ipam_free_of_duplicates(k):
    r = k("network", "create", "--ipv6", "--subnet", "10.66.0.0/24", "--subnet",
          "fd00:66::/64", "u6")
    assert r.returncode == 0, r.stderr
    # one's --ip6 is the address derived from the next IPv4 address (.3 -> ::3)
    r = k("run", "-d", "--name", "one", "--net", "u6", "--ip6", "fd00:66::3", "busybox",
          "sleep", "1000")
    assert r.returncode == 0, r.stderr
    assert (ipv4_of(k, "one", "u6"), ipv6_of(k, "one", "u6")) == ("10.66.0.2", "fd00:66::3")
    # so the next container skips .3: its derived address would be one's
    r = k("run", "-d", "--name", "two", "--net", "u6", "busybox", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    assert (ipv4_of(k, "two", "u6"), ipv6_of(k, "two", "u6")) == ("10.66.0.4", "fd00:66::4")
    before = k.leases()
    # --ip .3 asks for that derived address: refused, naming it
    r = k("run", "--rm", "--name", "three", "--net", "u6", "--ip", "10.66.0.3", "busybox", "true")
    assert r.returncode == 125
    assert ("--ip 10.66.0.3: its IPv6 address fd00:66::3 is already used by container one"
            in one_line(r.stderr)), r.stderr
    nothing_left(k, "three", before)
    # ... unless it gets an IPv6 address of its own
    r = k("run", "-d", "--name", "three", "--net", "u6", "--ip", "10.66.0.3", "--ip6",
          "fd00:66::33", "busybox", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    assert ipv6_of(k, "three", "u6") == "fd00:66::33"
    # a derived address is taken as well as a chosen one
    for taken, owner in (("fd00:66::4", "two"), ("fd00:66::33", "three")):
        before = k.leases()
        r = k("run", "--rm", "--name", "four", "--net", "u6", "--ip6", taken, "busybox", "true")
        assert r.returncode == 125
        assert f"--ip6 {taken}: already used by container {owner}" in one_line(r.stderr)
        nothing_left(k, "four", before)
    # all of them come back after rm
    for c in ("one", "two", "three"):
        assert k("rm", "-f", c).returncode == 0
    assert k.leases() == {} and k.no_veths()


@pytest.mark.parametrize("net,ip6,msg", [
    ("c6", "fd00:99::5", "--ip6 fd00:99::5: outside network c6 (fd00:67::/64)"),
    ("c6", "fd00:67::", "--ip6 fd00:67::: outside network c6 (fd00:67::/64)"),
    ("c6", "fd00:67::1", "--ip6 fd00:67::1: the gateway of network c6"),
    ("c6", "10.67.0.9", "--ip6 \"10.67.0.9\": not an IPv6 address"),
    ("c6", "fd00:67::zz", "--ip6 \"fd00:67::zz\": not an IPv6 address"),
    ("v4", "fd00:67::5", "--ip6 fd00:67::5: network v4 has no IPv6 subnet"),
    ("kapsel", "fd00:67::5", "--ip6 fd00:67::5: network kapsel has no IPv6 subnet"),
    ("none", "fd00:67::5", "--ip6 needs --net NETWORK"),
    (None, "fd00:67::5", "--ip6 needs --net NETWORK"),
])
def test_ip6_bad_input(k, net, ip6, msg):
    assert k("network", "create", "--ipv6", "--subnet", "10.67.0.0/24", "--subnet",
             "fd00:67::/64", "c6").returncode == 0
    assert k("network", "create", "--subnet", "10.68.0.0/24", "v4").returncode == 0
    netargs = ["--net", net] if net else []
    for mode in ("--rm", "-d"):
        r = k("run", mode, "--name", "bad", *netargs, "--ip6", ip6, "busybox", "true")
        assert r.returncode == 125, (r.returncode, r.stderr)
        assert msg in one_line(r.stderr), r.stderr
        nothing_left(k, "bad", {})
        assert k.no_veths()
