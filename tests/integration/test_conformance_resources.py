"""linux.resources.memory.kernelTCP, linux.resources.network and linux.resources.rdma
(runtime-spec config-linux.md): applied where the controller exists, refused with one line
naming the controller where it does not, never ignored. The live tests use whatever this
machine has; the other layouts (pure cgroup2, a hybrid cgroup2 with rdma) are covered against
the fake cgroupfs in tests/unit/test-cgroup-v1.c and test-cgroup-v2.c."""
import os

import pytest

pytestmark = pytest.mark.root

CG = "/sys/fs/cgroup"


def v1_mount(controller):
    """The mount point of the v1 hierarchy carrying controller, or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            a, b = line.split(" - ", 1)
            fs = b.split()
            if fs[0] == "cgroup" and controller in fs[2].split(","):
                return a.split()[4]
    return None


def v2_mount():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            a, b = line.split(" - ", 1)
            if b.split()[0] == "cgroup2":
                return a.split()[4]
    return None


def v2_has(controller):
    m = v2_mount()
    if not m:
        return False
    with open(os.path.join(m, "cgroup.controllers")) as f:
        return controller in f.read().split()


def resources(res):
    def edit(c):
        c["linux"]["resources"] = res
    return edit


def one_line_error(r, *parts):
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    for p in parts:
        assert p in lines[0], r.stderr


def read(path):
    with open(path) as f:
        return f.read().strip()


KTCP = "memory.kmem.tcp.limit_in_bytes"


def test_kernel_tcp_applied(kap, make_bundle, cid):
    mem = v1_mount("memory")
    if not mem:
        pytest.skip("no cgroup v1 memory hierarchy on this machine (kernelTCP is v1 only)")
    if not os.path.exists(os.path.join(mem, KTCP)):
        pytest.skip(f"this kernel has no {KTCP} ({mem})")
    b = make_bundle(["sleep", "1000"], resources({"memory": {"kernelTCP": 16 << 20}}))
    r = kap("create", "--bundle", b, cid)
    assert r.returncode == 0, r.stderr
    assert read(os.path.join(mem, "kapsel", cid, KTCP)) == str(16 << 20)
    kap("delete", "--force", cid, check=True)


def test_kernel_tcp_refused_without_the_file(kap, make_bundle, cid):
    mem = v1_mount("memory")
    if mem and os.path.exists(os.path.join(mem, KTCP)):
        pytest.skip(f"{mem}/{KTCP} exists here; the refusal is covered by the unit tests")
    b = make_bundle(["true"], resources({"memory": {"kernelTCP": 16 << 20}}))
    r = kap("create", "--bundle", b, cid)
    one_line_error(r, "linux.resources.memory.kernelTCP")
    assert not os.path.exists(os.path.join(kap.root, cid))


NET = [("net_cls", {"classID": 0x100001}, "net_cls.classid", "1048577",
        "linux.resources.network.classID"),
       ("net_prio", {"priorities": [{"name": "lo", "priority": 5}]}, "net_prio.ifpriomap",
        "lo 5", "linux.resources.network.priorities")]


@pytest.mark.parametrize("ctrl,net,file,want,field", NET, ids=[n[0] for n in NET])
def test_network_applied(kap, make_bundle, cid, ctrl, net, file, want, field):
    m = v1_mount(ctrl)
    if not m:
        pytest.skip(f"{ctrl} is not mounted on this machine (hierarchy 0 in /proc/cgroups)")
    b = make_bundle(["sleep", "1000"], resources({"network": net}))
    r = kap("create", "--bundle", b, cid)
    assert r.returncode == 0, r.stderr
    got = read(os.path.join(m, "kapsel", cid, file))
    assert want in got.splitlines() or got == want, got
    kap("delete", "--force", cid, check=True)


@pytest.mark.parametrize("ctrl,net,file,want,field", NET, ids=[n[0] for n in NET])
def test_network_refused_without_controller(kap, make_bundle, cid, ctrl, net, file, want,
                                            field):
    if v1_mount(ctrl):
        pytest.skip(f"{ctrl} is mounted here; the refusal is covered by the unit tests")
    b = make_bundle(["true"], resources({"network": net}))
    r = kap("create", "--bundle", b, cid)
    if v2_mount() == CG:
        one_line_error(r, field, "not supported on cgroup v2")
    else:
        one_line_error(r, field, f"{ctrl} controller not available")
    assert not os.path.exists(os.path.join(kap.root, cid))
    assert not os.path.exists(os.path.join(CG, "memory", "kapsel", cid))


RDMA = {"mlx5_0": {"hcaHandles": 3, "hcaObjects": 100}}


def rdma_dir():
    m = v1_mount("rdma")
    if m:
        return m
    return v2_mount() if v2_has("rdma") else None


def test_rdma_applied(kap, make_bundle, cid):
    m = rdma_dir()
    if not m:
        pytest.skip("no rdma controller on this machine (not in /proc/cgroups, not in "
                    "cgroup.controllers)")
    b = make_bundle(["sleep", "1000"], resources({"rdma": RDMA}))
    r = kap("create", "--bundle", b, cid)
    # rdma.max only accepts devices that exist; either applied or refused naming the file
    if r.returncode == 0:
        assert "mlx5_0" in read(os.path.join(m, "kapsel", cid, "rdma.max"))
        kap("delete", "--force", cid, check=True)
    else:
        one_line_error(r, "rdma.max")


def test_rdma_refused_without_controller(kap, make_bundle, cid):
    if rdma_dir():
        pytest.skip("an rdma controller exists here; the refusal is covered by the unit tests")
    b = make_bundle(["true"], resources({"rdma": RDMA}))
    r = kap("create", "--bundle", b, cid)
    one_line_error(r, "linux.resources.rdma", "rdma controller not available")
    assert not os.path.exists(os.path.join(kap.root, cid))


@pytest.mark.parametrize("res,part", [
    ({"rdma": {"mlx5_0": {}}}, "linux.resources.rdma.mlx5_0: neither hcaHandles nor"),
    ({"rdma": {"bad dev": {"hcaHandles": 1}}}, 'linux.resources.rdma.bad dev: invalid name'),
    ({"rdma": {"mlx5_0": {"hcaHandles": -1}}}, "linux.resources.rdma.mlx5_0.hcaHandles"),
    ({"network": {"priorities": [{"name": "eth0 1\nlo", "priority": 1}]}},
     "linux.resources.network.priorities[0].name: invalid name"),
    ({"network": {"priorities": [{"name": "eth0"}]}},
     "linux.resources.network.priorities[0]"),
    ({"network": {"classID": "x"}}, "linux.resources.network.classID"),
    ({"memory": {"kernelTCP": "x"}}, "linux.resources.memory.kernelTCP"),
])
def test_bad_values_refused(kap, make_bundle, cid, res, part):
    r = kap("create", "--bundle", make_bundle(["true"], resources(res)), cid)
    one_line_error(r, part)
    assert not os.path.exists(os.path.join(kap.root, cid))
