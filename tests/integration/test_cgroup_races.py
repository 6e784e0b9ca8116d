"""cgroup cleanup under concurrency and SIGKILL: shared parents, parents removed under a create,
a create killed at a random moment (issue 10, "Concurrency and cleanup bugs").

Every parent cgroup here has a name unique to the test (/kapsel-race-<hex>), so the tests
never touch a cgroup kapsel did not create, and other container workloads on the machine do
not disturb them."""
import os
import random
import signal
import subprocess
import threading
import time
import uuid

import pytest

pytestmark = pytest.mark.root

CG = "/sys/fs/cgroup"


def hierarchies():
    """Every mounted cgroup hierarchy below /sys/fs/cgroup (v1 ones and cgroup2)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            a, b = line.split(" - ", 1)
            mnt, fstype = a.split()[4], b.split()[0]
            if fstype in ("cgroup", "cgroup2") and (mnt == CG or mnt.startswith(CG + "/")):
                out.append(mnt)
    return out


def cgroups_named(rel):
    """The hierarchies in which the cgroup rel ("/kapsel-race-x/a") exists."""
    return [h for h in hierarchies() if os.path.isdir(h + rel)]


@pytest.fixture
def parent(kap):
    """A parent cgroup name no one else uses; removed (if kapsel left it, empty) after the
    containers are gone (kap's teardown runs first)."""
    p = "/kapsel-race-" + uuid.uuid4().hex[:10]
    yield p
    for h in hierarchies():
        d = h + p
        if os.path.isdir(d):
            for c in os.listdir(d):
                if os.path.isdir(os.path.join(d, c)):
                    try:
                        os.rmdir(os.path.join(d, c))
                    except OSError:
                        pass
            try:
                os.rmdir(d)
            except OSError:
                pass


def with_path(path):
    def edit(c):
        c["linux"]["cgroupsPath"] = path
    return edit


def procs_in(rel):
    """Pids whose cgroup (in any hierarchy) is rel or below it."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for l in lines:
            p = l.split(":", 2)[2]
            if p == rel or p.startswith(rel + "/"):
                found.append(int(pid))
                break
    return found


@pytest.mark.parametrize("first", ["creator", "sharer"])
def test_shared_parent_delete_in_both_orders(kap, make_bundle, parent, first):
    # a made the parent, b only uses it; deleting a while b runs used to fail with
    # "rmdir <parent>: Device or resource busy" and keep a.
    a, b = "a-" + uuid.uuid4().hex[:8], "b-" + uuid.uuid4().hex[:8]
    assert cgroups_named(parent) == []
    kap("run", "-d", "--bundle", make_bundle(["sleep", "1000"], with_path(f"{parent}/{a}")), a,
        check=True)
    made = cgroups_named(parent)
    assert made, "the first container made the parent"
    kap("run", "-d", "--bundle", make_bundle(["sleep", "1000"], with_path(f"{parent}/{b}")), b,
        check=True)
    order = [a, b] if first == "creator" else [b, a]
    r = kap("delete", "--force", order[0])
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    assert not os.path.exists(os.path.join(kap.root, order[0]))
    assert cgroups_named(f"{parent}/{order[0]}") == []
    # the parent still holds the other container
    assert cgroups_named(parent) == made
    assert cgroups_named(f"{parent}/{order[1]}") == made
    r = kap("delete", "--force", order[1])
    assert r.returncode == 0, r.stderr
    assert cgroups_named(f"{parent}/{order[1]}") == []
    if first == "sharer":
        # the creator went last: the parent it made is empty now and goes with it
        assert cgroups_named(parent) == []
    else:
        # nobody left who made it; it is empty (the fixture removes it)
        for h in cgroups_named(parent):
            assert [c for c in os.listdir(h + parent)
                    if os.path.isdir(os.path.join(h + parent, c))] == []


def test_concurrent_create_delete_with_shared_parent(kap, make_bundle, parent):
    # Whoever made the parent removes it on delete when it is empty; a create walking to its
    # leaf meanwhile used to fail with "mkdir <parent>/<id>: No such file or directory".
    failures = []

    def loop(t):
        for i in range(50):
            cid = f"r{t}-{i}"
            r = kap("run", "--bundle", make_bundle(["true"], with_path(f"{parent}/{cid}")), cid)
            if r.returncode != 0:
                failures.append((cid, r.stderr))

    threads = [threading.Thread(target=loop, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert os.listdir(kap.root) == []
    for h in cgroups_named(parent):
        assert [c for c in os.listdir(h + parent) if os.path.isdir(os.path.join(h + parent, c))] \
            == []


def mounts_mentioning(*texts):
    with open("/proc/self/mountinfo") as f:
        return [l for l in f if any(t in l for t in texts)]


def test_sigkill_create_at_random_times(kap, make_bundle, kroot):
    # Not only the named fault points: SIGKILL 0-40 ms into `create`, 20 times; delete --force
    # leaves no process, mount, cgroup or state of the id.
    rnd = random.Random(os.environ.get("KAPSEL_TEST_SEED", "kill"))
    tag = uuid.uuid4().hex[:6]
    for n in range(20):
        cid = f"kill{tag}-{n}"
        bundle = make_bundle(["sleep", "1000"])
        p = subprocess.Popen([kap.binary, "--root", kroot, "create", "--bundle", bundle, cid],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0, 0.040))
        p.send_signal(signal.SIGKILL)
        p.wait()
        r = kap("delete", "--force", cid)
        assert r.returncode == 0, (n, r.stderr)
        assert not os.path.exists(os.path.join(kroot, cid)), n
        assert cgroups_named(f"/kapsel/{cid}") == [], n
        assert procs_in(f"/kapsel/{cid}") == [], n
        assert mounts_mentioning(bundle, cid) == [], n
        assert [f for f in os.listdir(kroot) if f.startswith(".kapsel-exe.")] == [], n
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"kill{tag}" not in out
